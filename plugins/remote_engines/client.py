"""The HTTP side of the remote engines: one `openai.AsyncOpenAI` client per engine, and what its failures mean.

Every way a remote call can fail becomes an `EngineError` whose message a user can read and whose
code the wire maps: the server cannot be reached or did not answer in time (`unavailable`), refused
our token or has no such model (`unavailable`: the operator's to fix), said the request was bad
(`bad_request`, `too_large`), was busy (`rate_limited`), failed (`unavailable`), or sent something
that is not the protocol (`internal`). The server's address stays in the log, not in the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from assistant import EngineError
from assistant.config import ConfigError

from .settings import Endpoint

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger("assistant.remote_engines")

T = TypeVar("T")

EXTRA = "remote"
"""The optional-dependencies extra that installs the client library."""


def open_client(endpoint: Endpoint) -> AsyncOpenAI:
    """A client for the endpoint; its connection pool is reused by every call of the engine."""
    try:
        from openai import AsyncOpenAI
    except ImportError:
        raise ConfigError(f"the remote {endpoint.role} engine needs the openai package: pip install 'selfhosted-assistant[{EXTRA}]'") from None
    return AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=endpoint.timeout_s, max_retries=endpoint.max_retries,
    )


def run_blocking(endpoint: Endpoint, call: Callable[[AsyncOpenAI], Awaitable[T]]) -> T:
    """Run an engine's async call from blocking code (scripts, the conformance kit): an event loop and a client of its own.

    The engine's own client belongs to the server's event loop; this one lives for the one call."""

    async def once() -> T:
        async with open_client(endpoint) as client:
            return await call(client)

    return asyncio.run(once())


def engine_error(exc: Exception, endpoint: Endpoint) -> EngineError:
    """What a failed remote call means, as an EngineError; logged with the server's address."""
    import openai

    what = f"the remote {endpoint.role} engine"
    status = getattr(exc, "status_code", None)
    detail = _server_message(exc)
    if isinstance(exc, openai.APITimeoutError):
        error = EngineError(f"{what} did not answer within {endpoint.timeout_s:g} s", "unavailable")
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        error = EngineError(f"{what} cannot be reached ({_reason(cause) if cause else 'connection failed'})", "unavailable")
    elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        error = EngineError(f"{what} refused this server's credentials (HTTP {status}); check its api_key", "unavailable")
    elif isinstance(exc, openai.NotFoundError):
        error = EngineError(f"{what} has no model {endpoint.model!r} (HTTP 404: {detail})", "unavailable")
    elif isinstance(exc, openai.RateLimitError):
        error = EngineError(f"{what} is busy (HTTP 429: {detail}); try again shortly", "rate_limited")
    elif isinstance(exc, openai.APIStatusError) and status == 413:
        error = EngineError(f"{what} found the request too large ({detail})", "too_large")
    elif isinstance(exc, openai.APIStatusError) and status is not None and 400 <= status < 500:
        error = EngineError(f"{what} refused the request (HTTP {status}: {detail})", "bad_request")
    elif isinstance(exc, openai.APIStatusError):
        error = EngineError(f"{what} failed (HTTP {status}: {detail})", "unavailable")
    elif isinstance(exc, openai.APIError):  # an error event inside a stream that had begun
        error = EngineError(f"{what} failed while answering: {detail}", "unavailable")
    elif isinstance(exc, (json.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError)):
        error = EngineError(f"{what} sent a malformed response ({type(exc).__name__}: {_short(str(exc))})", "internal")
    else:
        error = EngineError(f"{what} failed: {type(exc).__name__}: {_short(str(exc))}", "internal")
    log.warning("%s at %s (model %s): %s", what, endpoint.base_url, endpoint.model, error, exc_info=not isinstance(exc, openai.APIError))
    return error


def _server_message(exc: Exception) -> str:
    """The server's own error message, shortened (the `error.message` of an OpenAI-style error body)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message:
            return _short(message)
    return _short(getattr(exc, "message", None) or str(exc))


def _reason(cause: BaseException) -> str:
    """`connection refused`, `name not known`...: the innermost cause's words."""
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = str(cause) or type(cause).__name__
    if isinstance(cause, ConnectionRefusedError) or "refused" in text.lower():
        return "connection refused"
    return _short(text)


def _short(text: str, limit: int = 300) -> str:
    """At most `limit` characters of `text`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
