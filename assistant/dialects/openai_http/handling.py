"""What every OpenAI route does around its own work: errors in OpenAI's envelope, JSON bodies, SSE, cleanup.

A route is an `Handler`: it gets the server and the request and returns a response or raises. `endpoint`
turns every exception into OpenAI's error envelope (an unexpected one is logged and answered as a
500), so a bad request never reaches uvicorn and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from assistant.access import origin_allowed
from assistant.dialects.http import read_json, request_limit
from assistant.dialects.openai_http.errors import OpenAIError, from_assistant_error, from_validation_error
from assistant.errors import AssistantError

if TYPE_CHECKING:
    from starlette.requests import Request

    from assistant.app import App
    from assistant.dialects import ServerContext

log = logging.getLogger("assistant.openai")

Handler = Callable[["ServerContext", "Request"], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)


def error_response(exc: BaseException) -> Response:
    """Any exception a route raised, as OpenAI's error envelope with its status."""
    if isinstance(exc, OpenAIError):
        return exc.response()
    if isinstance(exc, AssistantError):
        return from_assistant_error(exc).response()
    if isinstance(exc, ValidationError):
        return from_validation_error(exc).response()
    log.error("OpenAI request failed", exc_info=exc)
    return OpenAIError(500, f"the server failed: {type(exc).__name__}", "server_error").response()


def endpoint(server: ServerContext, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint running `handler`, with every error answered in OpenAI's envelope.

    A browser request from an origin other than the server's own or `[server] allowed_origins` is a 403,
    the native websocket's rule.
    """

    async def serve(request: Request) -> Response:
        try:
            origin = request.headers.get("origin")
            if origin is not None and not origin_allowed(origin, request.headers.get("host"), server.app.config.server.allowed_origins):
                # as on the websocket: a page from another origin must not use the server (a form post needs no preflight)
                raise OpenAIError(403, f"origin {origin!r} is not allowed; see [server] allowed_origins", code="origin_not_allowed")
            return await handler(server, request)
        except Exception as exc:
            return error_response(exc)

    return serve


def parse(model: type[M], data: Any, where: str = "") -> M:
    """`data` validated as `model`; a 400 naming the first field at fault otherwise."""
    if not isinstance(data, dict):
        raise OpenAIError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, data, where) from None


def require_content_type(request: Request, *accepted: str) -> str:
    """The request's media type when it is one of `accepted`; 415 otherwise."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in accepted:
        shown = media_type or "none"
        raise OpenAIError(415, f"the Content-Type is {shown}; this endpoint takes {' or '.join(accepted)}", code="unsupported_media_type")
    return media_type


async def json_body(server: ServerContext, request: Request, model: type[M]) -> M:
    """The request's JSON body (Content-Type application/json, bounded by `request_limit`) validated as `model`."""
    require_content_type(request, "application/json")
    return parse(model, await read_json(request, request_limit(server)))


async def finished_unless_gone(request: Request, task: asyncio.Task[Any]) -> bool:
    """Wait for `task`; True once it is done, or False (with the task cancelled and ended) when the client went away first.

    For requests answered in one piece: Starlette notices a client leaving only while it streams.
    """
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(gone())
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return True
    task.cancel()
    await asyncio.wait([task])
    return False


class _Work:
    """An HTTP request's engine work as the App's shutdown sees a reply: something it can `cancel()`."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self.cancel = cancel


def hold_for_shutdown(app: App, cancel: Callable[[], None], task: asyncio.Task[Any] | None = None) -> Callable[[], None]:
    """Make a request's engine work part of the App's graceful shutdown, as a conversation's reply is.

    Shutdown waits for `task` (the engine call, never the sending of its answer, so a slow reader
    cannot hold it) within `[server] shutdown_grace_s`, then calls `cancel` (which must make the engine
    stop soon), as it does for every reply still running. Returns the call that ends the hold; it also
    ends by itself when `task` is done.
    """
    work = _Work(cancel)
    app.replies.add(work)
    if app.cancelling_replies:
        cancel()

    def release(_task: object = None) -> None:
        app.replies.discard(work)
        if task is not None:
            app.turns.discard(task)

    if task is not None:
        app.turns.add(task)
        task.add_done_callback(release)
    return release


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying `data` (JSON, or a literal such as `[DONE]`)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {text}\n\n".encode()


class StreamWithCleanup(StreamingResponse):
    """A streamed response that closes its body iterator and then `cleanup` (slots, held media) however it ends:
    completed, the client gone (Starlette cancels the stream) or never started."""

    def __init__(self, body: AsyncIterator[bytes], cleanup: AsyncExitStack, media_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._body = body
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                aclose = getattr(self._body, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                await self._cleanup.aclose()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers of every event stream: not cached, not buffered by a proxy."""
