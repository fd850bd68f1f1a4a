"""The native dialect: protocol v1 (docs/protocol.md), JSON events on a websocket at `/ws`, one Session per connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from assistant.access import bearer_token, origin_allowed, principal_of
from assistant.dialects import SEND_TEXT_EXTENSION, Dialect, ServerContext
from assistant.dialects.idle import serve_frames
from assistant.dialects.native.session import Session

log = logging.getLogger("assistant.dialects.native")


class NativeDialect(Dialect):
    """Protocol v1 on `/ws`: the handshake's access checks, then a read loop feeding a Session."""

    name = "native"

    def __init__(self) -> None:
        self._connections: dict[WebSocket, asyncio.Task[None]] = {}  # open sessions' sockets -> their handler tasks

    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """The websocket at `/ws`; a plain GET there answers 426 (a browser tab, a typo'd client)."""

        async def websocket(ws: WebSocket) -> None:
            await self.serve(server, ws)

        return [WebSocketRoute("/ws", websocket), Route("/ws", upgrade_required, methods=["GET"])]

    async def serve(self, server: ServerContext, ws: WebSocket) -> None:
        """Check the handshake (403 foreign origin, 401 bad token, 503 shutting down), then run the connection."""
        token = bearer_token(ws.headers.get("authorization"))  # checked here, then handed to the Session
        refusal = await handshake_refusal(server, ws, token)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[ws] = task  # at once: no await since the ready check, so stop() sees every session
        try:
            await ws.accept()
            await self._read_loop(server, ws, token)
        finally:
            del self._connections[ws]

    async def _read_loop(self, server: ServerContext, ws: WebSocket, token: str | None) -> None:
        """Hand every frame to the Session; close an idle connection (idle, not one waiting for its reply)."""

        async def close(code: int, reason: str) -> None:
            await ws.close(code, reason)

        direct = ws.scope.get("extensions", {}).get(SEND_TEXT_EXTENSION)  # the server's straight path, else Starlette's
        send = direct["send_text"] if direct else ws.send_text
        session = Session(server.app, send, token=token, close=close, source=ws.client.host if ws.client else None)

        async def on_frame(frame: str | bytes) -> bool:
            await session.handle_frame(frame)
            return True

        try:
            await serve_frames(ws, server.app.config.limits.idle_timeout_s, session.busy, on_frame)
        finally:
            session.disconnected()

    async def stop(self) -> None:
        """Close every open connection with 1001 (going away) and wait for its session to end."""
        await close_connections(self._connections)


async def close_connections(connections: dict[WebSocket, asyncio.Task[None]]) -> None:
    """At shutdown: close each open websocket with 1001 (going away), then wait for every handler task to end."""
    tasks = list(connections.values())
    for ws in list(connections):
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # it closed meanwhile
            await ws.close(1001, "server shutting down")
    if tasks:
        await asyncio.wait(tasks)


async def handshake_refusal(server: ServerContext, ws: WebSocket, token: str | None) -> Response | None:
    """The HTTP answer refusing this websocket handshake (with its bearer `token`), or None to accept it."""
    origin = ws.headers.get("origin")
    if origin is not None and not origin_allowed(origin, ws.headers.get("host"), server.app.config.server.allowed_origins):
        log.warning("refused a websocket from origin %s", origin)
        return PlainTextResponse(f"origin {origin} may not connect (see [server] allowed_origins)\n", 403)
    if token is not None and await principal_of(server.app.auth, token) is None:
        return PlainTextResponse("invalid or revoked token\n", 401)
    if not server.ready:  # checked last, after the awaits: a handshake passing it is registered before stop() can run
        return PlainTextResponse("shutting down\n", 503)
    return None


async def upgrade_required(request: Request) -> Response:
    """A plain HTTP GET on the websocket endpoint."""
    return PlainTextResponse("/ws is a websocket endpoint: connect with a websocket client\n", 426, headers={"Upgrade": "websocket"})
