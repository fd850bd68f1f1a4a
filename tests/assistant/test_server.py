"""The server end to end: a real server on port 0 and a real websockets client."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

from assistant.config import ConfigError
from assistant.dialects.native.protocol import parse_server_event
from assistant.server import run_on_server_loop
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


def words(n: int):
    return lambda request: [f" w{i}" for i in range(n)]


async def start_a_reply(client, text: str = "x") -> str:
    """Start a session and a turn; returns (the conversation's id) once the turn's reply has started."""
    conversation_id = (await client.start())["conversation_id"]
    await client.send({"type": "turn.create", "content": [{"type": "text", "text": text}]})
    await client.recv_until("response.created")
    return conversation_id


async def test_text_turn_streams_deltas_that_join_to_the_stored_text(server, connect_client):
    """A text turn gives turn.created, response.created, deltas, response.done; deltas join to the stored text."""
    async with connect_client(server) as client:
        started = await client.start()
        assert started["protocol"] == 1 and started["resumed"] is False
        assert started["capabilities"]["dialogue"] == "fake:scripted"
        assert started["capabilities"]["asr"] is None
        events = await client.say("hello there")
        types = [e["type"] for e in events]
        assert types[:2] == ["turn.created", "response.created"]
        assert types[-1] == "response.done" and types.count("response.text.delta") >= 1  # deltas that pile up go out joined
        for event in [started, *events]:
            parse_server_event(json.dumps(event))  # every event matches the protocol models
        assert started["seq"] == 0, "session.started answers this client; it carries the last event's seq"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "conversation events are numbered without gaps"
        joined = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        done = events[-1]
        assert done["status"] == "completed" and done["text"] == joined == "You said: hello there"
        assert done["usage"]["completion_tokens"] == 4 and "total_ms" in done["timings"]

        await client.send({"type": "conversation.get"})
        history = (await client.recv_until("conversation.history"))[-1]
        assert [t["role"] for t in history["turns"]] == ["user", "assistant"]
        assert history["turns"][0]["content"] == [{"type": "text", "text": "hello there"}]
        assert history["turns"][1]["content"][0]["text"] == joined
        assert history["turns"][1]["turn_id"] == done["response_id"]


@pytest.mark.parametrize("engine", [ScriptedDialogue(script=words(200), delay_s=0.01)])
async def test_cancel_mid_stream_stores_partial_text(server, connect_client, engine):
    """response.cancel mid-stream ends the reply as cancelled and stores the partial text."""
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "go"}]})
        created = (await client.recv_until("response.created"))[-1]
        first = await client.recv()
        assert first["type"] == "response.text.delta"
        await client.send({"type": "response.cancel", "response_id": created["response_id"]})
        events = await client.recv_until("response.done")
        done = events[-1]
        deltas = [first["delta"]] + [e["delta"] for e in events if e["type"] == "response.text.delta"]
        assert done["status"] == "cancelled"
        assert done["text"] == "".join(deltas) and 0 < len(deltas) < 200
        await client.send({"type": "conversation.get"})
        stored = (await client.recv_until("conversation.history"))[-1]["turns"][-1]
        assert stored["status"] == "cancelled" and stored["content"][0]["text"] == done["text"]


@pytest.mark.parametrize("engine", [ScriptedDialogue(fail_times=1)])
async def test_failing_engine_fails_its_turn_and_the_next_turn_works(server, connect_client, engine):
    """An engine that raises gives status failed; the next turn on the same connection completes."""
    async with connect_client(server) as client:
        await client.start()
        failed = (await client.say("first"))[-1]
        assert failed["status"] == "failed" and failed["error"]["code"] == "internal"
        assert "scripted engine failure" in failed["error"]["message"]
        ok = (await client.say("second"))[-1]
        assert ok["status"] == "completed" and ok["text"] == "You said: second"
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert [t["status"] for t in turns] == ["completed", "failed", "completed", "completed"]
        assert "scripted engine failure" in turns[1]["error"]


BAD_EVENTS = [
    ("{not json", "bad_request", "malformed JSON"),
    ("[1, 2]", "bad_request", "JSON object"),
    (json.dumps({"event_id": "e1"}), "bad_request", "'type'"),
    (json.dumps({"type": "turn.explode", "event_id": "e1"}), "bad_request", "unknown event type"),
    (json.dumps({"type": "turn.create", "event_id": "e1"}), "bad_request", "content"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": "hi"}), "bad_request", "content"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": [{"type": "text", "text": 5}]}), "bad_request", "content.0"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": [{"type": "video"}]}), "bad_request", "content.0"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": []}), "bad_request", "content"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": [{"type": "text", "text": "  "}]}), "bad_request", "no text"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": [{"type": "text", "text": "x"}],
                 "options": {"temperature": 9}}), "bad_request", "temperature"),
    (json.dumps({"type": "session.start", "event_id": "e1", "conversation_id": 7}), "bad_request", "conversation_id"),
    (json.dumps({"type": "session.start", "event_id": "e1", "conversation_id": "nope"}), "not_found", "nope"),
    (json.dumps({"type": "conversation.get", "event_id": "e1", "conversation_id": "nope"}), "not_found", "nope"),
    (json.dumps({"type": "response.cancel", "event_id": "e1", "response_id": "nope"}), "not_found", "nope"),
    (json.dumps({"type": "response.cancel", "event_id": "e1"}), "bad_request", "response_id"),
    (json.dumps({"type": "audio.commit", "event_id": "e1"}), "bad_request", "no audio to commit"),
    (json.dumps({"type": "audio.append", "event_id": "e1", "data": "%%%"}), "bad_request", "base64"),
    (json.dumps({"type": "conversation.search", "event_id": "e1", "query": "cats"}), "unavailable", "image encoder"),
    (json.dumps({"type": "conversation.search", "event_id": "e1", "query": ""}), "bad_request", "query"),
    (json.dumps({"type": "image.generate", "event_id": "e1", "prompt": "cat"}), "unavailable", "[engines] image_generator"),
    (json.dumps({"type": "image.cancel", "event_id": "e1", "job_id": "nope"}), "not_found", "nope"),
    (json.dumps({"type": "image.generate", "event_id": "e1", "prompt": "cat", "steps": "many"}), "bad_request", "steps"),
    (json.dumps({"type": "turn.create", "event_id": "e1", "content": [
        {"type": "image", "data": base64.b64encode(b"x").decode(), "mime": "image/png"}]}), "bad_request", "not an image"),
    (b"\x00\x01binary", "unavailable", "ASR engine"),
]


@pytest.mark.parametrize(("frame", "code", "text"), BAD_EVENTS, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_EVENTS)])
async def test_bad_input_gets_an_error_and_the_connection_stays_usable(server, connect_client, frame, code, text):
    """Malformed, unknown, missing or wrong-typed input answers `error` with the right code; the connection goes on."""
    async with connect_client(server) as client:
        await client.start()
        await client.send(frame)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code, error
        assert text in error["message"], error
        if isinstance(frame, str) and '"event_id"' in frame:
            assert error["ref"] == "e1"
        assert (await client.say("still here"))[-1]["status"] == "completed"


async def test_turn_before_session_start_is_refused(server, connect_client):
    """turn.create before session.start answers bad_request with seq 0, then the session works."""
    async with connect_client(server) as client:
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "hi"}]})
        error = await client.recv()
        assert error["code"] == "bad_request" and "session.start" in error["message"] and error["seq"] == 0
        await client.start()
        assert (await client.say("hi"))[-1]["status"] == "completed"


async def test_oversize_frame_closes_that_connection_and_the_server_serves_others(start_server, connect_client, tmp_path, engine):
    """A frame over max_frame_bytes closes its connection with 1009; other clients are served."""
    config = make_config(tmp_path, server={"max_frame_bytes": 2048})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as other:
        await other.start()
        async with connect_client(server) as client:
            await client.start()
            await client.send({"type": "turn.create", "content": [{"type": "text", "text": "x" * 5000}]})
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd.code == 1009
        assert (await other.say("fine"))[-1]["status"] == "completed"
    async with connect_client(server) as fresh:
        await fresh.start()
        assert (await fresh.say("new"))[-1]["status"] == "completed"


async def test_two_clients_get_their_own_replies_and_history_answers_while_one_streams(start_server, connect_client):
    """While one client's reply is stuck in the engine, the other's conversation.get answers at once."""
    gate = threading.Event()
    engine = ScriptedDialogue(gate=gate)
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as a, connect_client(server) as b:
        await a.start()
        await b.start()
        await a.send({"type": "turn.create", "content": [{"type": "text", "text": "from a"}]})
        await a.recv_until("response.created")
        await b.send({"type": "turn.create", "content": [{"type": "text", "text": "from b"}]})
        await b.recv_until("response.created")
        begun = time.perf_counter()
        await b.send({"type": "conversation.get"})
        history = (await b.recv_until("conversation.history", timeout=5))[-1]
        assert time.perf_counter() - begun < 2.0
        assert history["turns"][-1]["status"] == "in_progress" and not gate.is_set()
        gate.set()
        done_a = (await a.recv_until("response.done"))[-1]
        done_b = (await b.recv_until("response.done"))[-1]
        assert done_a["text"] == "You said: from a" and done_b["text"] == "You said: from b"


async def test_healthz_and_unknown_paths(server):
    """GET /healthz answers 200 when ready; other paths answer 404 naming /ws."""
    url = f"http://127.0.0.1:{server.port}"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/healthz", timeout=5).read())
    assert body == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/nope", timeout=5))
    assert err.value.code == 404 and b"/ws" in err.value.read()


async def test_a_running_server_keeps_its_start_up_objects_out_of_the_collectors_reach(start_server, engine):
    """Once listening, what start-up left alive is frozen (full collections do not walk it) and young collections are
    rarer; shutdown puts the collector back as it was."""
    import gc

    from assistant.collector import YOUNG_COLLECTION_THRESHOLD

    before = gc.get_threshold()
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    assert gc.get_freeze_count() > 10_000  # the modules and the app, at least
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    await server.shutdown(grace_s=0)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


async def test_a_shutdown_cancelled_midway_still_puts_the_collector_back(start_server, connect_client, tmp_path):
    """Cancelled while it waits for a running reply, shutdown still undoes the server's collector tuning
    (the process outlives the server: tests, or an application embedding it)."""
    import gc

    before = gc.get_threshold()
    engine = ScriptedDialogue(script=words(1000), delay_s=0.02)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await start_a_reply(client)
        shutting = asyncio.create_task(server.shutdown(grace_s=30))
        await asyncio.sleep(0.1)  # draining: the reply has 20 s to go
        assert gc.get_freeze_count() > 10_000
        shutting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await shutting
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    await server.app.drain(0)  # what the cancelled shutdown left to do
    await server.app.stop()


def test_the_server_runs_on_the_event_loop_its_config_names(tmp_path, monkeypatch):
    """uvloop by default, Python's asyncio loop with `[server] event_loop = "asyncio"`; uvloop named but not
    installed is a config error saying what to do."""
    import uvloop

    async def running_loop() -> type:
        return type(asyncio.get_running_loop())

    assert issubclass(run_on_server_loop(running_loop(), make_config(tmp_path)), uvloop.Loop)
    on_asyncio = run_on_server_loop(running_loop(), make_config(tmp_path, server={"event_loop": "asyncio"}))
    assert issubclass(on_asyncio, asyncio.BaseEventLoop) and not issubclass(on_asyncio, uvloop.Loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    unstarted = running_loop()
    with pytest.raises(ConfigError, match='event_loop = "asyncio"'):
        run_on_server_loop(unstarted, make_config(tmp_path))
    unstarted.close()


async def test_the_tests_serve_on_uvloop_as_assistant_serve_does(server):
    """The suite's async tests (and the servers they start) run on uvloop, the default `[server] event_loop`."""
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop) and server.app.config.server.event_loop == "uvloop"


async def test_resume_after_restart_keeps_history_and_the_model_sees_it(start_server, connect_client, tmp_path):
    """Stop the server, start it again, resume: history holds earlier turns and the engine receives them."""
    config = make_config(tmp_path)
    first_engine = ScriptedDialogue()
    server = await start_server(config, plugins=(FakeEnginesPlugin(first_engine),))
    async with connect_client(server) as client:
        conversation_id = (await client.start())["conversation_id"]
        last_seq = (await client.say("my name is Ada"))[-1]["seq"]
    await server.shutdown()
    assert first_engine.closed

    second_engine = ScriptedDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(second_engine),))
    async with connect_client(server) as client:
        started = await client.start(conversation_id)
        assert started["resumed"] is True and started["seq"] == last_seq
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert [(t["role"], t["content"][0]["text"]) for t in turns] == [
            ("user", "my name is Ada"), ("assistant", "You said: my name is Ada")]
        assert (await client.say("what is my name?"))[0]["seq"] == last_seq + 1, "numbering goes on after a restart"
    seen = [(m.role, m.content) for m in second_engine.requests[0].messages]
    assert seen[1:] == [("user", "my name is Ada"), ("assistant", "You said: my name is Ada"), ("user", "what is my name?")]
    assert seen[0][0] == "system"


async def test_shutdown_lets_replies_finish_within_grace(start_server, connect_client, tmp_path):
    """On shutdown a reply that ends within the grace period completes and is stored completed."""
    engine = ScriptedDialogue(script=words(10), delay_s=0.02)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await start_a_reply(client)
        shutting = asyncio.create_task(server.shutdown(grace_s=10))
        done = (await client.recv_until("response.done"))[-1]
        await shutting
    assert done["status"] == "completed" and done["text"] == "".join(f" w{i}" for i in range(10))


class RefusingEngine(ScriptedDialogue):
    """Raises EngineError with a given code."""

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def generate(self, request, emit, cancelled):
        from assistant import EngineError

        raise EngineError("cannot do that", code=self.code)


@pytest.mark.parametrize(("code", "expected"), [("too_large", "too_large"), ("made-up", "internal")])
async def test_engine_error_codes_reach_the_client_and_unknown_codes_become_internal(start_server, connect_client, code, expected):
    """An EngineError fails the turn with its code (an unknown code is reported as internal) and is stored."""
    server = await start_server(plugins=(FakeEnginesPlugin(RefusingEngine(code)),))
    async with connect_client(server) as client:
        await client.start()
        done = (await client.say("x"))[-1]
        assert done["status"] == "failed" and done["error"] == {"code": expected, "message": "cannot do that"}
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"][-1]["status"] == "failed"


async def test_no_dialogue_engine_configured_answers_unavailable(start_server, connect_client, tmp_path):
    """With [engines] dialogue empty, a turn answers `unavailable` and stores nothing."""
    server = await start_server(make_config(tmp_path, engines={"dialogue": ""}))
    async with connect_client(server) as client:
        started = await client.start()
        assert started["capabilities"]["dialogue"] is None
        await client.send({"type": "turn.create", "event_id": "t", "content": [{"type": "text", "text": "hi"}]})
        error = await client.recv()
        assert error["code"] == "unavailable" and error["ref"] == "t" and "[engines] dialogue" in error["message"]
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []


async def test_turns_queued_past_the_cap_are_rate_limited(start_server, connect_client, tmp_path):
    """A connection with max_queued_turns turns waiting gets rate_limited for the next; the queued ones complete in order."""
    gate = threading.Event()
    server = await start_server(make_config(tmp_path, server={"max_queued_turns": 2}), plugins=(FakeEnginesPlugin(ScriptedDialogue(gate=gate)),))
    async with connect_client(server) as client:
        await client.start()
        for i in range(3):
            await client.send({"type": "turn.create", "event_id": f"t{i}", "content": [{"type": "text", "text": f"n{i}"}]})
        events = await client.recv_until("error")
        assert events[-1]["code"] == "rate_limited" and events[-1]["ref"] == "t2"
        gate.set()
        first = (await client.recv_until("response.done"))[-1]
        second = (await client.recv_until("response.done"))[-1]
        assert (first["text"], second["text"]) == ("You said: n0", "You said: n1")


async def test_shutdown_refuses_queued_turns_and_cancels_the_running_one(start_server, connect_client, tmp_path):
    """Past the grace period the running reply is cancelled and stored; a queued turn answers unavailable, unstored."""
    engine = ScriptedDialogue(script=words(1000), delay_s=0.02)
    config = make_config(tmp_path)
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        conversation_id = await start_a_reply(client, "first")
        await client.send({"type": "turn.create", "event_id": "queued", "content": [{"type": "text", "text": "second"}]})
        await asyncio.sleep(0.05)
        shutting = asyncio.create_task(server.shutdown(grace_s=0.2))
        done = (await client.recv_until("response.done"))[-1]
        refused = (await client.recv_until("error"))[-1]
        await shutting
    assert done["status"] == "cancelled"
    assert refused["code"] == "unavailable" and refused["ref"] == "queued"
    from assistant.store import Store

    store = Store(config.database_url)
    turns = store.history(conversation_id)
    store.close()
    assert [(t.role, t.status) for t in turns] == [("user", "completed"), ("assistant", "cancelled")]
    assert turns[1].text == done["text"]


async def test_history_turns_limits_the_context_but_keeps_the_new_message(start_server, connect_client, tmp_path):
    """[dialogue] history_turns bounds the stored turns the engine sees; 0 still sends the new message."""
    for limit, expected in ((0, ["third"]), (3, ["You said: first", "second", "You said: second", "third"][-3:])):
        engine = ScriptedDialogue()
        config = make_config(tmp_path / str(limit), dialogue={"history_turns": limit, "system_prompt": ""})
        server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
        async with connect_client(server) as client:
            await client.start()
            for text in ("first", "second", "third"):
                await client.say(text)
        assert [m.content for m in engine.requests[-1].messages] == expected


async def test_a_store_failure_answers_internal_and_keeps_the_connection(server, connect_client, monkeypatch):
    """If the store fails while handling an event, the client gets `internal` and the connection goes on."""
    async with connect_client(server) as client:
        await client.start()
        original = server.app.store.store.history_page

        def broken(*args, **kwargs):
            raise OSError("disk on fire")

        monkeypatch.setattr(server.app.store.store, "history_page", broken)
        await client.send({"type": "conversation.get", "event_id": "g"})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "internal" and error["ref"] == "g"
        monkeypatch.setattr(server.app.store.store, "history_page", original)
        assert (await client.say("still fine"))[-1]["status"] == "completed"


async def test_writes_in_one_event_loop_step_go_out_in_one_send():
    """The websocket's transport gathers what one step writes into one send, in order; close sends what is kept first."""
    from assistant.server import _CorkedTransport

    class Recording:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def get_write_buffer_size(self) -> int:
            return 0

    real = Recording()
    corked = _CorkedTransport(real)  # type: ignore[arg-type]
    corked.write(b"one")
    corked.write(b"two")
    assert real.writes == [] and corked.get_write_buffer_size() == 6
    await asyncio.sleep(0)
    assert real.writes == [b"onetwo"]
    corked.write(b"three")
    corked.close()
    assert real.writes == [b"onetwo", b"three"] and real.closed
