"""The OpenAI HTTP dialect: OpenAI's REST API under `/v1`, served by the same core as every other wire.

Routes: `GET /v1/models` and `/v1/models/{id}` (our engines by role, see `catalog`), `POST /v1/chat/completions`
(`chat`), `POST /v1/audio/transcriptions` and `/v1/audio/speech` (`audio`), `POST /v1/images/generations`
(`images`). Requests are stateless, as OpenAI's are; only images asked for as URLs are stored.
Every request is authenticated by its bearer token and held to the native wire's limits
(`assistant.dialects.http`); every error is OpenAI's envelope (`errors`). docs/openai.md is the reference.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from assistant.dialects import Dialect, ServerContext
from assistant.dialects.http import request_principal
from assistant.dialects.openai_http import audio, chat, images
from assistant.dialects.openai_http.catalog import find_model, list_models, model_entry
from assistant.dialects.openai_http.errors import OpenAIError, not_found_model
from assistant.dialects.openai_http.handling import Handler, endpoint

if TYPE_CHECKING:
    from starlette.requests import Request


class Fallback(Route):
    """A route that takes only requests no other route of the app serves in full, wherever it is listed
    (other dialects serve paths under `/v1` too: the Realtime API's `/v1/realtime`)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, given up when another route of the app matches the request fully."""
        match, child = super().matches(scope)
        if match is Match.NONE or "app" not in scope:
            return match, child
        for route in scope["app"].router.routes:
            if route is not self and route.matches(scope)[0] is Match.FULL:
                return Match.NONE, {}
        return match, child


class OpenAIDialect(Dialect):
    """OpenAI's HTTP API at `/v1` (not its Realtime websocket)."""

    name = "openai"

    def __init__(self) -> None:
        self.created = int(time.time())  # the `created` of every model: when this server started
        self.served: dict[str, str] = {}  # path -> method, for the 404 and 405 answers

    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """The `/v1` routes."""
        post: dict[str, Handler] = {
            "/v1/chat/completions": chat.chat_completions,
            "/v1/audio/transcriptions": audio.transcriptions,
            "/v1/audio/speech": audio.speech,
            "/v1/images/generations": images.generations,
        }
        self.served = {"/v1/models": "GET", **dict.fromkeys(post, "POST")}
        return [
            Route("/v1/models", endpoint(server, self.models), methods=["GET"]),
            Route("/v1/models/{model:path}", endpoint(server, self.model), methods=["GET"]),
            *(Route(path, endpoint(server, handler), methods=["POST"]) for path, handler in post.items()),
            Fallback("/v1/{path:path}", endpoint(server, self.unknown), methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        ]

    async def unknown(self, server: ServerContext, request: Request) -> Response:
        """Any other `/v1` path, or a served one with another method: OpenAI's 404 (or 405) envelope."""
        path = request.url.path
        if path in self.served or path.startswith("/v1/models/"):
            raise OpenAIError(405, f"{request.method} {path} is not served; use {self.served.get(path, 'GET')}", code="method_not_allowed")
        raise OpenAIError(404, f"Invalid URL ({request.method} {path}): this server serves {', '.join(self.served)}", code="unknown_url")

    async def models(self, server: ServerContext, request: Request) -> Response:
        """`GET /v1/models`: every configured engine."""
        await request_principal(server, request)
        return JSONResponse({"object": "list", "data": list_models(server.app, self.created)})

    async def model(self, server: ServerContext, request: Request) -> Response:
        """`GET /v1/models/{id}`: one engine, by id or role alias; 404 `model_not_found` otherwise."""
        await request_principal(server, request)
        name = request.path_params["model"]
        found = find_model(server.app, name)
        if found is None:
            raise not_found_model(name)
        role, engine = found
        return JSONResponse(model_entry(engine, role, self.created))
