"""Bad requests to the OpenAI dialect: each an OpenAI-shaped error with its status, and the server keeps serving."""

from __future__ import annotations

import threading

import openai
import pytest

from assistant.auth import TokenFile
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue

USER = [{"role": "user", "content": "hi"}]


def envelope(error: openai.APIStatusError) -> dict:
    """The `error` object of a refusal, checked to have OpenAI's four fields."""
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def post_raw(client: openai.AsyncOpenAI, path: str, content: bytes, content_type: str) -> openai.APIStatusError:
    """POST raw bytes through the SDK's low-level client; the refusal it raises."""
    with pytest.raises(openai.APIStatusError) as refused:
        await client.post(path, cast_to=object, content=content, options={"headers": {"Content-Type": content_type}})
    return refused.value


@pytest.mark.parametrize(
    ("kwargs", "status", "param", "code"),
    [
        ({"model": "gpt-4o"}, 404, "model", "model_not_found"),
        ({"messages": []}, 400, "messages", "invalid_value"),
        ({"messages": [{"role": "user"}]}, 400, "messages.0.content", "missing_required_parameter"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0", "invalid_value"),
        ({"n": 2}, 400, "n", "invalid_value"),
        ({"temperature": 3}, 400, "temperature", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
         400, "messages.0.content.0.image_url.url", "invalid_image_url"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
         400, "messages.0.content.0.image_url.url", "invalid_value"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]},
         400, "messages.0.content.0", None),
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, 400, "messages.0.tool_call_id", "invalid_value"),
        ({"response_format": {"type": "json_object"}}, 400, "response_format", "unsupported_value"),
    ],
)
async def test_bad_chat_requests_are_refused_in_openai_shape(server, engine, openai_client, kwargs, status, param, code):
    """Unknown model, empty or malformed messages, n > 1, out-of-range values, remote or broken images, orphan tool results,
    JSON modes: each its status, param and code; nothing reaches the engine, and the next request is answered."""
    client = openai_client(server)
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(**{"model": "dialogue", "messages": USER, **kwargs})
    error = envelope(refused.value)
    assert refused.value.status_code == status and error["param"] == param and error["code"] == code, error
    assert engine.requests == []
    assert (await client.chat.completions.create(model="dialogue", messages=USER)).choices[0].message.content == "You said: hi"


@pytest.mark.parametrize(
    ("parameters", "where"),
    [({"type": "objekt"}, "type"), ({"type": "object", "properties": {"city": {"type": 5}}}, "properties.city.type"),
     ({"type": "object", "required": "city"}, "required")],
)
async def test_a_tool_schema_that_is_not_json_schema_is_refused(start_server, openai_client, tmp_path, parameters, where):
    """Tool parameters that fail the JSON Schema meta-schema are a 400 naming the tool; nothing reaches the engine."""
    engine = ToolCallingDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="dialogue", messages=USER, tools=[tool])
    error = envelope(refused.value)
    assert error["param"] == "tools.0.function.parameters" and error["code"] == "invalid_function_parameters" and where in error["message"]
    assert engine.requests == []


async def test_tools_for_an_engine_that_cannot_call_them_are_refused(server, openai_client):
    """Tools offered to an engine without tool support: 400, type invalid_request_error."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as refused:
        await openai_client(server).chat.completions.create(model="dialogue", messages=USER, tools=[tool], stream=True)
    assert "cannot call tools" in envelope(refused.value)["message"]


async def test_malformed_json_and_wrong_content_types_are_refused(server, openai_client):
    """A body that is not JSON is a 400, one that is not a JSON object a 400, a non-JSON content type a 415."""
    client = openai_client(server)
    broken = await post_raw(client, "/chat/completions", b'{"model": "dialogue", "messages": [', "application/json")
    assert broken.status_code == 400 and "not valid JSON" in envelope(broken)["message"]
    listed = await post_raw(client, "/chat/completions", b"[1, 2]", "application/json")
    assert listed.status_code == 400 and "JSON object" in envelope(listed)["message"]
    text = await post_raw(client, "/chat/completions", b"model=dialogue", "application/x-www-form-urlencoded")
    assert text.status_code == 415 and envelope(text)["code"] == "unsupported_media_type"
    assert (await client.chat.completions.create(model="dialogue", messages=USER)).choices


async def test_an_oversize_body_is_refused_before_it_is_read(start_server, openai_client, tmp_path):
    """A chat body past the request limit is a 413 in OpenAI's shape."""
    server = await start_server(make_config(tmp_path, limits={"max_turn_bytes": 4096}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    client = openai_client(server)
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "x" * 200_000}])
    assert refused.value.status_code == 413 and envelope(refused.value)["code"] == "request_too_large"


async def test_tokens_and_rates_apply_as_on_the_native_wire(start_server, openai_client, tmp_path):
    """With tokens configured a missing or wrong key is a 401 (invalid_api_key); a valid one is served until the turn rate is spent (429)."""
    token = TokenFile(tmp_path / "data" / "tokens.json").create("alice")[1]
    server = await start_server(make_config(tmp_path, limits={"turns_per_minute": 2}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    with pytest.raises(openai.AuthenticationError) as refused:
        await openai_client(server, api_key="wrong").chat.completions.create(model="dialogue", messages=USER)
    assert envelope(refused.value)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await openai_client(server, api_key="wrong").models.list()
    client = openai_client(server, api_key=token)
    assert [m.id async for m in client.models.list()] == ["fake:scripted"]
    for _ in range(2):
        await client.chat.completions.create(model="dialogue", messages=USER)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="dialogue", messages=USER)
    assert envelope(limited.value)["code"] == "rate_limit_exceeded"


async def test_an_engine_failure_is_a_server_error_and_the_next_request_works(start_server, openai_client, tmp_path):
    """An engine that raises before any text gives a 500 in OpenAI's shape, streamed or not; the next request is answered."""
    engine = ScriptedDialogue(fail_times=2)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="dialogue", messages=USER)
    assert envelope(failed.value)["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="dialogue", messages=USER, stream=True)
    assert (await client.chat.completions.create(model="dialogue", messages=USER)).choices[0].message.content == "You said: hi"


async def test_unknown_paths_and_methods_answer_in_openai_shape(server, openai_client):
    """An endpoint we do not serve is a 404 `unknown_url`, a served one with another method a 405; both in OpenAI's envelope."""
    client = openai_client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.embeddings.create(model="dialogue", input="hello")
    assert envelope(missing.value)["code"] == "unknown_url"
    with pytest.raises(openai.APIStatusError) as wrong:
        await client.get("/chat/completions", cast_to=object)
    assert wrong.value.status_code == 405 and envelope(wrong.value)["code"] == "method_not_allowed"
    with pytest.raises(openai.APIStatusError) as realtime:  # another dialect's path under /v1 stays that dialect's
        await client.get("/realtime", cast_to=object)
    assert realtime.value.status_code == 426


async def test_an_engine_failure_mid_stream_ends_the_stream_with_an_error_event(start_server, openai_client, tmp_path):
    """An engine that fails after some text ends the stream with an error event, which the SDK raises; the next request is answered."""

    streaming = threading.Event()

    def breaks(request):
        yield "Once"
        yield " upon"
        if request.messages[-1].content == "break":
            streaming.wait(30)  # fail only once the client has the stream's first text
            raise RuntimeError("the model fell over")

    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue(script=breaks)),))
    client = openai_client(server)
    stream = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "break"}], stream=True)
    text = ""
    with pytest.raises(openai.APIError, match="the model fell over"):
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            streaming.set()
    assert text == "Once upon"
    reply = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "go on"}])
    assert reply.choices[0].message.content == "Once upon"


async def test_a_page_from_another_origin_is_refused(server, openai_client):
    """A browser request from a foreign Origin is a 403 (a form post needs no preflight); the server's own origin is served."""
    client = openai_client(server)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model="dialogue", messages=USER, extra_headers={"Origin": "http://evil.example"})
    assert envelope(refused.value)["code"] == "origin_not_allowed"
    own = await client.chat.completions.create(model="dialogue", messages=USER, extra_headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert own.choices[0].message.content == "You said: hi"
