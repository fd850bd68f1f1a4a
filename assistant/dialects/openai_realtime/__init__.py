"""The OpenAI Realtime API dialect: JSON events on a websocket at `/v1/realtime` (docs/openai.md, "Realtime API").

The handshake passes the same checks as the native wire (`native.handshake_refusal`: Origin, a valid
bearer token, the server ready) and then takes one of the principal's session places; each connection
is one `RealtimeSession`. Sessions are ephemeral, as at OpenAI: their items live in memory until the
connection closes and nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from assistant.access import bearer_token, principal_of
from assistant.dialects import Dialect, ServerContext
from assistant.dialects.idle import serve_frames
from assistant.dialects.native import close_connections, handshake_refusal
from assistant.dialects.openai_realtime.protocol import RealtimeProblem
from assistant.dialects.openai_realtime.session import RealtimeSession

log = logging.getLogger("assistant.dialects.openai_realtime")

PATH = "/v1/realtime"


class RealtimeDialect(Dialect):
    """OpenAI's Realtime API on `/v1/realtime`."""

    name = "openai_realtime"

    def __init__(self) -> None:
        self._connections: dict[WebSocket, asyncio.Task[None]] = {}

    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """The websocket; a plain GET there answers 426."""

        async def websocket(ws: WebSocket) -> None:
            await self.serve(server, ws)

        return [WebSocketRoute(PATH, websocket), Route(PATH, upgrade_required, methods=["GET"])]

    async def serve(self, server: ServerContext, ws: WebSocket) -> None:
        """Refuse the handshake as the native wire does (403, 401, 503), or past the principal's sessions (429); then serve it."""
        app = server.app
        token = bearer_token(ws.headers.get("authorization"))
        refusal = await handshake_refusal(server, ws, token)
        principal = await principal_of(app.auth, token) if refusal is None else None
        if refusal is None and principal is None:
            refusal = PlainTextResponse("this server needs a token (Authorization: Bearer <token>)\n", 401)
        key = None
        if refusal is None:
            key = app.session_key(principal, ws.client.host if ws.client else None)  # type: ignore[arg-type]
            refused = app.sessions.enter(key)
            if refused is not None:
                key, refusal = None, PlainTextResponse(f"{refused}\n", 429)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        assert principal is not None and key is not None
        task = asyncio.current_task()
        assert task is not None
        self._connections[ws] = task
        app.metrics.sessions.inc()
        try:
            await ws.accept()
            await self._read_loop(server, ws, token, principal)
        finally:
            del self._connections[ws]
            app.sessions.leave(key)
            app.metrics.sessions.dec()

    async def _read_loop(self, server: ServerContext, ws: WebSocket, token: str | None, principal: str) -> None:
        """Hand every frame to the session; hang up on a revoked token or an idle connection."""
        app = server.app
        session = RealtimeSession(app, principal, ws.send_text, ws.query_params.get("model"))

        async def on_frame(frame: str | bytes) -> bool:
            if app.auth.enabled and app.auth.principal(token) != principal:
                await session.error(RealtimeProblem("unauthorized", "the token was revoked", None, None))
                await ws.close(1008, "token revoked")
                return False
            await session.handle_frame(frame)
            return True

        try:
            await session.start()
            await serve_frames(ws, app.config.limits.idle_timeout_s, session.busy, on_frame)
        finally:
            session.disconnected()

    async def stop(self) -> None:
        """Close every open connection with 1001 (going away) and wait for its handler to end."""
        await close_connections(self._connections)


async def upgrade_required(request: Request) -> Response:
    """A plain HTTP GET on the websocket endpoint."""
    return PlainTextResponse(f"{PATH} is a websocket endpoint (OpenAI Realtime API)\n", 426, headers={"Upgrade": "websocket"})
