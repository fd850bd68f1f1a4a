"""The tool-call loop: one reply in which the dialogue engine may call the registered tools, round after round.

Every dialect shares it. A round offers `app.tools` to the engine; when the result has tool calls, each
call is checked (a known tool, arguments that pass its JSON Schema), confirmed by the user when the
tool asks for it, run (async tools on the event loop, sync ones on a worker thread of their own, each
within its timeout) and answered with a `tool` message; then the engine is asked again, at most
MAX_ROUNDS times. A bad call goes back to the model as an error it can correct, never to the user as
a crash. Each call is published (`ToolCallStarted`, `ToolCallDone`) and stored with the reply
(`tool_call` and `tool_result` parts). All rounds' text streams as one reply (`reply.ReplyStream`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from assistant import events
from assistant.engines import ChatMessage, DialogueEngine, DialogueRequest, ToolCall
from assistant.events import ErrorInfo, ToolStatus
from assistant.reply import Reply, ReplyStream
from assistant.store import PartRecord
from assistant.tool_calls import new_call_id
from assistant.tools import Tool, ToolContext, tool_message_content

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.scope import ConversationScope

log = logging.getLogger("assistant.tool_loop")

MAX_ROUNDS = 10
"""Engine calls in one reply; a model still calling tools after this many ends the reply (failed, with a note)."""
MAX_CALLS_PER_ROUND = 16
"""Tool calls run per engine round; the model is told that calls past this were not run."""
CONFIRM_TIMEOUT_S = 120.0
"""How long a call that needs confirmation waits for `tool.confirm` before it counts as declined."""
MAX_RESULT_BYTES = 16 * 1024
"""A tool result's JSON past this many bytes is cut (with a note) before the model, the wire and the store see it."""


@dataclass(frozen=True)
class ToolOutcome:
    """How one tool call ended: its status, its result (when ok), why not (otherwise), and what the model is told."""

    call: ToolCall
    status: ToolStatus
    result: Any = None
    error: str | None = None

    @property
    def content(self) -> str:
        """The `tool` message's content for the model."""
        return tool_message_content(self.status, self.result, self.error)

    def message(self) -> ChatMessage:
        """The `tool` message that answers the call."""
        return ChatMessage("tool", self.content, tool_call_id=self.call.id, name=self.call.name)


def user_timezone(conversation: ConversationScope | None, app: App) -> ZoneInfo:
    """The session's time zone, else `[dialogue] timezone`, else UTC."""
    if conversation is not None and conversation.timezone is not None:
        return conversation.timezone
    configured = app.config.dialogue.timezone
    return ZoneInfo(configured) if configured else ZoneInfo("UTC")


def _bounded(result: Any) -> tuple[Any, str | None]:
    """The result as it may travel (JSON data, cut to MAX_RESULT_BYTES with a note), or (None, why) when it is not JSON."""
    try:
        encoded = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return None, f"the tool returned {type(result).__name__}, which is not JSON data: {exc}"
    size = len(encoded.encode())
    if size <= MAX_RESULT_BYTES:
        return (result if isinstance(result, str) else json.loads(encoded)), None
    cut = encoded.encode()[:MAX_RESULT_BYTES].decode(errors="ignore")
    return f"{cut}\n[the result was {size} bytes; cut to the first {MAX_RESULT_BYTES}]", None


def _json_default(value: Any) -> Any:
    """Dates and times as ISO 8601; anything else is not JSON."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ToolRunner:
    """Runs the tool calls of one reply: checks, confirmation, the call within its timeout, events and stored parts."""

    def __init__(self, stream: ReplyStream) -> None:
        self.stream = stream
        self.conversation = stream.conversation
        self.app = stream.conversation.app
        self.reply: Reply = stream.reply

    def valid_tools(self) -> str:
        """The registered tools' names, for error messages to the model."""
        return ", ".join(self.app.tools) or "none"

    async def run(self, call: ToolCall, refuse: str | None = None) -> ToolOutcome:
        """Check, confirm and run one call (or refuse it, saying why); publish and record it; never raises for a bad call or a failing tool."""
        tool = self.app.tools.get(call.name)
        arguments: dict[str, Any] = {}
        problem = refuse
        if problem is None:
            problem, arguments = self._check(call, tool)
        needs_confirmation = tool is not None and problem is None and tool.requires_confirmation
        await self.conversation.publish(events.ToolCallStarted(
            response_id=self.reply.response_id, call_id=call.id, name=call.name, arguments=call.arguments,
            needs_confirmation=needs_confirmation,
        ))
        self.stream.parts.append(PartRecord("tool_call", json.dumps(
            {"call_id": call.id, "name": call.name, "arguments": call.arguments, "needs_confirmation": needs_confirmation},
            ensure_ascii=False, default=str,
        )))
        if problem is not None:
            outcome = ToolOutcome(call, "error", error=problem)
        else:
            assert tool is not None
            outcome = await self._confirm_and_call(tool, call, arguments, needs_confirmation)
        await self._finish(outcome)
        return outcome

    def _check(self, call: ToolCall, tool: Tool | None) -> tuple[str | None, dict[str, Any]]:
        """(what is wrong with the call for the model to correct, or None; the arguments converted for the tool)."""
        if not call.name:
            raw = str(call.arguments.get("_unparsed", call.arguments))[:500]
            return (
                f"the tool call could not be read (its JSON is broken or it names no tool): {raw!r}. "
                f'Call a tool as {{"name": "<tool>", "arguments": {{...}}}}. Valid tools: {self.valid_tools()}.'
            ), {}
        if tool is None:
            return f"there is no tool named {call.name!r}. Valid tools: {self.valid_tools()}.", {}
        try:
            return None, tool.check_arguments(call.arguments)
        except ValueError as exc:
            return f"invalid arguments for {call.name}: {exc}", {}

    async def _confirm_and_call(self, tool: Tool, call: ToolCall, arguments: dict[str, Any], needs_confirmation: bool) -> ToolOutcome:
        if needs_confirmation:
            approved = await self._confirmation(call.id)
            if approved is None:
                return ToolOutcome(call, "cancelled", error="the reply was cancelled")
            if not approved:
                return ToolOutcome(call, "declined", error=f"the user declined to run {tool.name}; do not try again unless asked")
        if self.reply.stopped.is_set():
            return ToolOutcome(call, "cancelled", error="the reply was cancelled")
        return await self._call(tool, call, arguments)

    async def _confirmation(self, call_id: str) -> bool | None:
        """The user's answer (a tool.confirm), False after CONFIRM_TIMEOUT_S, None when the reply is cancelled first."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.reply.confirmations[call_id] = answer
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.reply.stopped.wait())
        try:
            await asyncio.wait([answer, stop], timeout=CONFIRM_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            if answer.done() and not answer.cancelled():
                return answer.result()
            return None if stop.done() else False
        finally:
            stop.cancel()
            answer.cancel()
            self.reply.confirmations.pop(call_id, None)

    def context(self, call: ToolCall) -> ToolContext:
        """The ToolContext of a call made now in this reply's conversation."""
        conversation = self.conversation
        timezone = user_timezone(conversation, self.app)
        return ToolContext(
            principal=conversation.principal, conversation_id=conversation.id, timezone=timezone,
            now=datetime.now(timezone), app=self.app, conversation=conversation, call_id=call.id,
        )

    async def _call(self, tool: Tool, call: ToolCall, arguments: dict[str, Any]) -> ToolOutcome:
        """Run the tool within its timeout, stopping when the reply is cancelled."""
        if tool.context_parameter is not None:
            arguments = {**arguments, tool.context_parameter: self.context(call)}
        key = f"tool:{tool.name}"
        work: asyncio.Future[Any]
        try:
            if inspect.iscoroutinefunction(tool.function):
                work = asyncio.ensure_future(tool.function(**arguments))
            else:
                work = self.app.scheduler.submit_named(key, _call_sync, tool.function, arguments)
        except Exception as exc:  # a bad argument binding, or the tool failed before it awaited anything
            return self._failed(tool, call, exc)
        stop = asyncio.ensure_future(self.reply.stopped.wait())
        try:
            await asyncio.wait([work, stop], timeout=tool.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            if work.cancelled():
                return ToolOutcome(call, "cancelled", error="the tool call was cancelled")
            failure = work.exception()
            if failure is not None:
                return self._failed(tool, call, failure)
            result, problem = _bounded(await work)
            if problem is not None:
                return ToolOutcome(call, "error", error=problem)
            return ToolOutcome(call, "ok", result=result)
        work.cancel()  # an async tool stops here; a sync one cannot be stopped: its worker is given up
        if not inspect.iscoroutinefunction(tool.function):
            self.app.scheduler.abandon(key=key)
        if self.reply.stopped.is_set():
            return ToolOutcome(call, "cancelled", error="the reply was cancelled")
        log.warning("tool %s (plugin %s) did not answer within %g s", tool.name, tool.plugin, tool.timeout_s)
        return ToolOutcome(call, "timeout", error=f"{tool.name} did not answer within {tool.timeout_s:g} s")

    @staticmethod
    def _failed(tool: Tool, call: ToolCall, exc: BaseException) -> ToolOutcome:
        log.warning("tool %s (plugin %s) failed", tool.name, tool.plugin, exc_info=exc)
        return ToolOutcome(call, "error", error=f"{tool.name} failed: {type(exc).__name__}: {exc}")

    async def _finish(self, outcome: ToolOutcome) -> None:
        call = outcome.call
        known = call.name in self.app.tools  # an unknown name is the model's, not a label to keep
        self.app.metrics.tool_calls.labels(call.name if known else "(unknown)", outcome.status).inc()
        self.stream.parts.append(PartRecord("tool_result", json.dumps(
            {"call_id": call.id, "name": call.name, "status": outcome.status, "result": outcome.result, "error": outcome.error},
            ensure_ascii=False,
        )))
        await self.conversation.publish(events.ToolCallDone(
            response_id=self.reply.response_id, call_id=call.id, name=call.name, status=outcome.status,
            result=outcome.result, error=outcome.error,
        ))


def _call_sync(function: Any, arguments: dict[str, Any]) -> Any:
    """Call a sync tool on its worker thread."""
    return function(**arguments)


async def tool_rounds(stream: ReplyStream, engine: DialogueEngine, request: DialogueRequest) -> None:
    """Ask the engine, run the tools it calls, ask again with their results: until it answers, at most MAX_ROUNDS times.

    The reply's status follows the last round; a model still calling tools after MAX_ROUNDS ends the
    reply `failed` with a note. Cancelling the reply stops the loop at once (between or during tool calls).
    """
    runner = ToolRunner(stream)
    specs = tuple(tool.spec() for tool in stream.conversation.app.tools.values())
    messages = list(request.messages)
    for _ in range(MAX_ROUNDS):
        outcome = await stream.round(engine, dataclasses.replace(request, messages=list(messages), tools=specs))
        result = outcome.result
        if outcome.status != "completed" or result is None or not result.tool_calls:
            return
        messages.append(ChatMessage("assistant", result.text, tool_calls=result.tool_calls))
        stream.status, stream.error = "cancelled", None  # should the task be cancelled while the tools run
        for index, call in enumerate(result.tool_calls):
            if stream.reply.stopped.is_set():
                break
            refuse = f"not run: at most {MAX_CALLS_PER_ROUND} tool calls are run at a time" if index >= MAX_CALLS_PER_ROUND else None
            messages.append((await runner.run(call, refuse)).message())
        if stream.reply.stopped.is_set():
            stream.status, stream.error = "cancelled", None
            return
    note = f"[stopped: the model was still calling tools after {MAX_ROUNDS} rounds]"
    await stream.say(("\n" if stream.text else "") + note)
    stream.status, stream.error = "failed", ErrorInfo("internal", f"the model called tools {MAX_ROUNDS} rounds in a row without answering")


async def reply_with_tools(
    conversation: ConversationScope, engine: DialogueEngine, request: DialogueRequest, reply: Reply, turn_id: str,
    announce_turn: bool = True, spoken_until: float | None = None,
) -> None:
    """A reply in which the engine may call tools (see `tool_rounds`); stored and announced once, whatever happened."""
    stream = ReplyStream(conversation, reply, turn_id, spoken_until)
    try:
        await stream.start(announce_turn)
        await tool_rounds(stream, engine, request)
    finally:
        await stream.end()


async def reply_with_route(
    conversation: ConversationScope, engine: DialogueEngine | None, request: DialogueRequest | None, reply: Reply,
    turn_id: str, name: str, arguments: dict[str, Any], announce_turn: bool = True, spoken_until: float | None = None,
) -> None:
    """A turn a router claimed for a tool: run it as if the model had called it, then say its `confirmation`.

    Without a confirmation the engine answers from the result: given as a tool exchange to an engine
    that takes tools (which may then call more), folded into the user's message for one that does not.
    With no engine, the reply is the result itself. A failed tool is said in plain words unless the
    engine takes tools (it may then correct the call).
    """
    stream = ReplyStream(conversation, reply, turn_id, spoken_until)
    try:
        await stream.start(announce_turn)
        call = ToolCall(new_call_id(), name, arguments)
        stream.status, stream.error = "cancelled", None  # should the task be cancelled while the tool runs
        outcome = await ToolRunner(stream).run(call)
        if reply.stopped.is_set():
            return
        stream.status = "completed"
        confirmation = outcome.result.get("confirmation") if isinstance(outcome.result, dict) else None
        if outcome.status == "ok" and isinstance(confirmation, str) and confirmation:
            await stream.say(confirmation)
        elif outcome.status != "ok" and (engine is None or not engine.capabilities.accepts_tools):
            # a model that cannot read a tool error would answer beside the point: say what went wrong
            await stream.say(f"Sorry, I could not do that ({name}): {outcome.error or outcome.status}")
        elif engine is None or request is None:
            await stream.say(outcome.content)
        elif engine.capabilities.accepts_tools:
            exchange = [ChatMessage("assistant", "", tool_calls=(call,)), outcome.message()]
            await tool_rounds(stream, engine, dataclasses.replace(request, messages=[*request.messages, *exchange]))
        else:
            await stream.round(engine, dataclasses.replace(request, messages=fold_result(list(request.messages), call, outcome.content)))
    finally:
        await stream.end()


def fold_result(messages: list[ChatMessage], call: ToolCall, content: str) -> list[ChatMessage]:
    """For an engine that cannot take tool messages: the tool's result appended to the last user message as text."""
    note = f"[The {call.name} tool returned: {content}]"
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            message = messages[index]
            messages[index] = dataclasses.replace(message, content=f"{message.content}\n\n{note}".strip())
            return messages
    return [*messages, ChatMessage("user", note)]
