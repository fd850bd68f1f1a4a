"""The Ollama dialect: Ollama's HTTP API under `/api`, so Ollama clients (Home Assistant's Ollama integration, the
`ollama` Python client) use the configured dialogue engine as if it were an Ollama model.

Served: `GET /api/version`, `GET /api/tags`, `GET /api/ps`, `POST /api/show`, `POST /api/chat` (NDJSON stream or
one object; images, tools), and `POST /api/pull`, which succeeds for the model we serve and refuses any other.
Every request passes the rules of `assistant.dialects.http` (bearer token, readiness, session places, turn rate,
bounded bodies); errors are Ollama's `{"error": "..."}` with the HTTP status of their code. A chat is stateless:
the client sends the whole history; nothing is stored as a conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from assistant.dialects import Dialect, ServerContext
from assistant.dialects.http import HTTP_STATUS, read_json, request_limit, request_principal, request_slot
from assistant.dialects.ollama import wire
from assistant.dialogue_call import complete
from assistant.engines import ChatMessage, DialogueEngine, DialogueRequest, DialogueResult
from assistant.errors import AssistantError
from assistant.stateless import stateless_context

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.dialects.ollama")

SMALL_BODY = 64 * 1024
"""Largest body of the requests that only name a model (`/api/show`, `/api/pull`)."""
NDJSON = "application/x-ndjson"


def error_response(exc: AssistantError) -> JSONResponse:
    """An AssistantError as Ollama answers errors: `{"error": message}` with the code's HTTP status."""
    return JSONResponse({"error": exc.message}, HTTP_STATUS[exc.code])


def ndjson(item: dict[str, Any]) -> bytes:
    """One line of an NDJSON stream."""
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"


class OllamaDialect(Dialect):
    """Ollama's API on the server's HTTP port."""

    name = "ollama"

    def __init__(self) -> None:
        self.started_at = wire.now()  # what `modified_at` says of the model we serve

    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """The `/api/...` routes."""

        def route(path: str, method: str, handler: Callable[[ServerContext, Request], Awaitable[Response]]) -> Route:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(server, request)
                except AssistantError as exc:
                    return error_response(exc)

            return Route(path, endpoint, methods=[method])

        return [
            route("/api/version", "GET", self.version),
            route("/api/tags", "GET", self.tags),
            route("/api/ps", "GET", self.ps),
            route("/api/show", "POST", self.show),
            route("/api/pull", "POST", self.pull),
            route("/api/chat", "POST", self.chat),
        ]

    async def version(self, server: ServerContext, request: Request) -> Response:
        """`GET /api/version`: the Ollama API version we follow (Ollama answers it without a token, so do we)."""
        return JSONResponse({"version": wire.API_VERSION})

    async def tags(self, server: ServerContext, request: Request) -> Response:
        """`GET /api/tags`: the dialogue engine as the one model (none when no dialogue engine is configured)."""
        await request_principal(server, request)
        engine = server.app.engines.get("dialogue")
        return JSONResponse({"models": [wire.model_entry(engine, self.started_at)] if engine is not None else []})

    async def ps(self, server: ServerContext, request: Request) -> Response:
        """`GET /api/ps`: the dialogue engine, loaded for as long as the server runs."""
        await request_principal(server, request)
        engine = server.app.engines.get("dialogue")
        if engine is None:
            return JSONResponse({"models": []})
        entry = {**wire.model_entry(engine, self.started_at), "expires_at": "9999-12-31T23:59:59Z", "size_vram": 0}
        del entry["modified_at"]
        return JSONResponse({"models": [entry]})

    async def show(self, server: ServerContext, request: Request) -> Response:
        """`POST /api/show`: what we know of the model (details, capabilities); 404 for a model we do not serve."""
        await request_principal(server, request)
        asked = wire.parse(wire.ModelRequest, await read_json(request, SMALL_BODY))
        engine = find_model(server.app, asked.wanted)
        return JSONResponse({
            "license": "", "modelfile": f"# served by assistant: engine {engine.id}\n", "parameters": "", "template": "",
            "details": wire.details(engine), "model_info": {"general.architecture": engine.id.partition(":")[0]},
            "capabilities": wire.capabilities(engine), "modified_at": self.started_at,
        })

    async def pull(self, server: ServerContext, request: Request) -> Response:
        """`POST /api/pull`: nothing to download; success for the model we serve, a clear 404 for any other."""
        await request_principal(server, request)
        asked = wire.parse(wire.ModelRequest, await read_json(request, SMALL_BODY))
        engine = server.app.engines.get("dialogue")
        if engine is None or asked.wanted not in wire.names_of(engine):
            serving = f"it serves only {wire.model_name(engine)!r}" if engine is not None else "it has no dialogue engine"
            raise AssistantError(
                "not_found", f"model {asked.wanted!r} cannot be pulled: this server downloads no models and {serving} ([engines] dialogue)"
            )
        if asked.stream:
            return Response(ndjson({"status": "success"}), media_type=NDJSON)
        return JSONResponse({"status": "success"})

    async def chat(self, server: ServerContext, request: Request) -> Response:
        """`POST /api/chat`: one answer from the dialogue engine, streamed as NDJSON (default) or as one object."""
        principal = await request_principal(server, request)
        body = await read_json(request, request_limit(server))
        chat = wire.parse(wire.ChatRequest, body)
        app = server.app
        find_model(app, chat.model)
        if not chat.messages:  # Ollama loads the model and answers at once
            return JSONResponse({"model": chat.model, "created_at": wire.now(), "message": {"role": "assistant", "content": ""},
                                 "done_reason": "load", "done": True})
        options = wire.generation_options(chat.options)
        messages = wire.stateless_messages(chat.messages)
        # without a system message, the server's [dialogue] system_prompt leads, as an Ollama model's own SYSTEM would
        system = [] if any(m.role == "system" for m in chat.messages) else [ChatMessage("system", app.config.dialogue.system_prompt)]
        tools = wire.tool_specs(chat.tools)
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def answer() -> None:  # the whole request's work, holding its session place and media until it ends
            try:
                async with request_slot(server, request, principal), stateless_context(app, messages) as context:
                    async def delta(text: str) -> None:
                        items.put_nowait(("delta", text))

                    result = await complete(app, DialogueRequest(system + context, options, tools), delta)
                items.put_nowait(("done", result))
            except AssistantError as exc:
                items.put_nowait(("error", exc))
            except Exception as exc:
                log.exception("ollama chat failed")
                items.put_nowait(("error", AssistantError("internal", f"the request failed: {type(exc).__name__}")))

        started = time.monotonic_ns()
        task = asyncio.create_task(answer())
        try:
            first = await items.get()  # errors before the first word answer with their status
        except BaseException:
            task.cancel()
            raise
        if first[0] == "error":
            await task
            return error_response(first[1])
        if not chat.stream:
            return await self._whole(chat.model, task, items, first, started)
        return StreamingResponse(self._stream(chat.model, task, items, first, started), media_type=NDJSON)

    async def _whole(
        self, model: str, task: asyncio.Task[None], items: asyncio.Queue[tuple[str, Any]], first: tuple[str, Any], started: int,
    ) -> Response:
        """The answer as one object, once the engine has finished."""
        item, first_ns = first, None
        try:
            while item[0] == "delta":
                first_ns = first_ns or time.monotonic_ns()
                item = await items.get()
        finally:
            task.cancel()  # a no-op once it has ended; if the request was abandoned, the engine stops
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if item[0] == "error":
            return error_response(item[1])
        result: DialogueResult = item[1]
        return JSONResponse(wire.final(model, result, result.text, started, first_ns, time.monotonic_ns()))

    async def _stream(
        self, model: str, task: asyncio.Task[None], items: asyncio.Queue[tuple[str, Any]], first: tuple[str, Any], started: int,
    ) -> AsyncIterator[bytes]:
        """NDJSON: one object per piece of text, the tool calls, then the final object; an error mid-stream is `{"error": ...}`."""
        item, first_ns = first, None
        try:
            while item[0] == "delta":
                first_ns = first_ns or time.monotonic_ns()
                yield ndjson(wire.chunk(model, item[1]))
                item = await items.get()
            if item[0] == "error":
                yield ndjson({"error": item[1].message})
                return
            result: DialogueResult = item[1]
            if result.tool_calls:
                yield ndjson({**wire.chunk(model, ""), "message": {"role": "assistant", "content": "",
                                                                   "tool_calls": wire.tool_calls_out(result.tool_calls)}})
            yield ndjson(wire.final(model, result, "", started, first_ns, time.monotonic_ns(), tool_calls=False))
        finally:
            task.cancel()  # a no-op once it has ended; if the client went away, the engine stops
            with contextlib.suppress(asyncio.CancelledError):
                await task


def find_model(app: App, name: str) -> DialogueEngine:
    """The dialogue engine when `name` is one of its names; not_found (Ollama's 404) naming the model we serve otherwise."""
    engine = app.engines.get("dialogue")
    if not isinstance(engine, DialogueEngine):
        raise AssistantError("not_found", f"model {name!r} not found: this server has no dialogue engine ([engines] dialogue)")
    if name not in wire.names_of(engine):
        raise AssistantError("not_found", f"model {name!r} not found; this server serves {wire.model_name(engine)!r}")
    return engine
