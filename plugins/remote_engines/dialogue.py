"""The `remote` dialogue engine: streamed chat completions from any OpenAI-compatible server.

Our request becomes a `POST /chat/completions` with `stream: true`: the messages (images as PNG data
URLs for a model that sees images; assistant `tool_calls` and `tool` results for one that takes
tools), the options (`max_tokens`, `temperature`, `top_p`, `seed`), the tools and `tool_choice`.
Content deltas are emitted as they arrive; streamed tool-call fragments are put together by index
into `ToolCall`s (finish_reason `tool_calls`); usage comes from the last chunk when the server sends it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant import (
    CallStopped,
    Capabilities,
    ChatMessage,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    EngineError,
    FinishReason,
    ToolCall,
    Usage,
    new_call_id,
    stop_on,
)

from .client import engine_error, open_client, run_blocking
from .settings import DialogueSettings, Endpoint

if TYPE_CHECKING:
    from openai import AsyncOpenAI


class RemoteDialogue(DialogueEngine):
    """A model served elsewhere, streamed over HTTP on the event loop (`generate_async`); no thread per call."""

    def __init__(self, endpoint: Endpoint, settings: DialogueSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = open_client(endpoint)
        self.id = f"remote:{endpoint.model}"
        self.capabilities = Capabilities(
            accepts_images=settings.accepts_images, accepts_tools=settings.accepts_tools, max_batch=endpoint.concurrency,
        )

    def generate(self, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        """Blocking form of `generate_async`, on a client of its own (the core awaits `generate_async`)."""
        return run_blocking(self.endpoint, lambda client: self._generate(client, request, emit, cancelled))

    async def generate_async(self, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        """Stream one reply; see DialogueEngine.generate. Setting `cancelled`, or cancelling the task, closes the stream."""
        return await self._generate(self.client, request, emit, cancelled)

    async def close_async(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    async def _generate(self, client: AsyncOpenAI, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        body = await self.request_body(request)
        reply = StreamedReply(emit)
        try:
            async with stop_on(cancelled):
                stream = await client.chat.completions.create(**body)
                async with stream:  # leaving it, however, closes the HTTP response: the server stops generating
                    async for chunk in stream:
                        reply.add(chunk)
        except CallStopped:
            return reply.result("cancelled")
        except EngineError:
            raise
        except Exception as exc:
            raise engine_error(exc, self.endpoint) from exc
        return reply.result()

    async def request_body(self, request: DialogueRequest) -> dict[str, Any]:
        """The chat completion request: model, messages, options, tools; images encoded off the event loop."""
        images = [image for message in request.messages for image in message.images] if self.capabilities.accepts_images else []
        urls = await asyncio.to_thread(lambda: [data_url(image) for image in images]) if images else []
        position = iter(urls)
        body: dict[str, Any] = {
            "model": self.endpoint.model, "stream": True,
            "messages": [message_out(message, [next(position) for _ in message.images] if images else []) for message in request.messages],
        }
        if self.settings.include_usage:
            body["stream_options"] = {"include_usage": True}
        options = request.options
        for key, value in (("max_tokens", options.max_new_tokens), ("temperature", options.temperature),
                           ("top_p", options.top_p), ("seed", options.seed)):
            if value is not None:
                body[key] = value
        if request.tools and self.capabilities.accepts_tools:
            body["tools"] = [tool.as_function() for tool in request.tools]
            body["tool_choice"] = request.tool_choice
        if self.settings.extra_body:
            body["extra_body"] = self.settings.extra_body
        return body


def message_out(message: ChatMessage, image_urls: list[str]) -> dict[str, Any]:
    """One of our messages in OpenAI's form."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    out: dict[str, Any] = {"role": message.role}
    if image_urls:
        out["content"] = [*([{"type": "text", "text": message.content}] if message.content else []),
                          *({"type": "image_url", "image_url": {"url": url}} for url in image_urls)]
    else:
        out["content"] = message.content
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
            for call in message.tool_calls
        ]
    return out


def data_url(image: Any) -> str:
    """A PIL image as a PNG data URL (lossless: the model sees the pixels the user sent)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class _CallParts:
    """A tool call arriving in pieces: its id and name once, its arguments' JSON in fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class StreamedReply:
    """The chunks of one streamed completion, put together: text emitted as it comes, tool calls, usage, finish reason."""

    emit: Callable[[str], None]
    pieces: list[str] = field(default_factory=list)
    calls: dict[int, _CallParts] = field(default_factory=dict)
    usage: Usage | None = None
    finish_reason: str | None = None

    def add(self, chunk: Any) -> None:
        """Take one `chat.completion.chunk`."""
        if chunk.usage is not None:
            self.usage = Usage(int(chunk.usage.prompt_tokens or 0), int(chunk.usage.completion_tokens or 0))
        if not chunk.choices:
            return
        choice = chunk.choices[0]
        delta = choice.delta
        if delta is not None and delta.content:
            self.pieces.append(delta.content)
            self.emit(delta.content)
        for part in (delta.tool_calls or []) if delta is not None else []:
            call = self.calls.setdefault(part.index if part.index is not None else len(self.calls), _CallParts())
            call.id = call.id or (part.id or "")
            if part.function is not None:
                call.name = call.name or (part.function.name or "")
                call.arguments += part.function.arguments or ""
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason

    def result(self, finish: FinishReason | None = None) -> DialogueResult:
        """How the reply ended: `finish` when given (cancelled), else from the server's finish_reason and the calls."""
        text = "".join(self.pieces)
        usage = self.usage or Usage(0, len(self.pieces))
        if finish == "cancelled":
            return DialogueResult(text, usage, "cancelled")
        calls = tuple(tool_call(parts) for _, parts in sorted(self.calls.items()))
        if calls:
            return DialogueResult(text, usage, "tool_calls", calls)
        return DialogueResult(text, usage, "length" if self.finish_reason == "length" else "stop")


def tool_call(parts: _CallParts) -> ToolCall:
    """A finished call; arguments that are not a JSON object come back unparsed, as `parse_tool_calls` reports them."""
    call_id = parts.id or new_call_id()
    try:
        arguments = json.loads(parts.arguments) if parts.arguments.strip() else {}
    except json.JSONDecodeError:
        arguments = None
    if not parts.name or not isinstance(arguments, dict):
        return ToolCall(call_id, "", {"_unparsed": json.dumps({"name": parts.name, "arguments": parts.arguments})})
    return ToolCall(call_id, parts.name, arguments)
