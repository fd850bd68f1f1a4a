"""The remote engines: a gateway node with no model answers through node A's `/v1` (our own server on loopback).

Node A serves tiny fakes (a dialogue engine that sees images and calls tools, a painter) and the
offline Whisper tiny.en, behind a bearer token. The gateway selects `remote` for dialogue, ASR and
image generation, pointed at node A; clients talk to the gateway's native `/ws`. Failures use a
closed port, node A with a wrong token or model, and a small HTTP server that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from PIL import Image

from assistant import DialogueResult, Usage, audio
from assistant.server import AssistantServer, serve_app
from assistant.testing.media import audio_part, image_part, solid_image
from assistant.testing.server import Client
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, StepPainter, ToolCallingDialogue
from tests.plugins.test_piper_voice import normalized

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "node-a-secret-token"
TOKEN_ENV = "ASSISTANT_TEST_NODE_A_TOKEN"
CAPITAL = (REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav").read_bytes()


class NodeDialogue(ToolCallingDialogue):
    """Node A's engine: sees images, calls tools, echoes; `hold N` streams N words and waits on `release` halfway,
    `endless` streams until cancelled. It records whether a cancel reached it."""

    def __init__(self) -> None:
        super().__init__(engine_id="fake:node-a", accepts_images=True)
        self.release = threading.Event()
        self.saw_cancel = threading.Event()

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """`hold N` / `endless` as above; anything else as ToolCallingDialogue."""
        words = request.messages[-1].content.split()
        if not words or words[0] not in ("hold", "endless"):
            return super().generate(request, emit, cancelled)
        self.requests.append(request)
        count = int(words[1]) if words[0] == "hold" else 3000
        for index in range(count):
            if cancelled.is_set():
                self.saw_cancel.set()
                return DialogueResult("", Usage(1, index), "cancelled")
            emit(f"w{index} ")
            if words[0] == "hold" and index == count // 2:
                self.release.wait(timeout=30)
            if words[0] == "endless":
                time.sleep(0.01)
        return DialogueResult("", Usage(1, count), "stop")


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    return f"sunny in {city}"


def remote_table(base_url: str, **dialogue: Any) -> dict[str, Any]:
    """`[plugins.remote_engines]` pointing every role at `base_url`, the token from the environment, no retries."""
    return {
        "base_url": base_url, "api_key_env": TOKEN_ENV, "max_retries": 0, "timeout_s": 30,
        "dialogue": {"model": "dialogue", "accepts_images": True, "accepts_tools": True, **dialogue},
        "asr": {"model": "asr", "response_format": "verbose_json"},
        "image_generator": {"model": "image_generator"},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node_a(tmp_path_factory) -> AsyncIterator[tuple[AssistantServer, NodeDialogue]]:
    """Node A: fakes plus Whisper tiny.en behind a bearer token."""
    engine = NodeDialogue()
    config = make_config(
        tmp_path_factory.mktemp("node-a"), engines={"asr": "faster_whisper", "image_generator": "fake"},
        auth={"tokens": [{"principal": "gateway", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]},
    )
    server = await serve_app(config, (FakeEnginesPlugin(engine, painter=StepPainter(steps=2)),))
    yield server, engine
    await server.shutdown(grace_s=0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(node_a, tmp_path_factory) -> AsyncIterator[AssistantServer]:
    """The gateway: every role `remote` on node A's /v1, a local tool, no model of its own."""
    os.environ[TOKEN_ENV] = TOKEN
    server_a, _ = node_a
    config = make_config(
        tmp_path_factory.mktemp("gateway"), engines={"dialogue": "remote", "asr": "remote", "image_generator": "remote"},
        plugins={"deny": ["rapid_ocr", "clip_image", "imagenet_labels", "builtin_tools"],
                 "remote_engines": remote_table(f"http://127.0.0.1:{server_a.port}/v1")},
    )
    server = await serve_app(config, (FakeEnginesPlugin(None, tools=[get_weather]),))
    yield server
    await server.shutdown(grace_s=0)


@contextlib.asynccontextmanager
async def connected(server: AssistantServer) -> AsyncIterator[Client]:
    """A started native session on `server`."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        client = Client(ws)
        await client.start()
        yield client


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


async def test_the_gateway_holds_no_model_and_names_the_remote_ones(gateway):
    """Every engine of the gateway is a remote one (async calls, no worker thread), named after node A's model."""
    engines = gateway.app.engines
    assert {role: engine.id for role, engine in engines.items()} == {
        "dialogue": "remote:dialogue", "asr": "remote:asr", "image_generator": "remote:image_generator"}
    assert all(type(engine).__module__.startswith("assistant_plugins.remote_engines") for engine in engines.values())


async def test_a_reply_streams_through_the_gateway_as_node_a_makes_it(gateway, node_a):
    """Deltas reach the gateway's client while node A's engine is still generating (it waits halfway until the test has them)."""
    _, engine = node_a
    engine.release.clear()
    async with connected(gateway) as client:
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "hold 10"}]})
        seen = ""
        while "w5 " not in seen:  # node A emitted w0..w5 and now waits for `release`
            event = await client.recv()
            assert event["type"] != "response.done", event
            seen += event.get("delta", "") if event["type"] == "response.text.delta" else ""
        engine.release.set()
        done = (await client.recv_until("response.done"))[-1]
    assert done["status"] == "completed" and done["text"] == "".join(f"w{i} " for i in range(10))
    assert done["usage"]["completion_tokens"] == 10


async def test_generation_options_and_history_reach_node_a(gateway, node_a):
    """A turn's options arrive as node A's max_tokens, temperature and top_p; the gateway's stored history is sent along."""
    _, engine = node_a
    async with connected(gateway) as client:
        await client.say("first")
        done = (await client.say("second", options={"max_new_tokens": 7, "temperature": 0.25, "top_p": 0.5}))[-1]
    assert done["status"] == "completed" and done["text"] == "You said: second"
    request = engine.requests[-1]
    assert (request.options.max_new_tokens, request.options.temperature, request.options.top_p) == (7, 0.25, 0.5)
    assert [(m.role, m.content) for m in request.messages[1:]] == [("user", "first"), ("assistant", "You said: first"), ("user", "second")]


async def test_an_image_reaches_node_a_engine_as_pixels(gateway, node_a):
    """An image part is sent to node A as a data URL and reaches its engine with its size and colour."""
    _, engine = node_a
    async with connected(gateway) as client:
        events = await client.say_parts([{"type": "text", "text": "what colour is this"}, image_part(solid_image("blue", (24, 16)))])
    assert events[-1]["status"] == "completed"
    last = engine.requests[-1].messages[-1]
    assert last.role == "user" and last.content == "what colour is this" and len(last.images) == 1
    image = last.images[0]
    assert image.size == (24, 16) and image.getpixel((3, 3)) == (0, 0, 255)


async def test_a_tool_call_runs_on_the_gateway_and_node_a_reads_its_result(gateway, node_a):
    """Node A's model calls the gateway's tool; the gateway runs it and the model's next round sees the result."""
    _, engine = node_a
    async with connected(gateway) as client:
        events = await client.say('use get_weather {"city": "Paris"}')
    [call], [result] = of_type(events, "tool.call"), of_type(events, "tool.result")
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert result["status"] == "ok" and result["call_id"] == call["call_id"]
    done = events[-1]
    assert done["status"] == "completed" and "sunny in Paris" in done["text"]
    offered = engine.requests[-2]
    assert [tool.name for tool in offered.tools] == ["get_weather"] and offered.tools[0].parameters["required"] == ["city"]
    answered = engine.requests[-1].messages
    assert answered[-2].role == "assistant" and [c.name for c in answered[-2].tool_calls] == ["get_weather"]
    assert answered[-1].role == "tool" and answered[-1].tool_call_id == answered[-2].tool_calls[0].id
    assert "sunny in Paris" in answered[-1].content


@pytest.mark.offline_model
async def test_speech_is_transcribed_by_node_a(gateway, node_a):
    """A recorded question sent to the gateway is transcribed by node A's Whisper; node A's engine then answers the words."""
    _, engine = node_a
    async with connected(gateway) as client:
        events = await client.say_parts([audio_part(audio.decode(CAPITAL, "wav"))])
    done = events[-1]
    assert done["status"] == "completed"
    assert normalized(engine.requests[-1].messages[-1].content) == "what is the capital of france"
    transcribed = await gateway.app.engines["asr"].transcribe_async(audio.decode(CAPITAL, "wav"), "en")
    assert transcribed.language == "en" and transcribed.duration_s == pytest.approx(1.776, abs=0.01) and transcribed.segments


async def test_an_image_is_painted_by_node_a(gateway):
    """image.generate on the gateway is painted by node A's generator and arrives as a PNG of the asked size."""
    async with connected(gateway) as client:
        await client.send({"type": "image.generate", "prompt": "a red square", "width": 32, "height": 24})
        events = await client.recv_until("image.done")
    done = events[-1]
    assert done["status"] == "completed" and done["mime"] == "image/png"
    image = Image.open(io.BytesIO(base64.b64decode(done["data"])))
    assert image.size == (32, 24) and image.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert of_type(events, "image.progress")[-1]["step"] == of_type(events, "image.started")[0]["steps"]


async def test_cancelling_a_reply_stops_node_a_engine(gateway, node_a):
    """response.cancel on the gateway closes its stream to node A, whose engine then stops."""
    _, engine = node_a
    engine.saw_cancel.clear()
    async with connected(gateway) as client:
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "endless"}]})
        events = await client.recv_until("response.text.delta")
        response_id = of_type(events, "response.created")[0]["response_id"]
        await client.send({"type": "response.cancel", "response_id": response_id})
        done = (await client.recv_until("response.done"))[-1]
        assert done["status"] == "cancelled"
        assert await asyncio.to_thread(engine.saw_cancel.wait, 20)
        after = await client.say("still there?")
    assert after[-1]["text"] == "You said: still there?"


async def test_a_client_leaving_the_gateways_v1_stops_node_a_engine(gateway, node_a):
    """A streaming /v1 client of the gateway that goes away mid-stream stops node A's engine too."""
    _, engine = node_a
    engine.saw_cancel.clear()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "endless"}], stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await client.close()
    assert await asyncio.to_thread(engine.saw_cancel.wait, 20)
    assert gateway.app.scheduler.in_flight(gateway.app.engines["dialogue"]) == 0


# --- failures -----------------------------------------------------------------------------------------------


class Misbehaving:
    """An HTTP server that answers every request the way its `model` field asks: `http500`, `hang`, `garbage`
    (a stream line that is not JSON), `broken` (an error event mid-stream)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
            model = json.loads(await reader.readexactly(length)).get("model") if length else None
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
            if model == "hang":
                await reader.read()  # until the client gives up
                return
            if model == "http500":
                body = json.dumps({"error": {"message": "the GPU fell over", "type": "server_error"}}).encode()
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
            else:
                tail = b"data: {not json\n\n" if model == "garbage" else b'data: {"error": {"message": "out of memory"}}\n\n'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                             + b"data: " + json.dumps(chunk).encode() + b"\n\n" + tail)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def misbehaving() -> AsyncIterator[Misbehaving]:
    """The misbehaving server, for the module."""
    server = Misbehaving()
    await server.start()
    yield server
    await server.stop()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAILURES = {
    # case: (where the gateway points, dialogue overrides, code, words of the message)
    "remote down": ("closed", {}, "unavailable", "cannot be reached (connection refused)"),
    "wrong token": ("node_a", {"api_key": "not-the-token"}, "unavailable", "refused this server's credentials (HTTP 401)"),
    "unknown model": ("node_a", {"model": "gpt-17"}, "unavailable", "has no model 'gpt-17' (HTTP 404"),
    "server error": ("misbehaving", {"model": "http500"}, "unavailable", "failed (HTTP 500: the GPU fell over)"),
    "timeout": ("misbehaving", {"model": "hang", "timeout_s": 0.5}, "unavailable", "did not answer within 0.5 s"),
    "malformed stream": ("misbehaving", {"model": "garbage"}, "internal", "sent a malformed response (JSONDecodeError"),
    "error mid-stream": ("misbehaving", {"model": "broken"}, "unavailable", "failed while answering: out of memory"),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_a_remote_failure_fails_the_reply_clearly_and_the_gateway_stays_up(case, node_a, misbehaving, tmp_path):
    """Each way node A can fail is a failed reply with a clear error on the wire, stored as failed; the next turn is answered too."""
    where, dialogue, code, words = FAILURES[case]
    port = {"closed": closed_port(), "node_a": node_a[0].port, "misbehaving": misbehaving.port}[where]
    os.environ[TOKEN_ENV] = TOKEN
    config = make_config(tmp_path, engines={"dialogue": "remote"},
                         plugins={"remote_engines": remote_table(f"http://127.0.0.1:{port}/v1", **dialogue)})
    server = await serve_app(config)
    try:
        async with connected(server) as client:
            for attempt in ("first", "second"):
                done = (await client.say(attempt))[-1]
                assert done["status"] == "failed" and done["error"]["code"] == code, done
                assert words in done["error"]["message"], done["error"]["message"]
                assert f"127.0.0.1:{port}" not in done["error"]["message"]  # the address stays in the log
            await client.send({"type": "conversation.get"})
            turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert [t["status"] for t in turns] == ["completed", "failed", "completed", "failed"]
        assert words in turns[1]["error"]
    finally:
        await server.shutdown(grace_s=0)


async def test_speech_and_painting_fail_clearly_when_the_remote_is_down(tmp_path):
    """With the server unreachable, an audio turn is an `error` event and an image job ends failed, both naming the cause."""
    os.environ[TOKEN_ENV] = TOKEN
    config = make_config(tmp_path, engines={"dialogue": "remote", "asr": "remote", "image_generator": "remote"},
                         plugins={"remote_engines": remote_table(f"http://127.0.0.1:{closed_port()}/v1")})
    server = await serve_app(config)
    try:
        async with connected(server) as client:
            await client.send({"type": "turn.create", "content": [audio_part(audio.decode(CAPITAL, "wav"))]})
            error = await client.recv()
            while error["type"] != "error":
                error = await client.recv()
            assert error["code"] == "unavailable" and "the remote asr engine cannot be reached (connection refused)" in error["message"]
            await client.send({"type": "image.generate", "prompt": "a red square"})
            done = (await client.recv_until("image.done"))[-1]
            assert done["status"] == "failed" and "the remote image_generator engine cannot be reached" in done["error"]["message"]
    finally:
        await server.shutdown(grace_s=0)


@pytest.mark.offline_model
async def test_the_blocking_forms_work_beside_the_server_loop(gateway):
    """generate and transcribe called from a thread (scripts, the conformance kit) use a loop and client of their own."""
    from assistant import ChatMessage, DialogueRequest

    deltas: list[str] = []
    engines = gateway.app.engines
    request = DialogueRequest([ChatMessage("user", "hello from a thread")])
    result = await asyncio.to_thread(engines["dialogue"].generate, request, deltas.append, threading.Event())
    assert result.text == "You said: hello from a thread" == "".join(deltas) and result.finish_reason == "stop"
    transcript = await asyncio.to_thread(engines["asr"].transcribe, audio.decode(CAPITAL, "wav"), "en")
    assert normalized(transcript.text) == "what is the capital of france"


# --- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "words"), [
    ({"dialogue": {"model": "m"}}, "[plugins.remote_engines] base_url (or dialogue.base_url)"),
    ({"base_url": "http://127.0.0.1:9/v1"}, "[plugins.remote_engines] dialogue.model"),
    ({"base_url": "http://127.0.0.1:9/v1", "api_key_env": "ASSISTANT_TEST_UNSET_VARIABLE", "dialogue": {"model": "m"}},
     "the environment variable ASSISTANT_TEST_UNSET_VARIABLE is not set"),
])
async def test_a_missing_setting_stops_startup_naming_the_key(table, words, tmp_path):
    """A remote engine with no server, no model or an unset token variable refuses to start, naming the key."""
    from assistant.config import ConfigError

    config = make_config(tmp_path, engines={"dialogue": "remote"}, plugins={"remote_engines": table})
    with pytest.raises(ConfigError, match=re.escape(words)):
        await serve_app(config)


async def test_without_the_client_library_the_error_names_the_extra(monkeypatch):
    """With the `openai` package missing, choosing a remote engine says which extra installs it, in one line."""
    from assistant.config import ConfigError
    from assistant_plugins.remote_engines.client import open_client
    from assistant_plugins.remote_engines.settings import Endpoint

    monkeypatch.setitem(__import__("sys").modules, "openai", None)
    with pytest.raises(ConfigError) as refused:
        open_client(Endpoint("dialogue", "http://127.0.0.1:9/v1", "k", "m", 1.0, 0, 1))
    assert str(refused.value) == "the remote dialogue engine needs the openai package: pip install 'selfhosted-assistant[remote]'"


async def test_streamed_tool_call_fragments_are_put_together():
    """Tool calls streamed in fragments by index become whole ToolCalls; broken arguments come back unparsed."""
    from types import SimpleNamespace as NS

    from assistant_plugins.remote_engines.dialogue import StreamedReply

    def chunk(index, id=None, name=None, arguments=None, finish=None):
        call = NS(index=index, id=id, function=NS(name=name, arguments=arguments))
        return NS(usage=None, choices=[NS(delta=NS(content=None, tool_calls=[call]), finish_reason=finish)])

    reply = StreamedReply(lambda delta: None)
    for part in (chunk(0, "a", "get_weather", '{"ci'), chunk(1, "b", "lookup", "{not"), chunk(0, arguments='ty": "Oslo"}'),
                 chunk(1, arguments=" json", finish="tool_calls")):
        reply.add(part)
    result = reply.result()
    assert result.finish_reason == "tool_calls" and result.tool_calls[0].arguments == {"city": "Oslo"}
    assert result.tool_calls[0].id == "a" and result.tool_calls[1].name == ""
    assert json.loads(result.tool_calls[1].arguments["_unparsed"]) == {"name": "lookup", "arguments": "{not json"}
