"""The Realtime API at /v1/realtime against a real server: the `openai` SDK's client, raw websockets, fake engines."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.assistant.dialects.openai_realtime.realtime import check_lifecycle, open_realtime, validate
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue

WEATHER = {
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@contextlib.asynccontextmanager
async def sdk(port: int, token: str = "sk-test") -> AsyncIterator[Any]:
    """The SDK's realtime connection to our server."""
    client = AsyncOpenAI(api_key=token, base_url=f"http://127.0.0.1:{port}/v1", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    async with client.realtime.connect(model="assistant-test") as connection:
        yield connection


async def until(connection: Any, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """Receive (and validate) the SDK connection's raw events up to the first of `kind`, keeping them in `seen`."""
    while True:
        event = validate(json.loads(await asyncio.wait_for(connection.recv_bytes(), 60)))
        seen.append(event)
        if event["type"] == kind:
            return event
        assert event["type"] != "error", f"unexpected error while waiting for {kind}: {event}"


def text_item(text: str, role: str = "user") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


async def test_a_text_response_through_the_sdk(start_server):
    """The SDK connects, sets instructions and text output, adds a user item and gets a streamed text response, every event valid."""
    engine = ScriptedDialogue()
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    seen: list[dict[str, Any]] = []
    async with sdk(server.port) as connection:
        created = await until(connection, "session.created", seen)
        assert created["session"]["type"] == "realtime" and created["session"]["output_modalities"] == ["text"]
        await connection.session.update(session={"type": "realtime", "instructions": "Be terse.", "output_modalities": ["text"]})
        updated = await until(connection, "session.updated", seen)
        assert updated["session"]["instructions"] == "Be terse."
        await connection.conversation.item.create(item=text_item("hello there"))
        await until(connection, "conversation.item.done", seen)
        await connection.response.create()
        done = await until(connection, "response.done", seen)
    check_lifecycle(seen)
    kinds = [e["type"] for e in seen]
    assert 1 <= kinds.count("response.output_text.delta") <= 4  # four engine deltas; those that piled up go out joined
    assert done["response"]["status"] == "completed" and done["response"]["usage"]["output_tokens"] == 4
    assert done["response"]["output"][0]["content"][0]["text"] == "You said: hello there"
    assert next(e for e in seen if e["type"] == "response.output_text.done")["text"] == "You said: hello there"
    messages = engine.requests[0].messages
    assert [(m.role, m.content) for m in messages] == [("system", "Be terse."), ("user", "hello there")]


async def test_a_function_call_round_trip_through_the_sdk(start_server):
    """Tools in session.update; the model calls one (arguments streamed then done); the client sends its output and the model answers from it."""
    engine = ToolCallingDialogue()
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    seen: list[dict[str, Any]] = []
    async with sdk(server.port) as connection:
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]})
        assert (await until(connection, "session.updated", seen))["session"]["tools"][0]["name"] == "get_weather"
        await connection.conversation.item.create(item=text_item('Use get_weather {"city": "Paris"}'))
        await connection.response.create()
        done = await until(connection, "response.done", seen)
        call = done["response"]["output"][0]
        assert call["type"] == "function_call" and call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
        arguments = [e for e in seen if e["type"].startswith("response.function_call_arguments.")]
        assert [e["type"] for e in arguments] == ["response.function_call_arguments.delta", "response.function_call_arguments.done"]
        assert arguments[1]["call_id"] == call["call_id"] and arguments[1]["name"] == "get_weather"
        await connection.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"})
        await until(connection, "conversation.item.done", seen)
        await connection.response.create()
        answer = await until(connection, "response.done", seen)
    check_lifecycle(seen)
    assert answer["response"]["output"][0]["content"][0]["text"] == "The get_weather tool said: sunny, 21 C"
    last = engine.requests[-1].messages
    assert last[-2].role == "assistant" and last[-2].tool_calls[0].arguments == {"city": "Paris"}
    assert last[-1].role == "tool" and last[-1].tool_call_id == call["call_id"] and last[-1].name == "get_weather"


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ('{"type": "session.update", "session": ', "invalid_json", None),
        ({"type": "session.teleport"}, "invalid_event_type", "type"),
        ({"type": "session.update", "session": {"type": "realtime", "instructions": 42}}, "invalid_type", "session.instructions"),
        ({"type": "conversation.item.truncate", "item_id": "x", "content_index": "zero", "audio_end_ms": 0}, "invalid_type", "content_index"),
        ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
        ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
        ({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 8192).decode()}, "too_large", "audio"),
        (
            {"type": "session.update", "session": {"type": "realtime", "tools": [{**WEATHER, "parameters": {"type": "banana"}}]}},
            "invalid_value", "session.tools.0.parameters",
        ),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "system", "content": [{"type": "input_audio"}]}},
         "invalid_value", "item.content.0.type"),
        ({"type": "conversation.item.create", "item": text_item("x") | {"content": [{"type": "input_image", "image_url": "https://x/y.png"}]}},
         "unsupported", "item.content.0.image_url"),
        ({"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 0}, "item_not_found", "item_id"),
        ({"type": "response.cancel"}, "response_cancel_not_active", "response_id"),
        ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
        (b"\x00\x01", "invalid_event", None),
    ],
)
async def test_bad_input_is_an_error_event_and_the_session_goes_on(start_server, tmp_path, frame, code, param):
    """Each bad event gets one `error` in OpenAI's shape (type, code, message, param, event_id); the connection then still answers."""
    config = make_config(tmp_path, speech={"max_buffer_bytes": 4096})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ToolCallingDialogue()),))
    async with open_realtime(server.port) as client:
        if isinstance(frame, dict):
            frame = {**frame, "event_id": "evt_42"}
        await client.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
        error = await client.error()
        assert error["code"] == code and error["param"] == param and error["message"], error
        assert error["type"] == "invalid_request_error" and error["event_id"] == ("evt_42" if isinstance(frame, dict) else None)
        await client.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        await client.send({"type": "conversation.item.create", "item": text_item("still there?")})
        await client.send({"type": "response.create"})
        done = (await client.recv_until("response.done"))[-1]
        assert done["response"]["output"][0]["content"][0]["text"] == "You said: still there?"
    check_lifecycle(client.events)


async def test_audio_input_without_an_asr_engine_is_unavailable(server):
    """Appending audio with no ASR engine configured is an error naming what is missing."""
    async with open_realtime(server.port) as client:
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 960).decode()})
        error = await client.error()
        assert error["code"] == "unavailable" and error["type"] == "server_error" and "ASR" in error["message"]


async def test_cancel_stops_a_response(start_server):
    """response.cancel stops a streaming response: one response.done, status cancelled, reason client_cancelled, the item incomplete."""
    engine = ScriptedDialogue(script=lambda request: [f" word{i}" for i in range(200)], delay_s=0.02)
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": text_item("talk")})
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.recv_until("response.output_text.delta")
        await client.send({"type": "response.create"})
        assert (await client.error())["code"] == "conversation_already_has_active_response"
        await client.send({"type": "response.cancel"})
        done = (await client.recv_until("response.done"))[-1]["response"]
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        assert done["output"][0]["status"] == "incomplete" and len(done["output"][0]["content"][0]["text"].split()) < 200
    check_lifecycle(client.events)


async def test_items_are_bounded_in_count_and_bytes(start_server, tmp_path):
    """Past the session's item bytes (4 x max_turn_bytes) a new item is refused with too_large; deleting one makes room."""
    config = make_config(tmp_path, limits={"max_turn_bytes": 4096})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with open_realtime(server.port) as client:
        for index in range(4):
            await client.send({"type": "conversation.item.create", "item": {**text_item("x" * 4000), "id": f"item_{index}"}})
            await client.recv_until("conversation.item.done")
        await client.send({"type": "conversation.item.create", "item": text_item("x" * 500)})
        error = await client.error()
        assert error["code"] == "too_large" and "start a new session" in error["message"]
        await client.send({"type": "conversation.item.delete", "item_id": "item_0"})
        assert (await client.recv_until("conversation.item.deleted"))[-1]["item_id"] == "item_0"
        await client.send({"type": "conversation.item.create", "item": text_item("x" * 500)})
        await client.recv_until("conversation.item.done")


async def test_item_count_is_bounded(start_server, monkeypatch):
    """Past MAX_ITEMS items a new one is refused with too_large, and the session goes on."""
    from assistant.dialects.openai_realtime import items

    monkeypatch.setattr(items, "MAX_ITEMS", 5)
    server = await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with open_realtime(server.port) as client:
        for _ in range(5):
            await client.send({"type": "conversation.item.create", "item": text_item("hi")})
            await client.recv_until("conversation.item.done")
        await client.send({"type": "conversation.item.create", "item": text_item("one too many")})
        assert (await client.error())["code"] == "too_large"


async def test_items_can_be_placed_retrieved_and_used_out_of_band(start_server):
    """previous_item_id places an item; retrieve returns it; conversation "none" with input answers without touching the items."""
    engine = ScriptedDialogue()
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": {**text_item("second"), "id": "b"}})
        await client.recv_until("conversation.item.done")
        await client.send({"type": "conversation.item.create", "item": {**text_item("first"), "id": "a"}, "previous_item_id": "root"})
        assert (await client.recv_until("conversation.item.added"))[-1]["previous_item_id"] is None
        await client.send({"type": "conversation.item.retrieve", "item_id": "a"})
        assert (await client.recv_until("conversation.item.retrieved"))[-1]["item"]["content"][0]["text"] == "first"
        await client.send({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"], "input": [text_item("aside")]}})
        seen = await client.recv_until("response.done")
        assert "conversation.item.added" not in [e["type"] for e in seen] and seen[-1]["response"]["conversation_id"] is None
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.recv_until("response.done")
    check_lifecycle(client.events)
    assert [m.content for m in engine.requests[0].messages[1:]] == ["aside"]
    assert [m.content for m in engine.requests[1].messages[1:]] == ["first", "second"]


async def test_an_image_item_reaches_the_engine(start_server):
    """An input_image data URL is decoded and handed to an engine that sees images; a non-image is refused."""
    engine = ScriptedDialogue(accepts_images=True)
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buffer, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    async with open_realtime(server.port) as client:
        content = [{"type": "input_text", "text": "what is this?"}, {"type": "input_image", "image_url": url}]
        await client.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": content}})
        await client.recv_until("conversation.item.done")
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.recv_until("response.done")
        bad = [{"type": "input_image", "image_url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}]
        await client.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": bad}})
        error = await client.error()
        assert error["param"] == "item.content.0.image_url" and error["code"] == "bad_request"
    assert len(engine.requests[0].messages[-1].images) == 1 and engine.requests[0].messages[-1].images[0].size == (32, 24)


async def test_the_handshake_applies_the_native_rules(start_server, tmp_path):
    """Auth on: no token or a wrong one is refused (401); a valid one connects; a revoked one is told and hung up on; places are per principal."""
    from assistant.auth import TokenFile

    tokens = TokenFile(tmp_path / "data" / "tokens.json")
    token = tokens.create("alice")[1]
    config = make_config(tmp_path, limits={"sessions_per_principal": 1})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    for bad in (None, "nope"):
        with pytest.raises(InvalidStatus) as refused:
            async with open_realtime(server.port, token=bad):
                pass
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as foreign:
        async with open_realtime(server.port, token=token, origin="https://evil.example"):
            pass
    assert foreign.value.response.status_code == 403
    async with open_realtime(server.port, token=token) as client:
        with pytest.raises(InvalidStatus) as second:
            async with open_realtime(server.port, token=token):
                pass
        assert second.value.response.status_code == 429
        tokens.revoke("alice")
        await asyncio.sleep(1.1)  # the token file is re-read at most once a second
        await client.send({"type": "conversation.item.create", "item": text_item("hi")})
        assert (await client.error())["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed):
            await client.recv()


async def test_responses_count_against_the_turn_rate(start_server, tmp_path):
    """With one turn a minute, the second response.create is rate_limited and the session goes on."""
    config = make_config(tmp_path, limits={"turns_per_minute": 1})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": text_item("one")})
        await client.send({"type": "response.create"})
        await client.recv_until("response.done")
        await client.send({"type": "response.create"})
        assert (await client.error())["code"] == "rate_limited"
        await client.send({"type": "conversation.item.retrieve", "item_id": client.events[1]["item"]["id"]})
        await client.recv_until("conversation.item.retrieved")


async def test_shutdown_cancels_a_running_response_and_closes_the_connection(start_server):
    """At shutdown a response still running past the grace period ends with one response.done (cancelled), then the socket closes with 1001."""
    engine = ScriptedDialogue(script=lambda request: [f" word{i}" for i in range(500)], delay_s=0.02)
    server = await start_server(plugins=(FakeEnginesPlugin(engine),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": text_item("talk")})
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.recv_until("response.output_text.delta")
        shutting = asyncio.create_task(server.shutdown(grace_s=0.2))
        done = (await client.recv_until("response.done"))[-1]["response"]
        assert done["status"] == "cancelled"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await shutting
    check_lifecycle(client.events)


async def test_spoken_output_needs_a_synthesizer_and_a_known_voice(start_server, tmp_path):
    """Audio output without a synthesizer is unavailable; an unknown voice is refused naming the param; OpenAI's voice names mean the default."""
    from tests.fakes import ToneVoice

    async with open_realtime((await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue()),))).port) as client:
        await client.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}})
        error = await client.error()
        assert (error["code"], error["type"], error["param"]) == ("unavailable", "server_error", "session.output_modalities")
    config = make_config(tmp_path, engines={"speech_synthesizer": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(), voice=ToneVoice()),))
    async with open_realtime(server.port) as client:
        assert client.events[0]["session"]["output_modalities"] == ["audio"]
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "nobody"}}}})
        error = await client.error()
        assert error["param"] == "session.audio.output.voice" and "low" in error["message"]
        for voice, name in (("high", "high"), ("cedar", "low")):
            await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": voice}}}})
            assert (await client.recv_until("session.updated"))[-1]["session"]["audio"]["output"]["voice"] == name
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}})
        assert (await client.error())["code"] == "unsupported"


async def test_a_failing_engine_fails_its_response_only(start_server):
    """An engine that raises ends the response with response.done status failed (its error in status_details); the next one works."""
    server = await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue(fail_times=1)),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": text_item("hi")})
        await client.send({"type": "response.create"})
        failed = (await client.recv_until("response.done"))[-1]["response"]
        assert failed["status"] == "failed" and failed["output"] == []
        assert failed["status_details"]["error"]["type"] == "server_error" and "scripted engine failure" in failed["status_details"]["error"]["message"]
        await client.send({"type": "response.create"})
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == "completed"
    check_lifecycle(client.events)


async def test_a_response_with_no_room_for_its_items_fails_cleanly(start_server, monkeypatch):
    """When the session's items are full, a response's function call cannot be added: response.done failed (too_large), nothing left open."""
    from assistant.dialects.openai_realtime import items

    monkeypatch.setattr(items, "MAX_ITEMS", 1)
    server = await start_server(plugins=(FakeEnginesPlugin(ToolCallingDialogue()),))
    async with open_realtime(server.port) as client:
        await client.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}})
        await client.send({"type": "conversation.item.create", "item": text_item('get_weather {"city": "Rome"}')})
        await client.send({"type": "response.create"})
        done = (await client.recv_until("response.done"))[-1]["response"]
        assert done["status"] == "failed" and done["status_details"]["error"]["code"] == "too_large" and done["output"] == []
    check_lifecycle(client.events)


async def test_an_idle_connection_is_hung_up_on_as_on_the_native_wire(start_server, tmp_path):
    """Silent past idle_timeout_s: closed with 1000 'idle timeout', as /ws does; a frame in time keeps it open."""
    server = await start_server(make_config(tmp_path, limits={"idle_timeout_s": 0.6}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with open_realtime(server.port) as client:
        await asyncio.sleep(0.3)
        await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be terse."}})
        assert (await client.recv())["type"] == "session.updated"
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv(timeout=10)
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "idle timeout")
