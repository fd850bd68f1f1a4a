"""The websockets server: `/ws` for sessions, the web client at `/`, `GET /healthz`, `GET /attachments/<sha256>`, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import re
import signal
import weakref
from http import HTTPStatus
from typing import Any, Iterable
from urllib.parse import urlsplit

from websockets.asyncio.server import Request, Response, Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from assistant.app import App
from assistant.config import Config
from assistant.dialects.native.session import Session
from assistant.web import CONTENT_SECURITY_POLICY, StaticFile, load_static_files

log = logging.getLogger("assistant.server")

ATTACHMENTS_PREFIX = "/attachments/"
SHA256 = re.compile(r"[0-9a-f]{64}")


class UnsafeListen(RuntimeError):
    """The server would accept anyone beyond this machine: no tokens and a non-loopback address."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (not for "" or 0.0.0.0, which listen everywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ok_response(body: bytes, content_type: str, *extra: tuple[str, str]) -> Response:
    """A 200 HTTP response with `body`, its type and length, and any extra headers."""
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
        ("Content-Type", content_type), ("Content-Length", str(len(body))), *extra,
    ])
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class AssistantServer:
    """Serves one App over websockets. `start()`, then `shutdown()` (or `run_until_signal()`)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.ready = False
        self.stopped = False
        self._server: Server | None = None
        self.static_files: dict[str, StaticFile] = load_static_files()
        # The handshake's bearer token, per connection (weak: a handshake that fails later leaves nothing).
        self._tokens: weakref.WeakKeyDictionary[ServerConnection, str | None] = weakref.WeakKeyDictionary()

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path.startswith(ATTACHMENTS_PREFIX):
            return await self._attachment(connection, request, path[len(ATTACHMENTS_PREFIX):])
        if path == "/healthz":
            if self.ready:
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
        if path == "/metrics":
            return await self._metrics(connection, request)
        if path in self.static_files and request.headers.get("Upgrade", "").lower() != "websocket":
            return self._static(self.static_files[path])
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: the websocket endpoint is /ws, the web client is at /\n")
        if not self.ready:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            log.warning("refused a websocket from origin %s", origin)
            return connection.respond(HTTPStatus.FORBIDDEN, f"origin {origin} may not connect (see [server] allowed_origins)\n")
        token = bearer_token(request)
        if token is not None and await asyncio.to_thread(self.app.auth.principal, token) is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or revoked token\n")
        self._tokens[connection] = token
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """A browser page may connect from the server's own origin, or one listed in [server] allowed_origins."""
        allowed = self.app.config.server.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and host is not None and parts.netloc.lower() == host.lower()

    async def _attachment(self, connection: ServerConnection, request: Request, sha256: str) -> Response:
        """GET /attachments/<sha256>: a stored attachment's bytes with its content type.

        With auth on, the request needs `Authorization: Bearer <token>` and the attachment must be in
        one of that principal's conversations (else 404, as for an unknown one).
        """
        if not SHA256.fullmatch(sha256):
            return connection.respond(HTTPStatus.BAD_REQUEST, "an attachment is named by its lowercase hex sha256\n")
        store = self.app.store
        if store is not None and self.app.auth.enabled:
            principal = await asyncio.to_thread(self.app.auth.principal, bearer_token(request))
            if principal is None:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "this server needs Authorization: Bearer <token>\n")
            if not await store.owns_attachment(principal, sha256):
                return connection.respond(HTTPStatus.NOT_FOUND, "no such attachment\n")
        found = await store.attachment(sha256) if store is not None and self.ready else None
        if found is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such attachment\n")
        mime, body = found
        return ok_response(body, mime, ("Cache-Control", "public, max-age=31536000, immutable"))  # the name is the content's hash

    async def _metrics(self, connection: ServerConnection, request: Request) -> Response:
        """GET /metrics: Prometheus text format; with auth on, any valid bearer token may read it."""
        if self.app.auth.enabled and await asyncio.to_thread(self.app.auth.principal, bearer_token(request)) is None:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "this server needs Authorization: Bearer <token>\n")
        return ok_response(self.app.metrics.render(), self.app.metrics.content_type)

    @staticmethod
    def _static(file: StaticFile) -> Response:
        """A web client file, with a policy that keeps the page to this origin."""
        return ok_response(
            file.body, file.content_type, ("Cache-Control", "no-cache"), ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
        )

    async def _handle(self, connection: ServerConnection) -> None:
        session = Session(self.app, connection.send, token=self._tokens.pop(connection, None), close=connection.close)
        idle = self.app.config.limits.idle_timeout_s
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):  # no task per frame, unlike wait_for
                        frame = await connection.recv()
                except TimeoutError:
                    if session.busy():
                        continue  # a long reply or picture is no reason to hang up
                    await connection.close(1000, "idle timeout")
                    break
                await session.handle_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            session.disconnected()

    async def start(self) -> None:
        """Listen on the configured host and port (loopback only when no token is configured, unless allowed)."""
        cfg = self.app.config.server
        if self.app.auth.enabled:
            log.info("auth: on (tokens from [auth] tokens and %s)", self.app.config.tokens_path)
        elif is_loopback(cfg.host):
            log.warning("auth: off (no tokens configured): anyone on this machine may connect; "
                        "create one with `assistant tokens create NAME` before listening beyond loopback")
        elif self.app.config.auth.allow_unauthenticated_remote:
            log.warning("auth: off and listening on %s: ANYONE who can reach this address may use the server", cfg.host)
        else:
            raise UnsafeListen(
                f"refusing to listen on {cfg.host!r} with no tokens configured: anyone could connect. Create a token "
                "(`assistant tokens create NAME`), listen on 127.0.0.1, or set [auth] allow_unauthenticated_remote = true"
            )
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            max_size=cfg.max_frame_bytes,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
        )
        self.ready = True
        log.info("listening on ws://%s:%d/ws", cfg.host, self.port)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting, let replies finish within the grace period, cancel the rest, close."""
        if self.stopped:
            return
        self.stopped = True
        grace = self.app.config.server.shutdown_grace_s if grace_s is None else grace_s
        self.ready = False
        self.app.accepting_turns = False  # new turns, and queued ones not yet started, answer `unavailable`
        if self._server is not None:
            self._server.server.close()  # stop accepting connections; open ones stay
        if self.app.turns:
            log.info("waiting up to %.1fs for %d turn(s) to finish", grace, len(self.app.turns))
            await asyncio.wait(list(self.app.turns), timeout=grace)
        if self.app.turns:
            log.info("cancelling %d reply(ies) still in progress", len(self.app.replies))
            self.app.cancel_all_replies()
            await asyncio.wait(list(self.app.turns))
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        await self.app.stop()

    async def run_until_signal(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        log.info("shutting down")
        await self.shutdown()


async def serve_app(config: Config, extra_plugins: Iterable[Any] = ()) -> AssistantServer:
    """Start an App and its server; returns the running server."""
    app = await App.start(config, extra_plugins)
    server = AssistantServer(app)
    try:
        await server.start()
    except BaseException:
        await app.stop()
        raise
    return server
