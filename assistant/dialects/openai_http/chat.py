"""`POST /v1/chat/completions`: one stateless reply, whole or streamed as `chat.completion.chunk` events.

The history is decoded by `stateless_context` (a turn's limits, transcription, late fusion) and answered
by `complete`; nothing is stored. Stop sequences are applied here: the text is cut before the first one
and the engine told to stop; while streaming, the last characters that could begin a stop sequence are
held back until it is clear they do not. A client that goes away, mid-stream or while it waits for a
whole answer, cancels the engine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from assistant.dialects.http import request_principal, request_slot
from assistant.dialects.openai_http.catalog import resolve_model
from assistant.dialects.openai_http.errors import OpenAIError, from_assistant_error
from assistant.dialects.openai_http.handling import SSE_HEADERS, StreamWithCleanup, finished_unless_gone, hold_for_shutdown, json_body, sse
from assistant.dialects.openai_http.messages import stateless_messages, tool_specs
from assistant.dialects.openai_http.models import ChatCompletionRequest
from assistant.dialogue_call import complete
from assistant.engines import DialogueRequest, DialogueResult, GenerationOptions, ToolCall
from assistant.errors import AssistantError
from assistant.stateless import stateless_context

if TYPE_CHECKING:
    from starlette.requests import Request

    from assistant.app import App
    from assistant.dialects import ServerContext


class Completion:
    """One engine call through `complete`, with the client's stop sequences applied to its text.

    `pieces` yields the text as it becomes safe to send (None once the call has ended); `result()` is
    how it ended. Cancelling `task` (the client went away) stops the engine.
    """

    def __init__(self, app: App, request: DialogueRequest, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(stop) for stop in stops), default=1) - 1  # characters that may be the start of a stop sequence
        self.text = ""
        self.sent = 0
        self.stopped = False  # a stop sequence was found
        self.cancelled = threading.Event()
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.first = asyncio.Event()  # set at the first piece, or when the call ends
        self.task = asyncio.create_task(complete(app, request, self._on_delta, self.cancelled))
        self.task.add_done_callback(self._ended)

    async def _on_delta(self, delta: str) -> None:
        if self.stopped:
            return
        self.text += delta
        safe = len(self.text) - self.hold
        if self.stops:
            start = max(0, self.sent - self.hold)
            found = [i for i in (self.text.find(stop, start) for stop in self.stops) if i >= 0]
            if found:
                self.text = self.text[: min(found)]
                safe = len(self.text)
                self.stopped = True
                self.cancelled.set()  # the engine stops at its next token
        self._send(safe)

    def _send(self, until: int) -> None:
        if until > self.sent:
            self.pieces.put_nowait(self.text[self.sent : until])
            self.sent = until
            self.first.set()

    def _ended(self, task: asyncio.Task[DialogueResult]) -> None:
        if not task.cancelled() and task.exception() is None:
            if not self.stops:
                self.text = task.result().text  # the engine's own text is authoritative when nothing was cut
            self._send(len(self.text))
        self.pieces.put_nowait(None)
        self.first.set()

    def result(self) -> DialogueResult:
        """How the finished call ended (raises what it raised)."""
        return self.task.result()

    def finish_reason(self) -> str:
        """OpenAI's finish_reason: `stop` (also for a stop sequence), `length` or `tool_calls`."""
        reason = self.result().finish_reason
        return "stop" if self.stopped or reason == "cancelled" else reason

    async def cancel(self) -> None:
        """Stop the engine call (if still running) and wait for it."""
        if not self.task.done():
            self.task.cancel()
        await asyncio.wait([self.task])


def tool_calls_out(calls: tuple[ToolCall, ...], indexed: bool) -> list[dict[str, Any]]:
    """The calls as OpenAI's `tool_calls` (arguments as a JSON string); streamed ones carry their `index`."""
    out = []
    for index, call in enumerate(calls):
        entry: dict[str, Any] = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
        out.append({"index": index, **entry} if indexed else entry)
    return out


def usage_out(result: DialogueResult) -> dict[str, int]:
    """OpenAI's usage object."""
    prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _well_formed(result: DialogueResult) -> tuple[str, tuple[ToolCall, ...]]:
    """The text and the calls a client can act on: a call the engine could not parse is shown as text instead."""
    calls = tuple(call for call in result.tool_calls if call.name)
    broken = [str(call.arguments.get("_unparsed", "")) for call in result.tool_calls if not call.name]
    return "\n".join(t for t in (result.text, *broken) if t), calls


def dialogue_request(body: ChatCompletionRequest, messages: list[Any]) -> DialogueRequest:
    """The engine's request: options, tools and the history."""
    if body.response_format is not None and body.response_format.type != "text":
        raise OpenAIError(400, f"response_format: {body.response_format.type} is not supported; only text", param="response_format", code="unsupported_value")
    if body.logprobs:
        raise OpenAIError(400, "logprobs: not supported by this server", param="logprobs", code="unsupported_value")
    temperature = body.temperature
    if body.top_p == 0:  # nucleus of one token: greedy
        temperature = 0.0
    options = GenerationOptions(
        max_new_tokens=body.max_completion_tokens or body.max_tokens, temperature=temperature, top_p=body.top_p if body.top_p else None,
        seed=body.seed,
    )
    tools, choice = tool_specs(body)
    return DialogueRequest(messages, options, tools, choice)


async def chat_completions(server: ServerContext, request: Request) -> Response:
    """`POST /v1/chat/completions`."""
    app = server.app
    principal = await request_principal(server, request)
    cleanup = AsyncExitStack()
    try:
        await cleanup.enter_async_context(request_slot(server, request, principal))
        body = await json_body(server, request, ChatCompletionRequest)
        engine = resolve_model(app, body.model, "dialogue")
        history = stateless_messages(body.messages)
        messages = await cleanup.enter_async_context(stateless_context(app, history))
        completion = Completion(app, dialogue_request(body, messages), body.stops)
        cleanup.push_async_callback(completion.cancel)
        hold_for_shutdown(app, completion.cancelled.set, completion.task)  # shutdown, past its grace period, stops the engine
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if not body.stream:
            if not await finished_unless_gone(request, completion.task):
                return Response(status_code=499)  # nobody reads it: the client went away and the engine was stopped
            return JSONResponse(whole(completion, completion_id, created, engine.id))
        if not await finished_unless_gone(request, asyncio.create_task(completion.first.wait())):
            return Response(status_code=499)
        if completion.task.done() and completion.task.exception() is not None:
            completion.result()  # refused or failed before any text: an error status, not a stream
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        stream = chunks(completion, completion_id, created, engine.id, include_usage)
        response = StreamWithCleanup(stream, cleanup, "text/event-stream", SSE_HEADERS)
        cleanup = AsyncExitStack()  # the response closes the original one
        return response
    finally:
        await cleanup.aclose()


def whole(completion: Completion, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """The non-streaming answer."""
    result = completion.result()
    text, calls = _well_formed(result)
    text = completion.text if completion.stops else text
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = tool_calls_out(calls, indexed=False)
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else completion.finish_reason(), "logprobs": None}],
        "usage": usage_out(result),
    }


async def chunks(completion: Completion, completion_id: str, created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE stream: a role chunk, content chunks, tool-call chunks, the finish chunk, the usage chunk if asked, `[DONE]`.

    Every chunk carries the same `id` and `created`. An error after the stream began is sent as an
    `error` event (the status line is long gone) and the stream ends without `[DONE]`.
    """

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        event: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if include_usage:
            event["usage"] = None
        return sse(event)

    yield chunk({"role": "assistant", "content": ""})
    while (piece := await completion.pieces.get()) is not None:
        yield chunk({"content": piece})
    try:
        result = completion.result()
    except AssistantError as exc:
        yield sse(from_assistant_error(exc).body())
        return
    _, calls = _well_formed(result)
    broken = [str(call.arguments.get("_unparsed", "")) for call in result.tool_calls if not call.name]
    if broken:
        yield chunk({"content": "\n".join(broken)})
    if calls:
        for call in tool_calls_out(calls, indexed=True):
            yield chunk({"tool_calls": [call]})
    yield chunk({}, "tool_calls" if calls else completion.finish_reason())
    if include_usage:
        yield sse({
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None,
            "choices": [], "usage": usage_out(result),
        })
    yield sse("[DONE]")
