"""The tool-call loop with no socket: a Conversation on a real App whose fake engine calls registered tools."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Literal

import pytest

from assistant import Capabilities, DialogueResult, ToolCall, ToolContext, ToolRoute, TurnRouter, Usage, events, hookimpl
from assistant import tool_loop
from assistant.engines import GenerationOptions
from assistant.turns import TextIn
from tests.conversations import kinds, settle
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue

CALLS: list[dict] = []


def convert(value: float, unit: Literal["km", "mi"] = "km") -> dict:
    """Convert a distance to the other unit.

    Args:
        value: the distance
        unit: the unit of value
    """
    CALLS.append({"value": value, "unit": unit})
    factor = 0.621371 if unit == "km" else 1 / 0.621371
    return {"value": round(value * factor, 2), "unit": "mi" if unit == "km" else "km"}


async def whoami(ctx: ToolContext) -> dict:
    """Say who is asking, where and when."""
    await ctx.emit(events.TextDelta(response_id="side", delta="tool says hi"))
    return {"principal": ctx.principal, "conversation": ctx.conversation_id, "zone": str(ctx.timezone), "aware": ctx.now.tzinfo is not None}


def explode() -> str:
    """Always fails."""
    raise RuntimeError("boom")


async def sleepy() -> str:
    """Never answers in time."""
    await asyncio.sleep(3600)
    return "late"


NAPPING = asyncio.Event()


async def nap() -> str:
    """Takes its time (a minute allowed)."""
    NAPPING.set()
    await asyncio.sleep(3600)
    return "rested"


HANG = threading.Event()


def stuck() -> str:
    """A sync tool that hangs until the test lets it go."""
    HANG.wait(60)
    return "unstuck"


def huge() -> list:
    """Returns far too much."""
    return ["x" * 100] * 1000


def odd() -> object:
    """Returns something that is not JSON."""
    return {"value": float("nan")}


def launch(target: str) -> dict:
    """Launch something (needs the user's approval).

    Args:
        target: what to launch
    """
    return {"launched": target, "confirmation": f"Launched {target}."}


ALL_TOOLS = [
    convert, whoami, explode, huge, odd, (sleepy, {"timeout_s": 0.2}), (nap, {"timeout_s": 60}), (stuck, {"timeout_s": 0.2}),
    (launch, {"requires_confirmation": True}),
]


class RoundsDialogue(ScriptedDialogue):
    """A tool-taking engine that plays `rounds` in order: a list of ToolCalls to make, or a text to say; then it echoes."""

    def __init__(self, rounds: list) -> None:
        super().__init__(engine_id="fake:rounds")
        self.capabilities = Capabilities(accepts_tools=True)
        self.rounds = list(rounds)

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Play the next round."""
        self.requests.append(request)
        step = self.rounds.pop(0) if self.rounds else "done"
        if isinstance(step, str):
            emit(step)
            return DialogueResult(step, Usage(1, 1), "stop")
        return DialogueResult("", Usage(1, 1), "tool_calls", tuple(step))


class Forever(ScriptedDialogue):
    """A tool-taking engine that calls `convert` every time it is asked."""

    def __init__(self) -> None:
        super().__init__(engine_id="fake:forever")
        self.capabilities = Capabilities(accepts_tools=True)

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Call a tool again."""
        self.requests.append(request)
        emit(".")
        return DialogueResult(".", Usage(1, 1), "tool_calls", (ToolCall(f"c{len(self.requests)}", "convert", {"value": 1}),))


async def turn(conversation, text: str) -> None:
    """Run one text turn to its end."""
    conversation.create_turn(lambda: [TextIn(text)], GenerationOptions(), "t")
    await settle(conversation)


def tool_results(recorder) -> list[events.ToolCallDone]:
    return recorder.of(events.ToolCallDone)


async def test_a_model_call_runs_the_tool_and_the_reply_answers_from_its_result(make_conversation):
    """The model calls a tool: tool.call and tool.result come inside one reply, the text answers from the result, all stored."""
    CALLS.clear()
    engine = ToolCallingDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, 'please convert {"value": 10, "unit": "km"}')
    assert CALLS == [{"value": 10.0, "unit": "km"}]
    order = kinds(recorder)
    assert order[:4] == ["TurnCreated", "ReplyStarted", "ToolCallStarted", "ToolCallDone"] and order[-1] == "ReplyDone"
    assert order.count("ReplyStarted") == 1 and order.count("ReplyDone") == 1
    started, done = recorder.of(events.ToolCallStarted)[0], tool_results(recorder)[0]
    assert started.name == "convert" and started.arguments == {"value": 10, "unit": "km"} and not started.needs_confirmation
    assert done.status == "ok" and done.result == {"value": 6.21, "unit": "mi"} and done.call_id == started.call_id
    reply = recorder.of(events.ReplyDone)[0]
    assert reply.status == "completed" and reply.text == 'The convert tool said: {"value": 6.21, "unit": "mi"}'
    assert "".join(d.delta for d in recorder.of(events.TextDelta)) == reply.text
    assert {t.name for t in engine.requests[0].tools} == {"convert", "whoami", "explode", "huge", "odd", "sleepy", "nap", "stuck", "launch"}
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert [p.kind for p in stored.parts] == ["tool_call", "tool_result", "text"] and stored.text == reply.text
    assert stored.to_wire()["content"][1] == {
        "type": "tool_result", "call_id": done.call_id, "name": "convert", "status": "ok", "result": {"value": 6.21, "unit": "mi"}, "error": None,
    }

    await turn(conversation, "thanks")
    context = engine.requests[-1].messages
    assert [m.role for m in context] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert context[2].tool_calls[0].name == "convert" and context[3].tool_call_id == done.call_id
    assert context[3].content == '{"value": 6.21, "unit": "mi"}'


async def test_an_engine_that_cannot_call_tools_is_offered_none(make_conversation):
    """With a text-only engine nothing changes: no tools offered, a plain reply, and stored tool parts are left out of its context."""
    engine = ScriptedDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, "convert 3")
    assert engine.requests[0].tools == () and recorder.of(events.ToolCallStarted) == []
    assert recorder.of(events.ReplyDone)[0].text == "You said: convert 3"


async def test_the_tool_context_carries_principal_conversation_and_time_zone(make_conversation):
    """A tool's ToolContext names the principal and conversation, the session's time zone, and can emit events."""
    from zoneinfo import ZoneInfo

    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    conversation.timezone = ZoneInfo("Europe/Berlin")
    await turn(conversation, "whoami")
    assert tool_results(recorder)[0].result == {"principal": "local", "conversation": conversation.id, "zone": "Europe/Berlin", "aware": True}
    assert any(isinstance(e, events.TextDelta) and e.response_id == "side" for e in recorder.events)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (ToolCall("c1", "teleport", {}), "there is no tool named 'teleport'. Valid tools: convert"),
        (ToolCall("c1", "", {"_unparsed": '{"name": "convert", "arguments": {'}), "could not be read"),
        (ToolCall("c1", "convert", {"value": "ten"}), "value: 'ten' is not of type 'number'"),
        (ToolCall("c1", "convert", {"value": 1, "unit": "parsec"}), "unit: 'parsec' is not one of ['km', 'mi']"),
        (ToolCall("c1", "convert", {}), "'value' is a required property"),
        (ToolCall("c1", "convert", {"value": 1, "speed": 3}), "'speed' was unexpected"),
    ],
)
async def test_a_bad_call_goes_back_to_the_model_as_an_error_it_can_correct(make_conversation, call, needle):
    """Unknown names, unreadable calls and arguments that fail the schema become an error tool message; the reply completes."""
    CALLS.clear()
    engine = RoundsDialogue([[call], "sorry"])
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, "go")
    done = tool_results(recorder)[0]
    assert done.status == "error" and needle in done.error and CALLS == []
    message = engine.requests[1].messages[-1]
    assert message.role == "tool" and needle in message.content and message.tool_call_id == "c1"
    assert recorder.of(events.ReplyDone)[0].status == "completed" and recorder.told == []
    if call.name == "convert":
        assert "convert takes: value (number, required), unit (string)" in message.content


@pytest.mark.parametrize(
    ("name", "status", "needle"),
    [("explode", "error", "explode failed: RuntimeError: boom"),
     ("odd", "error", "the tool returned dict, which is not JSON data: Out of range float values are not JSON compliant"), ("sleepy", "timeout", "sleepy did not answer within 0.2 s"),
     ("stuck", "timeout", "stuck did not answer within 0.2 s")],
)
async def test_a_tool_that_raises_or_hangs_ends_in_a_clear_result(make_conversation, name, status, needle):
    """A raising tool gives status error, a hanging async or sync tool status timeout; the next turn still works."""
    HANG.clear()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    try:
        await turn(conversation, f"call {name}")
        done = tool_results(recorder)[0]
        assert (done.status, done.error) == (status, needle)
        assert recorder.of(events.ReplyDone)[0].text == f"The {name} tool said: Error ({status}): {needle}"
        await turn(conversation, 'convert {"value": 1}')
        assert tool_results(recorder)[1].status == "ok" and recorder.of(events.ReplyDone)[1].status == "completed"
    finally:
        HANG.set()


async def test_a_result_too_large_is_cut_with_a_note(make_conversation):
    """A result past MAX_RESULT_BYTES of JSON reaches the model, the wire and the store cut, with a note."""
    engine = ToolCallingDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, "call huge")
    result = tool_results(recorder)[0].result
    assert isinstance(result, str) and result.endswith(f"[the result was 104000 bytes; cut to the first {tool_loop.MAX_RESULT_BYTES}]")
    assert len(result.encode()) < tool_loop.MAX_RESULT_BYTES + 100
    assert engine.requests[1].messages[-1].content == result


async def test_a_model_that_never_stops_calling_tools_ends_after_ten_rounds(make_conversation):
    """Ten rounds of tool calls, then the reply ends failed with a note; the server goes on."""
    engine = Forever()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, "loop")
    assert len(engine.requests) == tool_loop.MAX_ROUNDS and len(tool_results(recorder)) == tool_loop.MAX_ROUNDS
    done = recorder.of(events.ReplyDone)[0]
    assert done.status == "failed" and "10 rounds" in done.error.message
    assert done.text.endswith("[stopped: the model was still calling tools after 10 rounds]")
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert stored.status == "failed" and [p.kind for p in stored.parts].count("tool_call") == 10


async def test_calls_past_the_bound_of_one_round_are_refused(make_conversation):
    """A round with more than MAX_CALLS_PER_ROUND calls runs that many; the rest get an error result, each answered."""
    CALLS.clear()
    many = [ToolCall(f"c{i}", "convert", {"value": i}) for i in range(tool_loop.MAX_CALLS_PER_ROUND + 3)]
    engine = RoundsDialogue([many, "ok"])
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    await turn(conversation, "go")
    statuses = [d.status for d in tool_results(recorder)]
    assert statuses == ["ok"] * tool_loop.MAX_CALLS_PER_ROUND + ["error"] * 3 and len(CALLS) == tool_loop.MAX_CALLS_PER_ROUND
    assert [m.tool_call_id for m in engine.requests[1].messages if m.role == "tool"] == [c.id for c in many]
    assert "at most 16 tool calls" in tool_results(recorder)[-1].error


async def answer_confirmation(conversation, recorder, approved: bool) -> None:
    """Wait for the call that needs confirmation, then answer it."""
    started = (await recorder.wait_for(events.ToolCallStarted))[0]
    assert started.needs_confirmation
    conversation.confirm_tool(started.call_id, approved, "e1")


@pytest.mark.parametrize("approved", [True, False])
async def test_a_call_that_needs_confirmation_waits_for_the_user(make_conversation, approved):
    """tool.call says needs_confirmation; approving runs the tool, declining tells the model the user declined."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    conversation.create_turn(lambda: [TextIn('launch {"target": "rocket"}')], GenerationOptions(), "t")
    await answer_confirmation(conversation, recorder, approved)
    await settle(conversation)
    done = tool_results(recorder)[0]
    if approved:
        assert done.status == "ok" and done.result == {"launched": "rocket", "confirmation": "Launched rocket."}
    else:
        assert done.status == "declined" and "the user declined" in done.error
        assert "Error (declined)" in recorder.of(events.ReplyDone)[0].text
    with pytest.raises(Exception, match="no tool call 'c-none' is waiting") as unknown:
        conversation.confirm_tool("c-none", True, "e2")
    assert unknown.value.code == "not_found"


async def test_a_new_turn_declines_a_call_waiting_for_confirmation(make_conversation):
    """Sending another message instead of answering declines the waiting call; both turns are answered."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    conversation.create_turn(lambda: [TextIn('launch {"target": "rocket"}')], GenerationOptions(), "t1")
    await recorder.wait_for(events.ToolCallStarted)
    await turn(conversation, "never mind")
    assert tool_results(recorder)[0].status == "declined"
    assert [d.status for d in recorder.of(events.ReplyDone)] == ["completed", "completed"]
    assert recorder.of(events.ReplyDone)[1].text == "You said: never mind"
    metrics = conversation.app.metrics.render().decode()
    assert 'assistant_tool_calls_total{status="declined",tool="launch"} 1.0' in metrics


async def test_an_unanswered_confirmation_is_declined_after_its_bound(make_conversation, monkeypatch):
    """No tool.confirm within the bound: the call is declined and the reply completes."""
    monkeypatch.setattr(tool_loop, "CONFIRM_TIMEOUT_S", 0.1)
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    await turn(conversation, 'launch {"target": "rocket"}')
    assert tool_results(recorder)[0].status == "declined" and recorder.of(events.ReplyDone)[0].status == "completed"


async def test_cancel_stops_a_tool_waiting_for_confirmation_at_once(make_conversation):
    """Cancelling the reply while a call waits for confirmation ends the call cancelled and the reply cancelled."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    conversation.create_turn(lambda: [TextIn('launch {"target": "rocket"}')], GenerationOptions(), "t")
    await recorder.wait_for(events.ToolCallStarted)
    conversation.cancel_reply(recorder.of(events.ReplyStarted)[0].response_id, "c")
    await settle(conversation)
    assert tool_results(recorder)[0].status == "cancelled" and recorder.of(events.ReplyDone)[0].status == "cancelled"
    assert (await conversation.app.store.history(conversation.id))[-1].status == "cancelled"


async def test_cancel_stops_a_running_tool_at_once(make_conversation):
    """Cancelling the reply while an async tool runs cancels the tool; the call ends cancelled and so does the reply."""
    NAPPING.clear()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ToolCallingDialogue(), tools=ALL_TOOLS))
    conversation.create_turn(lambda: [TextIn("nap")], GenerationOptions(), "t")
    await NAPPING.wait()
    conversation.cancel_reply(recorder.of(events.ReplyStarted)[0].response_id, "c")
    await settle(conversation)
    assert tool_results(recorder)[0].status == "cancelled" and recorder.of(events.ReplyDone)[0].status == "cancelled"


class ConvertRouter(TurnRouter):
    """Claims "km N" turns for the convert tool, and "launch X" for launch."""

    def route(self, text):
        if text.startswith("km "):
            return ToolRoute("convert", {"value": float(text.split()[1])})
        if text.startswith("launch "):
            return ToolRoute("launch", {"target": text.split()[1]})
        if text.startswith("ghost"):
            return ToolRoute("no_such_tool", {})
        if text.startswith("broken"):
            return ToolRoute("convert", {"value": "not a number"})
        return None


class RouterPlugin:
    __name__ = "convert_router"

    @hookimpl
    def register_turn_routers(self, register):
        register("convert_router", ConvertRouter())


async def start_with_router(make_conversation, engine):
    from assistant.app import App

    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, tools=ALL_TOOLS))
    app: App = conversation.app
    app.registrations.routers.insert(0, App.prepare(app.config, [RouterPlugin()]).registrations.routers[0])
    return conversation, recorder


async def test_a_tool_route_replies_with_the_confirmation_without_the_model(make_conversation):
    """A router's ToolRoute runs the tool (confirmation asked and given) and the reply is its confirmation sentence."""
    engine = ToolCallingDialogue()
    conversation, recorder = await start_with_router(make_conversation, engine)
    conversation.create_turn(lambda: [TextIn("launch probe")], GenerationOptions(), "t")
    await answer_confirmation(conversation, recorder, True)
    await settle(conversation)
    assert recorder.of(events.ReplyDone)[0].text == "Launched probe." and engine.requests == []
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert [p.kind for p in stored.parts] == ["tool_call", "tool_result", "text"]


@pytest.mark.parametrize("tool_engine", [True, False])
async def test_a_tool_route_without_confirmation_lets_the_model_answer(make_conversation, tool_engine):
    """Without a confirmation the engine answers from the result: as a tool message, or folded into the user's text."""
    engine = ToolCallingDialogue() if tool_engine else ScriptedDialogue()
    conversation, recorder = await start_with_router(make_conversation, engine)
    await turn(conversation, "km 10")
    assert tool_results(recorder)[0].result == {"value": 6.21, "unit": "mi"}
    text = recorder.of(events.ReplyDone)[0].text
    if tool_engine:
        assert text == 'The convert tool said: {"value": 6.21, "unit": "mi"}'
    else:
        assert text == 'You said: km 10\n\n[The convert tool returned: {"value": 6.21, "unit": "mi"}]'


async def test_a_failed_tool_route_says_so_when_the_model_cannot_take_tools(make_conversation):
    """A routed tool that fails is reported to the user in plain words when the engine could not read a tool error."""
    engine = ScriptedDialogue()
    conversation, recorder = await start_with_router(make_conversation, engine)
    await turn(conversation, "broken")
    assert tool_results(recorder)[0].status == "error" and engine.requests == []
    done = recorder.of(events.ReplyDone)[0]
    assert done.status == "completed" and done.text.startswith("Sorry, I could not do that (convert): ")


async def test_a_route_to_an_unknown_tool_is_ignored(make_conversation):
    """A ToolRoute naming no registered tool does not claim the turn: the model answers as usual."""
    conversation, recorder = await start_with_router(make_conversation, ScriptedDialogue())
    await turn(conversation, "ghost")
    assert recorder.of(events.ToolCallStarted) == [] and recorder.of(events.ReplyDone)[0].text == "You said: ghost"


def test_tool_results_are_json_the_model_can_read():
    """A string result reaches the model as it is; other results as JSON; errors say their status."""
    from assistant.tools import tool_message_content

    assert tool_message_content("ok", "plain", None) == "plain"
    assert json.loads(tool_message_content("ok", {"a": [1, 2]}, None)) == {"a": [1, 2]}
    assert tool_message_content("timeout", None, "late") == "Error (timeout): late"
