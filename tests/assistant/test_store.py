"""The SQLAlchemy store: durability rules, statuses and history."""

from __future__ import annotations

import inspect
import sqlite3
import threading

import pytest

from assistant.store import AsyncStore, PartRecord, Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}")
    yield s
    s.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store, tmp_path):
    """The database file is created (with its folder) in WAL mode."""
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_user_turn_is_committed_before_anything_else_happens(store, tmp_path):
    """The user turn and its in_progress reply are visible to an independent connection once begin_turn returns."""
    conversation = store.create_conversation()
    store.begin_turn(conversation, [PartRecord("text", "hello")], history_limit=5)
    other = sqlite3.connect(tmp_path / "sub" / "db.sqlite")
    rows = other.execute("select role, status from turns order by pk").fetchall()
    parts = other.execute("select text from parts").fetchall()
    other.close()
    assert rows == [("user", "completed"), ("assistant", "in_progress")] and parts == [("hello",)]


def test_begin_turn_context_always_ends_with_the_new_user_turn(store):
    """The context holds the last history_limit turns, never the placeholder, and at least the new user turn."""
    conversation = store.create_conversation()
    for text in ("one", "two"):
        begun = store.begin_turn(conversation, [PartRecord("text", text)], history_limit=10)
        store.finish_reply(begun.reply_id, text=f"re {text}", status="completed")
    assert [t.text for t in store.begin_turn(conversation, [PartRecord("text", "3")], history_limit=3).history] == ["two", "re two", "3"]
    assert [t.text for t in store.begin_turn(conversation, [PartRecord("text", "4")], history_limit=0).history] == ["4"]


def test_reply_lifecycle_and_history_order(store):
    """A reply starts in_progress, ends with its status and text; history comes back oldest first."""
    conversation = store.create_conversation()
    begun = store.begin_turn(conversation, [PartRecord("text", "a"), PartRecord("text", "b")], history_limit=5)
    user, reply = begun.user_turn_id, begun.reply_id
    assert store.history(conversation)[-1].status == "in_progress"
    store.finish_reply(reply, text="partial", status="cancelled", usage={"completion_tokens": 2}, last_seq=9)
    history = store.history(conversation)
    assert [(t.role, t.status, t.text) for t in history] == [("user", "completed", "a\nb"), ("assistant", "cancelled", "partial")]
    assert history[1].reply_to == user and history[1].usage == {"completion_tokens": 2}
    assert store.conversation_last_seq(conversation) == 9
    with pytest.raises(LookupError):  # a reply ends once
        store.finish_reply(reply, text="", status="failed", error="boom", last_seq=3)
    second = store.begin_turn(conversation, [PartRecord("text", "c")], history_limit=10)
    assert [t.text for t in second.history] == ["a\nb", "partial", "c"]  # the placeholder is not context
    store.finish_reply(second.reply_id, text="", status="failed", error="boom", last_seq=3)
    assert store.conversation_last_seq(conversation) == 9  # never goes backwards
    last = store.history(conversation, limit=1)[0]
    assert (last.status, last.error, last.parts) == ("failed", "boom", [])


def test_a_reply_keeps_its_tool_parts_before_its_text(store):
    """Tool call and result parts are stored before the reply's text and come back in conversation.history with their fields."""
    conversation = store.create_conversation()
    begun = store.begin_turn(conversation, [PartRecord("text", "add 2 and 3")], history_limit=5)
    call = PartRecord("tool_call", '{"call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": false}')
    result = PartRecord("tool_result", '{"call_id": "c1", "name": "add", "status": "ok", "result": 5, "error": null}')
    store.finish_reply(begun.reply_id, text="It is 5.", status="completed", parts=[call, result])
    reply = store.history(conversation)[-1]
    assert [p.kind for p in reply.parts] == ["tool_call", "tool_result", "text"] and reply.text == "It is 5."
    assert reply.to_wire()["content"] == [
        {"type": "tool_call", "call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": False},
        {"type": "tool_result", "call_id": "c1", "name": "add", "status": "ok", "result": 5, "error": None},
        {"type": "text", "text": "It is 5."},
    ]


def test_invalid_final_status_is_refused(store):
    """finish_reply accepts only final statuses."""
    conversation = store.create_conversation()
    reply = store.begin_turn(conversation, [PartRecord("text", "x")], history_limit=1).reply_id
    with pytest.raises(ValueError):
        store.finish_reply(reply, text="", status="in_progress")
    with pytest.raises(ValueError):
        store.finish_reply(reply, text="", status="whatever")


def test_replies_left_in_progress_are_marked_interrupted(tmp_path):
    """After a crash, reopening marks in_progress replies interrupted and keeps committed turns."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = Store(url)
    conversation = first.create_conversation()
    first.begin_turn(conversation, [PartRecord("text", "x")], history_limit=1)
    first.engine.dispose()  # no clean finish: as if the process died
    second = Store(url)
    assert second.mark_interrupted() == 1
    turns = second.history(conversation)
    assert [(t.role, t.status) for t in turns] == [("user", "completed"), ("assistant", "interrupted")]
    assert second.mark_interrupted() == 0
    second.close()


def test_unknown_conversation_has_no_last_seq(store):
    """conversation_last_seq is None for an id that does not exist (the server answers not_found)."""
    assert store.conversation_last_seq("missing") is None


def test_in_memory_database_is_shared_across_threads():
    """sqlite:///:memory: is one database for every thread (the store runs on its own thread)."""
    import threading

    store = Store("sqlite:///:memory:")
    conversation = store.create_conversation()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.conversation_last_seq(conversation)))
    thread.start()
    thread.join()
    store.close()
    assert seen == [0]


def test_async_store_has_a_typed_coroutine_for_every_store_method():
    """Every public Store method but close and run_batch (the group commit's) has an `async def` twin on AsyncStore with the same
    signature; nothing is proxied by name."""
    public = {name for name, member in vars(Store).items() if inspect.isfunction(member) and not name.startswith("_")} - {"close", "run_batch"}
    for name in sorted(public):
        twin = getattr(AsyncStore, name, None)
        assert inspect.iscoroutinefunction(twin), f"AsyncStore.{name} is missing or not async"
        store_params = list(inspect.signature(getattr(Store, name)).parameters.values())
        assert list(inspect.signature(twin).parameters.values()) == store_params, name
        assert inspect.signature(twin).return_annotation == inspect.signature(getattr(Store, name)).return_annotation, name
    assert not hasattr(AsyncStore, "__getattr__")


async def test_async_store_runs_every_call_on_its_one_thread(tmp_path):
    """Calls run on the store's single thread and look the Store method up when called (a test may replace one)."""
    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    threads = set()
    history = store.store.history

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return history(*args, **kwargs)

    store.store.history = spy
    try:
        conversation = await store.create_conversation("alice")
        begun = await store.begin_turn(conversation, [PartRecord("text", "hi")], history_limit=5)
        await store.finish_reply(begun.reply_id, text="hello", status="completed", last_seq=3)
        assert [t.text for t in await store.history(conversation)] == ["hi", "hello"]
        assert await store.conversation_last_seq(conversation, owner="alice") == 3
        assert threads and all(name.startswith("store") for name in threads) and threading.current_thread().name not in threads
    finally:
        store.close()


def test_recent_turns_in_memory_always_match_the_database(tmp_path):
    """After every kind of write, the context history served from memory equals what the database holds; a rolled-back
    batch leaves nothing behind in memory; a conversation held in memory needs no read for its next context."""
    store = Store(f"sqlite:///{tmp_path}/recent.db")
    cid = store.create_conversation()

    def check() -> None:
        for limit in (1, 2, 3, 5, 50):
            assert store.history(cid, limit) == store._read_history(cid, limit), limit

    begun = store.begin_turn(cid, [PartRecord("text", "hello")], 4)
    check()
    store.finish_reply(begun.reply_id, text="hi there", status="completed", usage={"prompt_tokens": 3, "completion_tokens": 2},
                       parts=[PartRecord("tool_call", '{"name": "get_time", "arguments": {}, "call_id": "c1"}')])
    check()
    user = store.add_user_turn(cid, [PartRecord("text", "look"), PartRecord("image", attachment_sha256=None)], [("image/png", b"png")])
    reply = store.begin_reply(cid, user, 4).reply_id
    store.add_parts(user, [PartRecord("transcript", "spoken words")])
    check()
    store.finish_reply(reply, text="a picture", status="completed", image=("image/png", b"generated"))
    check()
    store.set_heard(reply, "a pic")
    check()
    _, job = store.begin_image_job(cid, "a cat", None)
    check()
    begun = store.begin_turn(cid, [PartRecord("text", "more")], 4)
    store.mark_interrupted()
    check()
    for i in range(8):  # longer than what memory keeps for the smallest limit asked
        store.finish_reply(store.begin_turn(cid, [PartRecord("text", f"n{i}")], 2).reply_id, text=f"r{i}", status="failed", error="boom")
    check()

    hits = store.recent.hits
    store.begin_turn(cid, [PartRecord("text", "again")], 4)
    assert store.recent.hits == hits + 1  # the context came from memory

    outcomes = store.run_batch([
        lambda: store.begin_turn(cid, [PartRecord("text", "kept")], 4),
        lambda: store.finish_reply("no-such-reply", text="x", status="completed"),  # raises: the batch rolls back, then each runs alone
    ])
    assert outcomes[0][0] and not outcomes[1][0] and isinstance(outcomes[1][1], LookupError)
    check()
    assert [t.text for t in store.history(cid, 50)].count("kept") == 1
    store.close()


def test_a_store_with_no_memory_reads_every_context_from_the_database(tmp_path):
    """recent_conversations=0 (a store other processes write too) keeps nothing in memory."""
    store = Store(f"sqlite:///{tmp_path}/none.db", recent_conversations=0)
    cid = store.create_conversation()
    store.begin_turn(cid, [PartRecord("text", "hello")], 4)
    assert len(store.recent) == 0 and store.recent.hits == 0
    store.close()


def test_turns_begun_in_one_batch_get_the_contexts_they_would_get_one_after_another(tmp_path):
    """Several begin_turn calls grouped into one insert per table (two of them in one conversation) return the ids and
    contexts of sequential calls, and the rows they store read back the same from memory and from the database."""
    import functools

    store = Store(f"sqlite:///{tmp_path}/grouped.db")
    first, other = store.create_conversation(), store.create_conversation()
    store.begin_turn(first, [PartRecord("text", "earlier")], 4)
    calls = [
        functools.partial(store.begin_turn, first, [PartRecord("text", "one")], 4),
        functools.partial(store.begin_turn, other, [PartRecord("text", "two")], 4),
        functools.partial(store.begin_turn, first, [PartRecord("text", "three")], 4),
    ]
    outcomes = store.run_batch(calls)
    assert all(ok for ok, _ in outcomes)
    one, two, three = (started for _, started in outcomes)
    assert [t.text for t in one.history] == ["earlier", "", "one"]
    assert [t.text for t in two.history] == ["two"]
    assert [t.text for t in three.history] == ["earlier", "", "one", "", "three"][-4:]
    finished = store.run_batch([
        functools.partial(store.finish_reply, one.reply_id, text="r1", status="completed", last_seq=3),
        functools.partial(store.finish_reply, three.reply_id, text="r3", status="cancelled", last_seq=7),
    ])
    assert finished == [(True, None), (True, None)]
    for cid in (first, other):
        assert store.history(cid, 10) == store._read_history(cid, 10)
    assert [(t.text, t.status) for t in store._read_history(first, 10)][-4:] == [
        ("one", "completed"), ("r1", "completed"), ("three", "completed"), ("r3", "cancelled"),
    ]
    assert store.conversation_last_seq(first) == 7
    store.close()
