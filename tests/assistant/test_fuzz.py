"""Protocol fuzzing with hypothesis: thousands of random and mutated client events against a live server.

Every frame the server sends must parse as a valid server event, the server must never close the
connection with 1011 (an unexpected error), and the server must answer /healthz at the end. Besides
mutated and random events: deeply nested JSON, lone surrogates anywhere, and oversized fields. The engines are instant
fakes (dialogue and ASR) so that valid turns run end to end, audio included.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from assistant import AsrEngine, Capabilities, Transcript, hookimpl
from assistant.dialects.native.protocol import parse_server_event
from assistant.server import serve_app
from tests import images
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

EXAMPLES = 1700  # per strategy; six strategies: 10,200 events
COUNTS = {"events": 0, "answers": 0}
CLOSES: list[int | None] = []  # close codes of connections the server closed (1009 is expected for a frame too large)
INTERNAL: list[str] = []  # `internal` errors: valid events, but each one is a server bug the fuzzer found


class InstantAsr(AsrEngine):
    id = "fake:instant-asr"
    capabilities = Capabilities()

    def transcribe(self, samples, language=None):
        return Transcript("fuzzed speech", "en", len(samples) / 16000)


class Plugin(FakeEnginesPlugin):
    @hookimpl
    def register_engines(self, register):
        """Instant dialogue and ASR."""
        register("dialogue", "fake", lambda app: self.engine)
        register("asr", "instant", lambda app: InstantAsr())


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """A server on its own event loop thread, for synchronous hypothesis tests."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = make_config(
        tmp, engines={"asr": "instant"}, limits={"turns_per_minute": 1_000_000, "conversations_per_minute": 1_000_000},
        server={"max_queued_turns": 64, "max_frame_bytes": 4 * 1024 * 1024},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(serve_app(config, (Plugin(ScriptedDialogue()),)), loop).result(120)
    yield server
    asyncio.run_coroutine_threadsafe(server.shutdown(grace_s=5), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    print(f"\nfuzz: {COUNTS['events']} events sent, {COUNTS['answers']} server events received, all valid; "
          f"connections closed by the server: {len(CLOSES)} (codes {sorted(set(CLOSES), key=str)}), with 1011: {CLOSES.count(1011)}")


class Connection:
    """The fuzzing connection; when the server closes it, the close code is recorded and a new one opened."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.socket = connect(self.url, max_size=None).__enter__()

    def send(self, frame: str | bytes) -> None:
        self.socket.send(frame)

    def recv(self, timeout: float) -> str | bytes:
        return self.socket.recv(timeout=timeout)

    def reopen(self, closed: ConnectionClosed) -> None:
        CLOSES.append(closed.rcvd.code if closed.rcvd is not None else None)
        self.socket.close()
        self.socket = connect(self.url, max_size=None).__enter__()


@pytest.fixture(scope="module")
def ws(live_server):
    connection = Connection(live_server.port)
    yield connection
    connection.socket.close()


_sync = iter(range(10**9))


def exchange(ws, frame: str | bytes) -> None:
    """Send one fuzzed frame, then a marker that always answers an error; every frame until it must be valid."""
    marker = f"sync-{next(_sync)}"
    COUNTS["events"] += 1
    try:
        ws.send(frame)
        ws.send(json.dumps({"type": "response.cancel", "event_id": marker, "response_id": "nothing"}))
        _answers(ws, frame, marker)
    except ConnectionClosed as closed:
        ws.reopen(closed)
        assert CLOSES[-1] != 1011, f"{frame!r:.200} closed the connection with 1011"


def _answers(ws, frame: str | bytes, marker: str) -> None:
    while True:
        raw = ws.recv(timeout=30)
        event = parse_server_event(raw)  # raises if the server sent anything invalid
        COUNTS["answers"] += 1
        if event.type == "error" and event.code == "internal":
            INTERNAL.append(f"{frame!r:.200} -> {event.message}")
        if event.type == "error" and getattr(event, "ref", None) == marker:
            return


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
TYPES = [
    "session.start", "turn.create", "audio.append", "audio.commit", "audio.clear", "response.cancel", "image.generate",
    "image.cancel", "conversation.get", "conversation.search",
]
PCM = base64.b64encode(b"\x00\x10" * 1600).decode()
TEMPLATES = [
    {"type": "session.start", "event_id": "e", "sample_rate": 16000, "vad": False, "language": "en"},
    {"type": "turn.create", "event_id": "e", "content": [{"type": "text", "text": "hello"}], "options": {"max_new_tokens": 5}},
    {"type": "turn.create", "content": [{"type": "image", "data": base64.b64encode(images.solid("red", (8, 8))).decode(), "mime": "image/png"},
                                        {"type": "text", "text": "what?"}]},
    {"type": "turn.create", "content": [{"type": "audio", "format": "pcm16", "data": PCM, "sample_rate": 16000}]},
    {"type": "turn.create", "content": [{"type": "audio", "format": "wav", "data": base64.b64encode(b"RIFF....WAVEfmt ").decode()}]},
    {"type": "audio.append", "data": PCM}, {"type": "audio.commit"}, {"type": "audio.clear"},
    {"type": "response.cancel", "response_id": "r"}, {"type": "image.generate", "prompt": "a cat", "steps": 2, "seed": 1},
    {"type": "image.cancel", "job_id": "j"}, {"type": "conversation.get"}, {"type": "conversation.search", "query": "cat", "limit": 3},
]


@st.composite
def mutated_events(draw) -> str:
    """A valid event with one to three mutations: a field dropped, replaced by any JSON, added, or the type changed."""
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "retype", "nest"]))
        keys = list(event)
        if action == "drop" and keys:
            event.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            event[draw(st.sampled_from(keys))] = draw(JSON)
        elif action == "add":
            event[draw(st.text(max_size=10))] = draw(JSON)
        elif action == "retype":
            event["type"] = draw(st.sampled_from(TYPES) | st.text(max_size=20))
        elif action == "nest" and isinstance(event.get("content"), list) and event["content"]:
            part = event["content"][0]
            if isinstance(part, dict) and part:
                part[draw(st.sampled_from(list(part)))] = draw(JSON)
    return json.dumps(event)


@st.composite
def nested_events(draw) -> str:
    """JSON nested 1 to 100,000 levels deep, alone or as a field of an event."""
    depth = draw(st.integers(1, 100_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + draw(st.sampled_from(["1", "null", '"x"'])) + closer * depth
    where = draw(st.sampled_from(["alone", "content", "options", "event_id", "extra"]))
    if where == "alone":
        return nested
    return '{"type": "turn.create", "' + where + '": ' + nested + "}"


SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@st.composite
def surrogate_events(draw) -> str:
    """A valid event with a lone surrogate put into one of its strings (or a key), as JSON escapes."""
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    bad = draw(st.text(max_size=5)) + draw(SURROGATE) + draw(st.text(max_size=5))
    where = draw(st.sampled_from(["event_id", "type", "key", "text", "mime", "query"]))
    if where == "key":
        event[bad] = 1
    elif where == "text" and isinstance(event.get("content"), list):
        event["content"].append({"type": "text", "text": bad})
    else:
        event[where] = bad
    return json.dumps(event)  # ensure_ascii: the surrogate travels as a \udXXX escape


@st.composite
def oversize_events(draw) -> str:
    """Fields far past their limits: event_id, ids, text, base64 data, parts, numbers (frames up to about 1 MB)."""
    size = draw(st.sampled_from([201, 1000, 65_536, 300_000, 1_000_000]))
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    where = draw(st.sampled_from(["event_id", "conversation_id", "text", "data", "parts", "number", "query", "prompt"]))
    if where == "parts":
        event = {"type": "turn.create", "content": [{"type": "text", "text": "x"}] * draw(st.integers(65, 5000))}
    elif where == "number":
        event[draw(st.sampled_from(["sample_rate", "last_seq", "steps", "seed", "limit"]))] = draw(st.sampled_from([10**400, -(10**30), 1e308]))
    elif where in ("text", "data"):
        event = {"type": "turn.create", "content": [{"type": "text", "text": "a" * size}] if where == "text" else
                 [{"type": "image", "data": "A" * (size - size % 4)}]}
    else:
        event[where] = "x" * size
    return json.dumps(event)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(frame=mutated_events())
def test_mutated_valid_events(ws, frame):
    """Valid events with fields dropped, replaced, added or retyped: only valid answers."""
    exchange(ws, frame)


@FUZZ
@given(value=st.dictionaries(st.sampled_from(["type", "event_id", "content", "data", "query", "prompt"]) | st.text(max_size=8), JSON, max_size=6)
       .map(lambda d: {**d, "type": d.get("type")}) | JSON)
def test_random_json(ws, value):
    """Arbitrary JSON values and objects (with or without a type): only valid answers."""
    exchange(ws, json.dumps(value))


@FUZZ
@given(frame=st.text(max_size=200) | st.binary(max_size=3000))
def test_random_text_and_binary_frames(ws, frame):
    """Arbitrary text frames (mostly not JSON) and binary frames (streamed audio): only valid answers."""
    exchange(ws, frame)


@FUZZ
@given(frame=nested_events())
def test_deeply_nested_json(ws, frame):
    """JSON nested up to 100,000 levels: bad_request, never a closed connection."""
    exchange(ws, frame)


@FUZZ
@given(frame=surrogate_events())
def test_lone_surrogates(ws, frame):
    """Lone surrogates in any string or key: bad_request, never internal or a closed connection."""
    exchange(ws, frame)


@FUZZ
@given(frame=oversize_events())
def test_oversized_fields(ws, frame):
    """Fields far past their limits: an error with a short ref, never a closed connection."""
    exchange(ws, frame)


def test_the_server_is_still_healthy(live_server, ws):
    """After the fuzzing, no event caused an internal error or a 1011 close, the server answers /healthz and a normal turn on the same connection."""
    assert INTERNAL == []
    assert COUNTS["events"] >= 10_000 and CLOSES.count(1011) == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{live_server.port}/healthz", timeout=10) as response:
        assert response.status == 200
    ws.send(json.dumps({"type": "session.start"}))
    while parse_server_event(ws.recv(timeout=30)).type != "session.started":
        pass
    ws.send(json.dumps({"type": "turn.create", "content": [{"type": "text", "text": "still there?"}]}))
    while (event := parse_server_event(ws.recv(timeout=30))).type != "response.done":
        pass
    assert event.status == "completed" and event.text == "You said: still there?"
