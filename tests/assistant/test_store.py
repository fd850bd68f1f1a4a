"""The SQLAlchemy store: durability rules, statuses and history, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import inspect
import threading

import pytest
from sqlalchemy import create_engine, text

from assistant.store import AsyncStore, PartRecord, Store


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def test_the_database_is_durable(store):
    """SQLite: the file is created (with its folder) in WAL mode, synchronous FULL, foreign keys on; PostgreSQL: fsync and synchronous commit on."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        else:
            assert store.engine.dialect.name == "postgresql"
            assert conn.exec_driver_sql("SHOW fsync").scalar() == "on"
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_user_turn_is_committed_before_anything_else_happens(store, store_url):
    """The user turn and its in_progress reply are visible to an independent connection once begin_turn returns."""
    conversation = store.create_conversation()
    store.begin_turn(conversation, [PartRecord("text", "hello")], history_limit=5)
    other = create_engine(store_url)
    with other.connect() as conn:
        rows = conn.execute(text("select role, status from turns order by pk")).all()
        parts = conn.execute(text("select text from parts")).all()
    other.dispose()
    assert rows == [("user", "completed"), ("assistant", "in_progress")] and parts == [("hello",)]


def test_begin_turn_context_always_ends_with_the_new_user_turn(store):
    """The context holds the last history_limit turns, never the placeholder, and at least the new user turn."""
    conversation = store.create_conversation()
    for said in ("one", "two"):
        begun = store.begin_turn(conversation, [PartRecord("text", said)], history_limit=10)
        store.finish_reply(begun.reply_id, text=f"re {said}", status="completed")
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


def test_replies_left_in_progress_are_marked_interrupted(store_url):
    """After a crash, reopening marks in_progress replies interrupted and keeps committed turns."""
    url = store_url
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


def test_seq_numbers_only_rise_and_a_clean_end_gives_back_its_reservation(store):
    """Reservations and last seqs never go down; settling gives the reservation back unless another channel raised it since."""
    conversation = store.create_conversation()
    store.reserve_seqs(conversation, 100)
    store.reserve_seqs(conversation, 50)
    assert store.conversation_last_seq(conversation) == 100, "resumes after what may have been sent"
    store.settle_seqs(conversation, delivered=40, reserved=100)
    assert store.conversation_last_seq(conversation) == 40
    store.reserve_seqs(conversation, 200)
    store.settle_seqs(conversation, delivered=60, reserved=100)  # a reservation made since is kept
    assert store.conversation_last_seq(conversation) == 200
    store.raise_last_seq(conversation, 250)
    store.raise_last_seq(conversation, 10)
    assert store.conversation_last_seq(conversation) == 250


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


async def test_async_store_runs_every_call_on_its_one_thread(store_url):
    """Calls run on the store's single thread and look the Store method up when called (a test may replace one)."""
    store = AsyncStore(Store(store_url))
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


def test_recent_turns_in_memory_always_match_the_database(store_url):
    """After every kind of write, the context history served from memory equals what the database holds; a rolled-back
    batch leaves nothing behind in memory; a conversation held in memory needs no read for its next context."""
    store = Store(store_url)
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


def test_a_store_with_no_memory_reads_every_context_from_the_database(store_url):
    """recent_conversations=0 (a store other processes write too) keeps nothing in memory."""
    store = Store(store_url, recent_conversations=0)
    cid = store.create_conversation()
    store.begin_turn(cid, [PartRecord("text", "hello")], 4)
    assert len(store.recent) == 0 and store.recent.hits == 0
    store.close()


def test_turns_begun_in_one_batch_get_the_contexts_they_would_get_one_after_another(store_url):
    """Several begin_turn calls grouped into one insert per table (two of them in one conversation) return the ids and
    contexts of sequential calls, and the rows they store read back the same from memory and from the database; so do
    replies ended in a batch (a batch of one too), with their usage and errors, without falling back to one call at a time."""
    import functools

    store = Store(store_url)
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
        functools.partial(store.finish_reply, one.reply_id, text="r1", status="completed", last_seq=3, usage={"prompt_tokens": 5, "completion_tokens": 1}),
        functools.partial(store.finish_reply, three.reply_id, text="r3", status="cancelled", last_seq=7, error="stopped"),
    ])
    assert finished == [(True, None), (True, None)]
    assert store.run_batch([functools.partial(store.finish_reply, two.reply_id, text="r2", status="completed")]) == [(True, None)]
    assert store.batches_retried == 0  # each batch ran as grouped statements, none fell back to one call at a time
    for cid in (first, other):
        assert store.history(cid, 10) == store._read_history(cid, 10)
    assert [(t.text, t.status) for t in store._read_history(first, 10)][-4:] == [
        ("one", "completed"), ("r1", "completed"), ("three", "completed"), ("r3", "cancelled"),
    ]
    assert store.conversation_last_seq(first) == 7
    store.close()


def test_replies_record_the_node_that_runs_them(store_url):
    """A store opened with a node id writes it on the replies and image jobs it starts, not on user or finished turns; without one, none."""
    store = Store(store_url, node_id="node-a")
    other = Store(store_url)
    try:
        conversation = store.create_conversation()
        begun = store.begin_turn(conversation, [PartRecord("text", "hi")], history_limit=5)
        _, job = store.begin_image_job(conversation, "a cat", None)
        done = store.add_user_turn(conversation, [PartRecord("text", "again")])
        plain = other.begin_reply(conversation, done, history_limit=5).reply_id
        with store.engine.connect() as conn:
            nodes = dict(conn.execute(text("select id, node from turns")).all())
        assert nodes[begun.reply_id] == "node-a" and nodes[job] == "node-a"
        assert nodes[begun.user_turn_id] is None and nodes[done] is None and nodes[plain] is None
    finally:
        store.close()
        other.close()


def test_two_processes_storing_the_same_attachment_at_once_both_succeed(store_url):
    """Two stores on one database (two nodes) adding turns with the same image at once both commit, and the image is stored once."""
    stores = [Store(store_url), Store(store_url)]
    conversation = stores[0].create_conversation()
    image = b"\x89PNG the same bytes"
    sha = hashlib.sha256(image).hexdigest()
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def add(store: Store) -> None:
        barrier.wait()
        try:
            for _ in range(20):
                store.add_user_turn(conversation, [PartRecord("image", attachment_sha256=sha)], attachments=[("image/png", image)])
                store.put_image_features("enc", {sha: b"\0" * 8}, 2)
                store.put_image_descriptions({(sha, "ocr"): "text"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(stores[1].history(conversation)) == 40 and stores[1].attachment(sha) == ("image/png", image)
        with stores[0].engine.connect() as conn:
            assert conn.execute(text("select count(*) from attachments")).scalar() == 1
    finally:
        for store in stores:
            store.close()


def test_pages_parts_images_and_ownership(store):
    """history_page pages back by turn and by size, parts are appended and `heard` replaced, images and their owners are found."""
    store.check_writable()
    conversation = store.create_conversation("alice")
    turns = []
    for said in ("one", "two", "three"):
        begun = store.begin_turn(conversation, [PartRecord("text", said)], history_limit=1)
        store.finish_reply(begun.reply_id, text=said.upper() * 10, status="completed")
        turns += [begun.user_turn_id, begun.reply_id]
    page, more = store.history_page(conversation, None, limit=3, max_chars=10_000)
    assert [t.id for t in page] == turns[-3:] and more
    page, more = store.history_page(conversation, turns[-3], limit=10, max_chars=10_000)
    assert [t.id for t in page] == turns[:3] and not more
    page, more = store.history_page(conversation, None, limit=10, max_chars=55)  # "THREE" * 10 and "three", not "TWO" * 10
    assert [t.id for t in page] == turns[-2:] and more, "cut where the text passes max_chars"
    assert store.history_page(conversation, "not-a-turn", limit=3, max_chars=100) is None
    store.add_parts(turns[0], [PartRecord("transcript", "uno")])
    store.set_heard(turns[1], "ON")
    store.set_heard(turns[1], "ONE")
    history = store.history(conversation)
    assert history[0].text == "one\nuno" and [(p.kind, p.text) for p in history[1].parts] == [("text", "ONE" * 10), ("heard", "ONE")]
    user_id, job = store.begin_image_job(conversation, "a cat", None)
    store.finish_reply(job, text="", status="completed", image=("image/png", b"\x89PNG cat"))
    other, [sha] = store.add_generated_images("bob", "a dog", [("image/png", b"\x89PNG dog")])
    assert [(i.turn_id, i.role, i.mime) for i in store.conversation_images(conversation)] == [(job, "assistant", "image/png")]
    assert store.owns_attachment("bob", sha) and not store.owns_attachment("alice", sha)
    assert [t.parts[0].kind for t in store.history(other)] == ["image_request", "image"] and store.history(conversation)[-2].id == user_id


def test_a_conversation_whose_channel_ended_leaves_memory(store_url):
    """settle_seqs (its channel dropped, nobody following) drops the conversation's recent turns; they are read again later."""
    store = Store(store_url)
    cid = store.create_conversation()
    store.begin_turn(cid, [PartRecord("text", "hello")], 4)
    assert len(store.recent) == 1
    store.settle_seqs(cid, 3, 100)
    assert len(store.recent) == 0
    assert [t.text for t in store.history(cid, 4)] == ["hello", ""] and len(store.recent) == 1
    store.close()
