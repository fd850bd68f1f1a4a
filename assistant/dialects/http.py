"""What every HTTP dialect does with a request before its own work: the same rules as the native wire.

A request is authenticated by its bearer token (`unauthorized` without a valid one; auth off: the
principal `local`), refused while the server is not ready (`unavailable`), counted against the
principal's turn rate (`rate_limited`, `[limits] turns_per_minute`) when it asks an engine for work, and
held in one of the principal's session places while it runs (`[limits] sessions_per_principal`, per
client address with auth off), so an HTTP client gets no more than a websocket client. Bodies are
bounded before they are read whole (`too_large`) and JSON errors name what is wrong (`bad_request`).
Each dialect renders `AssistantError` in its own wire's error shape, with `HTTP_STATUS` for the status.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from assistant.access import bearer_token, principal_of
from assistant.errors import AssistantError, ErrorCode

if TYPE_CHECKING:
    from starlette.requests import Request

    from assistant.dialects import ServerContext

HTTP_STATUS: dict[ErrorCode, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "too_large": 413,
    "unsupported": 400,
    "unavailable": 503,
    "not_found": 404,
    "rate_limited": 429,
    "internal": 500,
}
"""The HTTP status each error code answers with."""


async def request_principal(server: ServerContext, request: Request) -> str:
    """The principal of a request's `Authorization: Bearer` token; AssistantError when the server is not ready or the token is bad."""
    if not server.ready:
        raise AssistantError("unavailable", "the server is starting or shutting down; try again shortly")
    token = bearer_token(request.headers.get("authorization"))
    principal = await principal_of(server.app.auth, token)
    if principal is None:
        raise AssistantError("unauthorized", "invalid or revoked token" if token else "this server needs a token (Authorization: Bearer <token>)")
    return principal


@asynccontextmanager
async def request_slot(server: ServerContext, request: Request, principal: str, counts_as_turn: bool = True) -> AsyncIterator[None]:
    """Hold one of the principal's session places while the request runs; take a turn from its rate when it asks for work."""
    app = server.app
    key = app.session_key(principal, request.client.host if request.client else None)
    refused = app.sessions.enter(key)
    if refused is not None:
        raise AssistantError("rate_limited", refused)
    try:
        if counts_as_turn:
            wait = app.turn_rate.take(principal)
            if wait is not None:
                raise AssistantError(
                    "rate_limited", f"more than {app.config.limits.turns_per_minute} requests a minute; try again in {wait:.0f} s"
                )
        yield
    finally:
        app.sessions.leave(key)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (`too_large`) as soon as it is known to exceed `max_bytes`, before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise AssistantError("too_large", f"the request body is {declared} bytes; at most {max_bytes} are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise AssistantError("too_large", f"the request body is over {max_bytes} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON (bounded as `read_body`); bad_request saying where the JSON breaks."""
    body = await read_body(request, max_bytes)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise AssistantError("bad_request", "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise AssistantError("bad_request", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def request_limit(server: ServerContext) -> int:
    """The largest request body a dialect reads: a turn's parts (`[limits] max_turn_bytes`) as base64, plus room for JSON."""
    return server.app.config.limits.max_turn_bytes * 4 // 3 + 64 * 1024
