"""Group commit: store calls that arrive together share one transaction, each is answered after its commit,
and a bad call fails alone; turns are announced only once durable."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from assistant import events
from assistant.app import App
from assistant.conversation import Conversation, open_conversation
from assistant.engines import GenerationOptions
from assistant.store import AsyncStore, PartRecord, Store
from assistant.turns import TextIn
from tests.conftest import make_config
from tests.conversations import Recorder, settle
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


@pytest.fixture
async def async_store(tmp_path):
    store = AsyncStore(Store(f"sqlite:///{tmp_path}/group.db"))
    yield store
    await asyncio.to_thread(store.close)


def committed_turn_ids(path) -> set[str]:
    """The turn ids another connection sees: only what is committed."""
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM turns")}


async def test_calls_that_arrive_together_share_one_commit(async_store):
    """Forty turns begun at once are written in a few transactions, not forty, and each gets its own ids and context."""
    conversations = [await async_store.create_conversation() for _ in range(40)]
    flushes = async_store.writer.flushes
    started = await asyncio.gather(*(
        async_store.begin_turn(cid, [PartRecord("text", f"hello {i}")], 4) for i, cid in enumerate(conversations)
    ))
    assert async_store.writer.flushes - flushes < 20
    for i, begun in enumerate(started):
        assert [t.text for t in begun.history] == [f"hello {i}"]
    assert len({b.user_turn_id for b in started} | {b.reply_id for b in started}) == 80


async def test_a_failing_call_fails_alone_and_the_rest_of_its_batch_commits(async_store, tmp_path):
    """A call that raises inside a batch gets its own error; the calls beside it are committed all the same."""
    cid = await async_store.create_conversation()
    begun = await async_store.begin_turn(cid, [PartRecord("text", "hi")], 4)
    outcomes = await asyncio.gather(
        async_store.begin_turn(cid, [PartRecord("text", "first")], 4),
        async_store.finish_reply("no-such-reply", text="x", status="completed"),
        async_store.finish_reply(begun.reply_id, text="hello", status="completed"),
        async_store.begin_turn(cid, [PartRecord("text", "second")], 4),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], LookupError)
    assert not any(isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 1)
    stored = committed_turn_ids(tmp_path / "group.db")
    assert {begun.reply_id, outcomes[0].user_turn_id, outcomes[3].user_turn_id} <= stored
    history = await async_store.history(cid)
    assert [t.text for t in history if t.role == "user"] == ["hi", "first", "second"]
    assert history[1].status == "completed" and history[1].text == "hello"


async def test_calls_run_in_the_order_they_were_made_alone_ones_included(async_store):
    """A call that must run alone (`call`) runs between batches, in order: it sees what was asked before it."""
    cid = await async_store.create_conversation()
    seen = []

    def count_turns() -> int:
        seen.append(len(async_store.store.history(cid)))
        return seen[-1]

    results = await asyncio.gather(
        async_store.add_user_turn(cid, [PartRecord("text", "a")]),
        async_store.call(count_turns),
        async_store.add_user_turn(cid, [PartRecord("text", "b")]),
        async_store.call(count_turns),
    )
    assert results[1] == 1 and results[3] == 2


async def test_close_finishes_every_queued_call(tmp_path):
    """Calls queued before close are all written before the thread stops."""
    store = AsyncStore(Store(f"sqlite:///{tmp_path}/close.db"))
    cid = await store.create_conversation()
    pending = [asyncio.ensure_future(store.add_user_turn(cid, [PartRecord("text", str(i))])) for i in range(20)]
    await asyncio.sleep(0)
    await asyncio.to_thread(store.close)
    ids = await asyncio.gather(*pending)
    assert set(ids) <= committed_turn_ids(tmp_path / "close.db") and len(set(ids)) == 20


async def test_a_turn_is_never_announced_as_created_before_it_is_durable(tmp_path):
    """Under load (24 conversations at once), every TurnCreated is published only once another connection
    to the database can read that user turn: it was committed first."""
    db_path = tmp_path / "durable.db"
    app = await App.start(
        make_config(tmp_path, engines={"dialogue": "fake"}, store={"url": f"sqlite:///{db_path}"},
                    limits={"turns_per_minute": 10_000}),
        [FakeEnginesPlugin(ScriptedDialogue())],
    )
    early: list[str] = []
    announced: list[str] = []

    class CheckingRecorder(Recorder):
        async def __call__(self, event: events.Event, seq: int | None = None) -> None:
            if isinstance(event, events.TurnCreated):
                announced.append(event.turn_id)
                if event.turn_id not in committed_turn_ids(db_path):
                    early.append(event.turn_id)
            await super().__call__(event, seq)

    try:
        conversations = []
        for _ in range(24):
            cid, _, _ = await open_conversation(app, "local", None)
            recorder = CheckingRecorder()
            conversations.append(Conversation(app, cid, "local", recorder, recorder.tell))
        for round_ in range(3):
            for conversation in conversations:
                conversation.create_turn(lambda r=round_: [TextIn(f"turn {r}")], GenerationOptions(), None)
            for conversation in conversations:
                await settle(conversation)
    finally:
        await app.drain(0)
        await app.stop()
    assert len(announced) == 72 and early == []
