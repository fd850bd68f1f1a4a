"""The Ollama dialect driven by the official `ollama` Python client, the way Home Assistant's Ollama integration uses it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import httpx
import ollama
import pytest

from assistant.auth import token_hash
from assistant.engines import DialogueResult, Usage
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue
from tests.images import solid

LIGHT_TOOL = {
    "type": "function",
    "function": {
        "name": "HassTurnOn",
        "description": "Turns on/opens a device or entity",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}}, "required": []},
    },
}


def seen_images(request) -> list[str]:
    """A script that says what the engine saw: each image's size, then the user's text."""
    last = request.messages[-1]
    sizes = [f"{image.size[0]}x{image.size[1]}" for image in last.images]
    return ["I see", f" {len(sizes)} image(s):", *[f" {size}" for size in sizes], f" and you said {last.content}"]


@pytest.fixture
async def tool_server(start_server, tmp_path):
    """A server whose dialogue engine calls tools (ToolCallingDialogue)."""
    return await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ToolCallingDialogue()),))


def client(server, **kwargs) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=f"http://127.0.0.1:{server.port}", **kwargs)


async def test_list_version_ps_and_show_describe_the_dialogue_engine(tool_server):
    """list() names the dialogue engine as one model (with `model` and `name`), ps() shows it loaded, show() its capabilities."""
    api = client(tool_server)
    listed = await api.list()
    assert [m.model for m in listed.models] == ["tool-caller:latest"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tool_server.port}") as http:
        raw = (await http.get("/api/tags")).json()["models"][0]
        version = (await http.get("/api/version")).json()["version"]
    assert raw["name"] == raw["model"] == "tool-caller:latest" and raw["details"]["family"] == "fake"
    assert version.count(".") == 2
    assert [m.name for m in (await api.ps()).models] == ["tool-caller:latest"]
    shown = await api.show("tool-caller:latest")
    assert shown.capabilities == ["completion", "tools"] and shown.details.family == "fake"
    assert (await api.show("tool-caller")).capabilities == ["completion", "tools"]


async def test_a_streamed_chat_with_an_image_reaches_the_engine_as_pixels(start_server, tmp_path):
    """A streamed chat whose user message has a base64 image: the engine sees the picture; deltas, then a done object with counts."""
    engine = ScriptedDialogue(script=seen_images, accepts_images=True, engine_id="fake:vision")
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    png = solid("red", (64, 48))
    stream = await client(server).chat(
        model="vision:latest", stream=True, keep_alive="300s", options={"num_ctx": 8192, "temperature": 0.2}, think=None,
        messages=[{"role": "user", "content": "what is this?", "images": [base64.b64encode(png).decode()]}],
    )
    parts = [part async for part in stream]
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].done_reason == "stop"
    text = "".join(p.message.content or "" for p in parts)
    assert text == "I see 1 image(s): 64x48 and you said what is this?"
    assert 2 <= len(parts) <= 5 and parts[-1].eval_count == 4 and parts[-1].prompt_eval_count == 2  # 4 deltas (those that piled up joined), then done
    request = engine.requests[-1]
    assert request.messages[0].role == "system" and request.options.temperature == 0.2
    assert request.messages[-1].images[0].getpixel((0, 0)) == (255, 0, 0)


async def test_a_whole_chat_answers_one_object(tool_server):
    """stream=False gives one ChatResponse with the whole text; num_predict reaches the engine as max_new_tokens; keep_alive -1
    (Home Assistant's "forever"), think and a format schema are accepted."""
    engine = tool_server.app.engines["dialogue"]
    answer = await client(tool_server).chat(model="tool-caller", messages=[{"role": "user", "content": "hello there"}], stream=False,
                                            options={"num_predict": 12}, keep_alive=-1, think=True, format={"type": "object"})
    assert answer.done and answer.message.role == "assistant" and answer.message.content == "You said: hello there"
    assert engine.requests[-1].options.max_new_tokens == 12


async def test_a_tool_round_trip_as_home_assistant_makes_it(tool_server):
    """Tools in the request give `message.tool_calls` with object arguments; the `role: tool` result (no id) gets the final answer."""
    api = client(tool_server)
    history = [
        {"role": "system", "content": "You control the home."},
        {"role": "user", "content": 'Please use HassTurnOn {"name": "kitchen light"}'},
    ]
    parts = [part async for part in await api.chat(model="tool-caller:latest", messages=history, tools=[LIGHT_TOOL], stream=True,
                                                   keep_alive="300s", options={"num_ctx": 8192})]
    calls = [call for part in parts for call in part.message.tool_calls or ()]
    assert len(calls) == 1 and calls[0].function.name == "HassTurnOn" and calls[0].function.arguments == {"name": "kitchen light"}
    assert "<tool_call>" not in "".join(p.message.content or "" for p in parts) and parts[-1].done
    result = json.dumps({"data": {"success": [{"name": "Kitchen light", "type": "entity"}]}, "error": None})
    history += [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}}]},
        {"role": "tool", "content": result},
    ]
    parts = [part async for part in await api.chat(model="tool-caller:latest", messages=history, tools=[LIGHT_TOOL], stream=True)]
    assert "".join(p.message.content or "" for p in parts) == f"The HassTurnOn tool said: {result}"
    context = tool_server.app.engines["dialogue"].requests[-1].messages
    assert context[-2].tool_calls[0].name == "HassTurnOn" and context[-1].tool_call_id == context[-2].tool_calls[0].id


async def test_unknown_models_and_pull_answer_ollama_errors_and_the_server_goes_on(tool_server):
    """An unknown model is a 404 ResponseError naming the model we serve; pulling another one is refused, ours succeeds."""
    api = client(tool_server)
    with pytest.raises(ollama.ResponseError) as unknown:
        await api.chat(model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.status_code == 404 and "llama3.2:latest" in unknown.value.error and "tool-caller:latest" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as show:
        await api.show("llama3.2")
    assert show.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as pulled:
        await api.pull("llama3.2")
    assert pulled.value.status_code == 404 and "cannot be pulled" in pulled.value.error
    assert (await api.pull("tool-caller:latest")).status == "success"
    assert (await api.chat(model="tool-caller", messages=[{"role": "user", "content": "still there?"}], stream=False)).done


async def test_bad_requests_answer_error_json_and_a_follow_up_succeeds(start_server, tmp_path):
    """Malformed JSON, wrong types, bad base64, a 10 MB image over the image limit and a body over the request limit: each
    an Ollama error with its status, and the next chat works."""
    config = make_config(tmp_path, image_input={"max_bytes": 4 * 1024 * 1024})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(accepts_images=True, engine_id="fake:vision")),))
    url = f"http://127.0.0.1:{server.port}/api/chat"
    async with httpx.AsyncClient(timeout=60) as http:
        bad_json = await http.post(url, content=b"{not json")
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]
        wrong = await http.post(url, json={"model": "vision", "messages": [{"role": "robot", "content": "hi"}]})
        assert wrong.status_code == 400 and wrong.json()["error"].startswith("messages.0.role")
        options = await http.post(url, json={"model": "vision", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": "hot"}})
        assert options.status_code == 400 and "options.temperature" in options.json()["error"]
        not_b64 = await http.post(url, json={"model": "vision", "messages": [{"role": "user", "content": "hi", "images": ["%%%"]}]})
        assert not_b64.status_code == 400 and not_b64.json()["error"] == "messages.0.images.0: not base64"
    api = client(server)
    huge = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024)).decode()
    with pytest.raises(ollama.ResponseError) as too_large:
        await api.chat(model="vision", messages=[{"role": "user", "content": "look", "images": [huge]}])
    assert too_large.value.status_code == 413 and too_large.value.error.startswith("messages.0.content.1")
    answer = await api.chat(model="vision", messages=[{"role": "user", "content": "small", "images": [base64.b64encode(solid("blue")).decode()]}],
                            stream=False)
    assert answer.message.content == "You said: small"
    limited = make_config(tmp_path / "limited", limits={"max_turn_bytes": 1024 * 1024})
    (tmp_path / "limited").mkdir()
    small = await start_server(limited, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    with pytest.raises(ollama.ResponseError) as body:
        await client(small).chat(model="scripted", messages=[{"role": "user", "content": "x" * (2 * 1024 * 1024)}])
    assert body.value.status_code == 413 and "request body" in body.value.error
    assert (await client(small).chat(model="scripted", messages=[{"role": "user", "content": "ok"}], stream=False)).done


async def test_tools_for_an_engine_that_cannot_call_them_are_a_clear_400(server):
    """A chat offering tools to an engine without tool support answers 400 saying so; without tools the same chat works."""
    api = client(server)
    with pytest.raises(ollama.ResponseError) as refused:
        await api.chat(model="scripted", messages=[{"role": "user", "content": "turn on HassTurnOn"}], tools=[LIGHT_TOOL])
    assert refused.value.status_code == 400 and "cannot call tools" in refused.value.error
    assert (await api.chat(model="scripted", messages=[{"role": "user", "content": "hi"}], stream=False)).message.content == "You said: hi"


async def test_the_turn_rate_applies_to_chats(start_server, tmp_path):
    """With one turn a minute, a second chat is refused with 429 and Ollama's error JSON; listing models is no turn and still works."""
    config = make_config(tmp_path, limits={"turns_per_minute": 1})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    api = client(server)
    assert (await api.chat(model="scripted", messages=[{"role": "user", "content": "one"}], stream=False)).done
    with pytest.raises(ollama.ResponseError) as limited:
        await api.chat(model="scripted", messages=[{"role": "user", "content": "two"}])
    assert limited.value.status_code == 429 and "a minute" in limited.value.error
    assert len((await api.list()).models) == 1


async def test_bearer_tokens_apply_as_on_every_wire(start_server, tmp_path):
    """With tokens configured, a request without one (or with a wrong one) is a 401 error JSON; the right token works."""
    config = make_config(tmp_path, auth={"tokens": [{"principal": "hass", "sha256": token_hash("ast_home")}]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ToolCallingDialogue()),))
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(ollama.ResponseError) as refused:
            await client(server, headers=headers).list()
        assert refused.value.status_code == 401
    api = client(server, headers={"Authorization": "Bearer ast_home"})
    assert [m.model for m in (await api.list()).models] == ["tool-caller:latest"]
    assert (await api.chat(model="tool-caller", messages=[{"role": "user", "content": "hi"}], stream=False)).message.content == "You said: hi"


class Endless(ScriptedDialogue):
    """Talks until it is told to stop; remembers the stop flag it was given."""

    def __init__(self) -> None:
        super().__init__(engine_id="fake:endless")
        self.stopped = threading.Event()

    def generate(self, request, emit, cancelled) -> DialogueResult:
        emit("and")
        while not cancelled.wait(0.01):
            emit(" on")
        self.stopped.set()
        return DialogueResult("", Usage(1, 1), "cancelled")


async def test_a_client_leaving_a_stream_stops_the_engine(start_server, tmp_path):
    """Closing a streamed chat after its first line stops the engine at its next token."""
    engine = Endless()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
        async with http.stream("POST", "/api/chat", json={"model": "endless", "messages": [{"role": "user", "content": "go"}]}) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
            async for line in response.aiter_lines():
                assert json.loads(line)["message"]["content"] == "and"
                break
    assert await asyncio.to_thread(engine.stopped.wait, 30)


@pytest.mark.offline_model
async def test_the_offline_model_answers_through_the_ollama_client(start_server, tmp_path):
    """With SmolLM2 (the offline default), list() names it and a streamed chat as Home Assistant sends it answers with Paris."""
    config = make_config(tmp_path, engines={"dialogue": "transformers"}, plugins={"transformers_dialogue": {"max_new_tokens": 40}})
    server = await start_server(config)
    api = client(server)
    (model,) = (await api.list()).models
    assert model.model == "smollm2-135m-instruct:latest"
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                {"role": "user", "content": "What is the capital of France?"}]
    parts = [part async for part in await api.chat(model=model.model, messages=messages, stream=True, keep_alive="300s", options={"num_ctx": 8192})]
    text = "".join(p.message.content or "" for p in parts)
    print(f"\n{text!r}")
    assert "Paris" in text and parts[-1].done and parts[-1].eval_count > 0
