"""The built-in tools over the websocket: the fast path sets, lists and cancels reminders, and due ones reach their owner."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from assistant.auth import TokenFile
from tests.assistant.test_auth import open_client
from tests.conftest import WITH_BUILTIN_TOOLS, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

BERLIN = ZoneInfo("Europe/Berlin")


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


@pytest.mark.offline_model
async def test_remind_me_tomorrow_at_9_with_the_offline_defaults(start_server, tmp_path, connect_client):
    """SmolLM2 + fast path: the reminder is stored for tomorrow 09:00 Berlin time, the reply says so, tool events are stored; other turns reach the model."""
    config = make_config(tmp_path, engines={"dialogue": "transformers"}, plugins={**WITH_BUILTIN_TOOLS, "transformers_dialogue": {"max_new_tokens": 24}})
    server = await start_server(config)
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "timezone": "Europe/Berlin"})
        started = (await client.recv_until("session.started"))[-1]
        today = datetime.now(BERLIN).date()
        events = await client.say("Remind me tomorrow at 9 to call the dentist")
        call, result = of_type(events, "tool.call")[0], of_type(events, "tool.result")[0]
        assert call["name"] == "set_reminder" and call["arguments"] == {"text": "call the dentist", "due": "tomorrow at 9:00"}
        assert result["status"] == "ok" and result["call_id"] == call["call_id"]
        done = events[-1]
        assert done["status"] == "completed" and done["text"] == "OK, I'll remind you to call the dentist tomorrow at 9:00 AM."
        [reminder] = await server.app.reminders.active("local")
        assert reminder.due_at == datetime.combine(today + timedelta(days=1), time(9), BERLIN) and reminder.text == "call the dentist"
        assert reminder.timezone == "Europe/Berlin" and reminder.conversation_id == started["conversation_id"]

        await client.send({"type": "conversation.get"})
        history = (await client.recv_until("conversation.history"))[-1]
        parts = [part["type"] for turn in history["turns"] for part in turn["content"]]
        assert "tool_call" in parts and "tool_result" in parts

        listed = await client.say("What are my reminders?")
        assert "call the dentist" in listed[-1]["text"] and of_type(listed, "tool.call")[0]["name"] == "list_reminders"
        chat = await client.say("What is the capital of France?")
        assert of_type(chat, "tool.call") == [] and chat[-1]["status"] == "completed" and chat[-1]["text"]


@pytest.fixture
def tokens(tmp_path) -> dict[str, str]:
    """Two principals with a token each, in the config's token file."""
    file = TokenFile(tmp_path / "data" / "tokens.json")
    return {name: file.create(name)[1] for name in ("alice", "bob")}


async def test_a_reminder_set_in_words_reaches_both_of_its_owners_clients_only(start_server, tmp_path, tokens):
    """alice says "remind me in 2 seconds to stretch" on one client: both her clients get reminder.due; bob gets none and cannot cancel it."""
    server = await start_server(make_config(tmp_path, plugins=WITH_BUILTIN_TOOLS), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    alice = [await open_client(server, tokens["alice"]) for _ in range(2)]
    bob = await open_client(server, tokens["bob"])
    for client in [*alice, bob]:
        await client.send({"type": "session.start", "timezone": "Asia/Tokyo"})
        assert (await client.recv())["type"] == "session.started"
    events = await alice[0].say("Remind me in 2 seconds to stretch")
    assert of_type(events, "tool.result")[0]["status"] == "ok" and events[-1]["text"].startswith("OK, I'll remind you to stretch today at")
    [reminder] = await server.app.reminders.active("alice")

    refused = await bob.say("Cancel my reminder to stretch")
    assert of_type(refused, "tool.result")[0]["status"] == "error" and "no waiting reminder" in of_type(refused, "tool.result")[0]["error"]
    for client in alice:
        due = await client.recv(timeout=30)
        while due["type"] != "reminder.due":  # alice's second client follows no turn of the first: only the notice
            due = await client.recv(timeout=30)
        assert due["reminder_id"] == reminder.id and due["text"] == "stretch" and due["timezone"] == "Asia/Tokyo"
        assert datetime.fromisoformat(due["due_at"]).utcoffset() == timedelta(hours=9)
    await bob.send({"type": "conversation.get", "limit": 1})
    assert (await bob.recv())["type"] == "conversation.history", "no reminder.due reached bob"
    assert await server.app.reminders.active("alice") == []
    for client in [*alice, bob]:
        await client.ws.close()


async def test_bad_reminder_requests_over_the_websocket(start_server, tmp_path, connect_client):
    """Past and absurd times fail as tool errors the reply is built from, nothing is stored, and the session goes on."""
    server = await start_server(make_config(tmp_path, plugins=WITH_BUILTIN_TOOLS), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        for text in ("Remind me on February 30 to do nothing", "Set a timer for 9000 weeks"):
            events = await client.say(text)
            result = of_type(events, "tool.result")[0]
            assert result["status"] == "error", text
            assert events[-1]["status"] == "completed"
        assert await server.app.reminders.active("local") == []
