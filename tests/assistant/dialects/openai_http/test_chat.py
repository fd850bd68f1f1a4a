"""Chat completions over the OpenAI dialect, with the official `openai` SDK as the client."""

from __future__ import annotations

import asyncio
import base64
import json

import openai
import pytest

from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue
from tests.images import encode

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def png_data_url(colour: str = "red") -> str:
    """A small PNG as a data URL."""
    from PIL import Image

    return "data:image/png;base64," + base64.b64encode(encode(Image.new("RGB", (8, 8), colour))).decode()


async def test_models_lists_the_engines_by_role(server, openai_client):
    """GET /v1/models lists the configured engines with their roles; one can be read by id or alias, an unknown one is 404."""
    client = openai_client(server)
    models = [model async for model in client.models.list()]
    assert [(m.id, m.model_extra["role"]) for m in models] == [("fake:scripted", "dialogue")]
    assert (await client.models.retrieve("fake:scripted")).id == "fake:scripted"
    assert (await client.models.retrieve("dialogue")).id == "fake:scripted"
    with pytest.raises(openai.NotFoundError) as refused:
        await client.models.retrieve("gpt-4o")
    assert refused.value.code == "model_not_found"


async def test_a_completion_answers_the_history(server, engine, openai_client):
    """A non-streaming completion returns the engine's reply, usage and finish_reason; the whole history reaches the engine."""
    client = openai_client(server)
    reply = await client.chat.completions.create(
        model="fake:scripted", max_tokens=50, temperature=0.5, top_p=0.9, seed=3,
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": [{"type": "text", "text": "how are you"}]}],
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == "fake:scripted"
    assert reply.choices[0].message.content == "You said: how are you" and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    request = engine.requests[-1]
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."), ("user", "hi"), ("assistant", "Hello!"), ("user", "how are you")]
    assert (request.options.max_new_tokens, request.options.temperature, request.options.top_p) == (50, 0.5, 0.9)


async def test_a_streamed_completion_sends_chunks_with_one_id_and_usage_last(server, openai_client):
    """stream=True gives chat.completion.chunk events sharing id and created; include_usage puts usage on the last chunk only."""
    client = openai_client(server)
    stream = await client.chat.completions.create(
        model="dialogue", messages=[{"role": "user", "content": "tell me a story"}], stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.id for c in chunks} == {chunks[0].id} and {c.created for c in chunks} == {chunks[0].created}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: tell me a story"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_an_image_part_reaches_an_engine_that_sees_images(start_server, openai_client, tmp_path):
    """An image_url data URL becomes the engine's image; the text beside it is the user message."""
    engine = ScriptedDialogue(accepts_images=True)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    stream = await client.chat.completions.create(
        model="fake:scripted", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [{"type": "text", "text": "what colour is this"},
                                              {"type": "image_url", "image_url": {"url": png_data_url("blue")}}]}],
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: what colour is this"
    image = engine.requests[-1].messages[-1].images[0]
    assert image.size == (8, 8) and image.getpixel((0, 0)) == (0, 0, 255)


async def test_stop_sequences_cut_the_text_and_the_engine(start_server, openai_client, tmp_path):
    """A stop sequence ends the reply before it, streamed or not, with finish_reason stop; nothing of it is sent."""
    engine = ScriptedDialogue(script=lambda request: ["one ", "two ", "th", "ree ", "four"])
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    whole = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "count"}], stop=["three", "x"])
    assert whole.choices[0].message.content == "one two " and whole.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "count"}], stop="ree f", stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two th"


async def test_a_streamed_tool_call_parses_with_the_sdk_stream_helper(start_server, openai_client, tmp_path):
    """chat.completions.stream() over a tool call: indexed tool_call deltas, JSON-string arguments, finish_reason tool_calls;
    the tool's result sent back as a `tool` message is answered."""
    engine = ToolCallingDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    messages = [{"role": "user", "content": 'use get_weather with {"city": "Paris"}'}]
    async with client.chat.completions.stream(model="fake:tool-caller", messages=messages, tools=[WEATHER]) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"} and call.id
    assert [t.name for t in engine.requests[-1].tools] == ["get_weather"] and engine.requests[-1].tool_choice == "auto"
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    answer = await client.chat.completions.create(model="fake:tool-caller", messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "The get_weather tool said: sunny, 21 C"
    history = engine.requests[-1].messages
    assert history[1].tool_calls[0].arguments == {"city": "Paris"} and (history[2].role, history[2].name) == ("tool", "get_weather")


async def test_a_named_tool_choice_offers_only_that_tool(start_server, openai_client, tmp_path):
    """tool_choice naming a function offers only it, as required; the non-streaming answer has tool_calls without an index."""
    engine = ToolCallingDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    reply = await client.chat.completions.create(
        model="fake:tool-caller", messages=[{"role": "user", "content": 'get_weather {"city": "Oslo"}'}], tools=[WEATHER, other],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert [t.name for t in engine.requests[-1].tools] == ["get_weather"] and engine.requests[-1].tool_choice == "required"


async def test_a_client_that_leaves_mid_stream_cancels_the_engine(start_server, openai_client, tmp_path):
    """Closing a stream after a few chunks stops the engine long before its 500 deltas; the next request is served."""
    pulled = []

    def slow(request):
        for i in range(500):
            pulled.append(i)
            yield f" w{i}"

    engine = ScriptedDialogue(script=slow, delay_s=0.01)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    stream = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "go"}], stream=True)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 5:
            break
    await stream.close()
    while server.app.scheduler.in_flight(server.app.engines["dialogue"]):
        await asyncio.sleep(0.02)
    assert len(pulled) < 500
    engine.script = lambda request: ["fine"]
    again = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "again"}])
    assert again.choices[0].message.content == "fine"
    assert server.app.sessions[server.app.session_key("local", "127.0.0.1")] == 0  # both requests gave their place back


async def test_a_client_that_gives_up_waiting_cancels_the_engine(start_server, openai_client, tmp_path):
    """A non-streaming request whose client times out stops the engine long before its 500 deltas; the next request is served."""
    pulled = []

    def slow(request):
        for i in range(500):
            pulled.append(i)
            yield f" w{i}"

    engine = ScriptedDialogue(script=slow, delay_s=0.01)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    client = openai_client(server)
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.5).chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "go"}])
    while not pulled or server.app.scheduler.in_flight(server.app.engines["dialogue"]):
        await asyncio.sleep(0.02)
    assert len(pulled) < 500
    engine.script = lambda request: ["fine"]
    assert (await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "again"}])).choices[0].message.content == "fine"


async def test_shutdown_cuts_a_stream_after_its_grace_period(start_server, openai_client, tmp_path):
    """A server shutting down stops a streaming reply's engine once the grace period is over; the stream ends properly."""
    pulled = []

    def slow(request):
        for i in range(500):
            pulled.append(i)
            yield f" w{i}"

    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue(script=slow, delay_s=0.01)),))
    stream = await openai_client(server).chat.completions.create(model="dialogue", messages=[{"role": "user", "content": "go"}], stream=True)
    chunks, stopping = [], None
    async for chunk in stream:
        chunks.append(chunk)
        if stopping is None:
            stopping = asyncio.create_task(server.shutdown(grace_s=0.1))
    await stopping
    assert chunks[-1].choices[0].finish_reason == "stop" and len(pulled) < 500


@pytest.mark.offline_model
async def test_the_offline_model_answers_through_the_sdk(start_server, openai_client, tmp_path):
    """With the offline SmolLM2 as the dialogue engine, a streamed answer to a factual question says Paris, with usage;
    max_tokens bounds a second answer, which ends with finish_reason length; sampled answers repeat with their seed."""
    config = make_config(tmp_path, engines={"dialogue": "transformers"}, plugins={"transformers_dialogue": {"max_new_tokens": 16}})
    server = await start_server(config)
    client = openai_client(server)
    question = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]
    stream = await client.chat.completions.create(model="dialogue", messages=question, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.prompt_tokens > 10 and chunks[-1].usage.completion_tokens > 0
    short = await client.chat.completions.create(model="dialogue", messages=question, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2

    async def sampled(seed: int) -> str:
        reply = await client.chat.completions.create(model="dialogue", messages=question, temperature=1.5, max_tokens=8, seed=seed)
        return reply.choices[0].message.content

    first, again, other = await asyncio.gather(sampled(7), sampled(7), sampled(8))  # batched together, each its own generator
    assert first == again != other
