"""Reminders: the table and its rules, the clock that fires them once, and `reminder.due` reaching only their owner's clients."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from assistant.auth import TokenFile
from assistant.config import Config, ConfigError
from assistant.errors import AssistantError
from assistant.reminders import ReminderStore, TooManyReminders
from assistant.store import Store
from tests.assistant.test_auth import open_client
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


@pytest.fixture
def reminder_store(store_url):
    """The reminders table on a fresh database, SQLite and the real PostgreSQL."""
    store = Store(store_url)
    yield ReminderStore(store.engine)
    store.close()


def test_the_store_creates_lists_cancels_and_claims_each_reminder_once(reminder_store):
    """Active reminders list soonest first; another owner cannot cancel one; a claim marks fired, so a second claim finds nothing."""
    store = reminder_store
    now = datetime.now(UTC)
    later = store.create("alice", None, "later", now + timedelta(hours=2), "Europe/Berlin", "reminder", 10)
    soon = store.create("alice", "c1", "soon", now - timedelta(seconds=1), "UTC", "timer", 10)
    store.create("bob", None, "bob's", now - timedelta(seconds=1), "UTC", "reminder", 10)
    assert [r.text for r in store.active("alice")] == ["soon", "later"]
    assert str(store.active("alice")[1].local_due.tzinfo) == "Europe/Berlin"
    assert store.cancel("bob", later.id) is None, "somebody else's reminder is not theirs to cancel"
    assert [r.id for r in store.claim_due(now, ["alice"])] == [soon.id], "only due reminders of the owners asked for"
    assert store.claim_due(now, ["alice"]) == []
    assert store.get("alice", soon.id).fired_at is not None
    assert store.cancel("alice", soon.id) is None, "a fired reminder cannot be cancelled"
    assert store.cancel("alice", later.id).cancelled_at is not None
    assert store.active("alice") == [] and store.next_due(["alice"]) is None
    assert store.next_due(["bob"]) is not None


def test_racing_claimers_fire_a_reminder_once(reminder_store):
    """Eight threads claiming the same 50 due reminders at once fire each exactly once between them."""
    store = reminder_store
    now = datetime.now(UTC)
    for index in range(50):
        store.create("alice", None, f"r{index}", now - timedelta(seconds=1), "UTC", "reminder", 1000)
    claimed: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        for _ in range(5):
            claimed.extend(r.id for r in store.claim_due(datetime.now(UTC), ["alice"], limit=7))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 50 and len(set(claimed)) == 50


def test_the_store_bounds_active_reminders(reminder_store):
    """The (max_active + 1)th waiting reminder is refused; cancelling one makes room."""
    store = reminder_store
    due = datetime.now(UTC) + timedelta(days=1)
    first = store.create("alice", None, "a", due, "UTC", "reminder", 2)
    store.create("alice", None, "b", due, "UTC", "reminder", 2)
    with pytest.raises(TooManyReminders):
        store.create("alice", None, "c", due, "UTC", "reminder", 2)
    store.create("bob", None, "bob's own bound", due, "UTC", "reminder", 2)
    store.cancel("alice", first.id)
    store.create("alice", None, "c", due, "UTC", "reminder", 2)


def test_a_database_made_before_reminders_gains_the_table(tmp_path):
    """Opening a database made before migrations and before reminders (no reminders table, no revision) adds the table and its indexes and keeps the rest."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    conversation = old.create_conversation("alice")
    with old.engine.begin() as conn:
        conn.execute(text("DROP TABLE reminders"))
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("ALTER TABLE turns DROP COLUMN node"))  # added by revision 0002
    old.close()
    store = ReminderStore(Store(url).engine)
    assert "reminders" in inspect(store.engine).get_table_names()
    assert {"ix_reminders_active_due", "ix_reminders_owner"} <= {i["name"] for i in inspect(store.engine).get_indexes("reminders")}
    assert Store(url).conversation_last_seq(conversation) == 0


async def test_the_rules_refuse_past_absurd_empty_and_too_many_reminders(start_server, tmp_path):
    """Past, too far ahead, naive, empty or overlong reminders are bad_request/too_large; past the bound rate_limited; others' not_found."""
    server = await start_server(make_config(tmp_path, reminders={"max_active": 2, "max_days_ahead": 365}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    reminders = server.app.reminders
    now = datetime.now(UTC)
    cases = [
        (now - timedelta(minutes=1), "x", "bad_request"),
        (now + timedelta(days=400), "x", "bad_request"),
        (datetime(9999, 12, 31, tzinfo=UTC), "x", "bad_request"),
        ((now + timedelta(hours=1)).replace(tzinfo=None), "x", "bad_request"),
        (now + timedelta(hours=1), "   ", "bad_request"),
        (now + timedelta(hours=1), "x" * 501, "too_large"),
    ]
    for due, words, code in cases:
        with pytest.raises(AssistantError) as refused:
            await reminders.create("alice", None, words, due, "UTC", now)
        assert refused.value.code == code, (due, words)
    with pytest.raises(AssistantError) as refused:
        await reminders.create("alice", None, "x", now + timedelta(hours=1), "Mars/Olympus", now)
    assert refused.value.code == "bad_request"
    first = await reminders.create("alice", None, "one", now + timedelta(hours=1), "UTC", now)
    await reminders.create("alice", None, "two", now + timedelta(hours=2), "UTC", now)
    with pytest.raises(AssistantError) as refused:
        await reminders.create("alice", None, "three", now + timedelta(hours=3), "UTC", now)
    assert refused.value.code == "rate_limited"
    with pytest.raises(AssistantError) as refused:
        await reminders.cancel("bob", first.id)
    assert refused.value.code == "not_found"
    with pytest.raises(AssistantError) as refused:
        await reminders.cancel("alice", "no-such-id")
    assert refused.value.code == "not_found"
    assert (await reminders.cancel("alice", first.id)).id == first.id


@pytest.fixture
def tokens(tmp_path) -> dict[str, str]:
    """Two principals with a token each, in the config's token file."""
    file = TokenFile(tmp_path / "data" / "tokens.json")
    return {name: file.create(name)[1] for name in ("alice", "bob")}


async def _no_notice_pending(client) -> None:
    """The client's next frame answers a request sent now: no reminder.due was waiting before it."""
    await client.send({"type": "conversation.get", "limit": 1})
    assert (await client.recv())["type"] == "conversation.history"


async def test_a_due_reminder_reaches_every_client_of_its_owner_and_nobody_else(start_server, tmp_path, tokens):
    """A reminder due in 2 s: both of alice's connected clients get reminder.due (time, place, text); bob's client gets nothing."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    alice = [await open_client(server, tokens["alice"]) for _ in range(2)]
    bob = await open_client(server, tokens["bob"])
    started = []
    for client in [*alice, bob]:
        await client.send({"type": "session.start", "timezone": "Europe/Berlin"})
        started.append(await client.recv())
        assert started[-1]["type"] == "session.started"
    now = datetime.now(UTC)
    reminder = await server.app.reminders.create(
        "alice", started[0]["conversation_id"], "call the dentist", now + timedelta(seconds=2), "Europe/Berlin", now,
    )
    for client in alice:
        due = await client.recv(timeout=30)
        assert due["type"] == "reminder.due" and due["reminder_id"] == reminder.id and due["text"] == "call the dentist"
        assert due["timezone"] == "Europe/Berlin" and datetime.fromisoformat(due["due_at"]) == reminder.due_at
        assert due["conversation_id"] == started[0]["conversation_id"] and due["kind"] == "reminder"
    await _no_notice_pending(bob)
    for client in alice:
        await _no_notice_pending(client)  # once each, never twice
    assert server.app.notices.listeners("alice") == 2
    for client in [*alice, bob]:
        await client.ws.close()


async def test_a_reminder_due_while_the_server_was_down_fires_once_after_restart(start_server, tmp_path, connect_client):
    """Due while the server was stopped: the first client after the restart gets it once; a later client and a later restart do not."""
    config = make_config(tmp_path)
    first = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    now = datetime.now(UTC)
    reminder = await first.app.reminders.create("local", None, "water the plants", now + timedelta(seconds=1), "UTC", now)
    await first.shutdown(grace_s=0)
    await asyncio.sleep(1.2)  # the reminder falls due while no server runs

    second = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(second) as client:
        assert (await client.start())["type"] == "session.started"
        due = await client.recv()
        assert due["type"] == "reminder.due" and due["reminder_id"] == reminder.id
        async with connect_client(second) as later:
            await later.start()
            await _no_notice_pending(later)
        await _no_notice_pending(client)
    assert second.app.reminders.fired == 1
    await second.shutdown(grace_s=0)

    third = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(third) as client:
        await client.start()
        await _no_notice_pending(client)
    assert third.app.reminders.fired == 0


async def test_session_time_zones_are_checked(server, connect_client, tmp_path):
    """session.start takes an IANA time zone; an unknown one is bad_request and the connection stays usable; the config checks its own."""
    async with connect_client(server) as client:
        for bad in ("Mars/Olympus", "../../etc/passwd", "Europe/Berlin\u0000"):
            await client.send({"type": "session.start", "timezone": bad, "event_id": "s"})
            error = await client.recv()
            assert error["type"] == "error" and error["code"] == "bad_request" and error["ref"] == "s" and "timezone" in error["message"]
        await client.send({"type": "session.start", "timezone": 5})
        assert (await client.recv())["code"] == "bad_request"
        await client.send({"type": "session.start", "timezone": "America/New_York"})
        assert (await client.recv())["type"] == "session.started"
    with pytest.raises(ConfigError, match=r"dialogue\.timezone"):
        make_config(tmp_path, dialogue={"timezone": "Nowhere/Special"})
    assert Config().dialogue.timezone == "UTC"
