"""One dialogue engine call outside a conversation (`complete`), as the stateless HTTP wires use it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from assistant.dialogue_call import complete
from assistant.engines import ChatMessage, DialogueRequest, ToolSpec
from assistant.errors import AssistantError
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue

WEATHER = ToolSpec("get_weather", "The weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})


def ask(text: str, tools: tuple[ToolSpec, ...] = ()) -> DialogueRequest:
    return DialogueRequest([ChatMessage("user", text)], tools=tools)


async def test_deltas_stream_in_order_and_the_result_comes_back(make_conversation):
    """`complete` hands each delta to the callback and returns the engine's result."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue()))
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    result = await complete(conversation.app, ask("hello there"), on_delta)
    assert "".join(deltas) == result.text == "You said: hello there" and result.finish_reason == "stop"


async def test_a_tool_call_comes_back_as_calls_not_text(make_conversation):
    """An engine that calls a tool returns the call with finish_reason tool_calls; no markup is streamed."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue()))
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    result = await complete(conversation.app, ask('get_weather {"city": "Paris"}', (WEATHER,)), on_delta)
    assert result.finish_reason == "tool_calls" and deltas == [] and result.text == ""
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]


async def test_tools_for_an_engine_that_cannot_call_them_are_refused(make_conversation):
    """Tools sent to an engine without `accepts_tools` are an `unsupported` error, not silently dropped."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue()))
    with pytest.raises(AssistantError) as refused:
        await complete(conversation.app, ask("hi", (WEATHER,)))
    assert refused.value.code == "unsupported"


async def test_an_engine_failure_is_an_internal_error_and_the_next_call_works(make_conversation):
    """An exception in the engine becomes AssistantError(internal); the engine serves the next call."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(fail_times=1)))
    with pytest.raises(AssistantError) as failed:
        await complete(conversation.app, ask("hi"))
    assert failed.value.code == "internal" and "scripted engine failure" in failed.value.message
    assert (await complete(conversation.app, ask("again"))).text == "You said: again"


async def test_cancelling_the_caller_stops_the_engine(make_conversation):
    """A cancelled request (a client that hung up) sets the engine's stop flag and waits for it to return."""
    engine = ScriptedDialogue(delay_s=0.05)
    conversation, _ = await make_conversation(FakeEnginesPlugin(engine))
    stop = threading.Event()
    first = asyncio.Event()

    async def on_delta(delta: str) -> None:
        first.set()

    task = asyncio.create_task(complete(conversation.app, ask("one two three four five six seven eight"), on_delta, stop))
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stop.is_set() and conversation.app.scheduler.in_flight(engine) == 0
