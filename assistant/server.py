"""The server: one Starlette app served by uvicorn in-process.

It serves `GET /healthz`, `GET /metrics`, `GET /attachments/<sha256>`, the web client at `/`, and
the routes of every dialect in `[server] dialects` (the native one: the websocket at `/ws`).
Listening is refused beyond loopback without tokens; shutdown is graceful (see `shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import time
from asyncio import BaseTransport, Transport
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from assistant.access import bearer_token, host_allowed, is_loopback, principal_of, repeated_header
from assistant.app import App
from assistant.collector import tune_collector, untune_collector
from assistant.config import Config, ConfigError
from assistant.dialects import SEND_TEXT_EXTENSION, Dialect, build_dialects
from assistant.ports import PortUnavailable, check_port
from assistant.web import CONTENT_SECURITY_POLICY, StaticFile, load_static_files

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent

__all__ = ["AssistantServer", "PortUnavailable", "UnsafeListen", "event_loop_factory", "run_on_server_loop", "serve_app"]

log = logging.getLogger("assistant.server")
T = TypeVar("T")

SHA256 = re.compile(r"[0-9a-f]{64}")
NOT_FOUND = "not found: the websocket endpoint is /ws, the web client is at /\n"
NEEDS_TOKEN = "this server needs Authorization: Bearer <token>\n"
HEALTH_CHECK_S = 1.0
"""/healthz probes the database for writes at most this often."""


class UnsafeListen(RuntimeError):
    """The server would accept anyone beyond this machine: no tokens and a non-loopback address."""


def ok_response(body: bytes, content_type: str, *extra: tuple[str, str]) -> Response:
    """A 200 HTTP response with `body`, its type (as given, no charset added) and any extra headers."""
    return Response(body, headers={"Content-Type": content_type, **dict(extra)})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Any path no route serves, HTTP or websocket handshake: 404 naming /ws and /."""
    response = PlainTextResponse(NOT_FOUND, 404)
    if scope["type"] == "websocket":
        await WebSocket(scope, receive, send).send_denial_response(response)
    else:
        await response(scope, receive, send)


class AccessGuard:
    """Rules every request of every wire passes before any route sees it (ASGI middleware).

    A request repeating Host, Origin or Authorization answers 400; with auth off, a Host that is not
    an IP address, `localhost` or in `[server] allowed_hosts` answers 421 (DNS rebinding: a page on
    another name must not reach a server that trusts whoever can connect).
    """

    def __init__(self, app: Any, server: AssistantServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal is not None:
                if scope["type"] == "websocket":
                    await WebSocket(scope, receive, send).send_denial_response(refusal)
                else:
                    await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request, or None to serve it."""
        headers = scope.get("headers", [])
        repeated = repeated_header(headers)
        if repeated is not None:
            return PlainTextResponse(f"the {repeated} header may appear only once\n", 400)
        app = self.server.app
        if not app.auth.enabled:
            host = next((value.decode("latin-1") for name, value in headers if name.lower() == b"host"), None)
            if not host_allowed(host, app.config.server.allowed_hosts):
                log.warning("refused a request for host %r (auth is off; see [server] allowed_hosts)", host)
                return PlainTextResponse(f"host {host!r} is not served; see [server] allowed_hosts\n", 421)
        return None


class _SansIOWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, counting a sent denial response as a finished handshake, and
    pausing reads only when messages pile up.

    uvicorn 0.54 does not count it, and logs "ASGI callable returned without completing handshake." at
    ERROR on every refused handshake (401, 403, 404, 503); uvicorn pull request #3138 fixes it the same way.

    uvicorn pauses the socket's reading after every message and resumes it when the app takes it: two
    epoll_ctl calls per message. Here reading pauses once READ_HIGH_WATER messages wait unread (memory
    stays bounded) and resumes when the app has taken them all.
    """

    READ_HIGH_WATER = 16

    def connection_made(self, transport: BaseTransport) -> None:
        """As uvicorn, with writes gathered per event-loop step (`_CorkedTransport`)."""
        super().connection_made(cast(Transport, _CorkedTransport(cast(Transport, transport))))  # duck-typed: every other call is passed on

    def handle_connect(self, event: Any) -> None:
        """As uvicorn; an upgrade the app will see offers `send_text` (SEND_TEXT_EXTENSION) in its scope."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # set for an upgrade handed to the app (its task starts later and reads this same dict)
            scope["extensions"][SEND_TEXT_EXTENSION] = {"send_text": self.send_text}

    async def send_text(self, text: str) -> None:
        """One text frame, as `send({"type": "websocket.send", "text": text})` once accepted: waits while the
        socket's buffer is full, raises ClientDisconnected once the connection is closing or closed."""
        if not self.writable.is_set():
            await self.writable.wait()
        if self.disconnected or self.close_sent or not self.handshake_complete or self.initial_response is not None:
            raise ClientDisconnected()
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))

    @property
    def read_paused(self) -> bool:
        """What uvicorn checks before pausing: claimed true (so it does not pause) while few messages wait."""
        return self._read_paused or self.queue.qsize() < self.READ_HIGH_WATER

    @read_paused.setter
    def read_paused(self, value: bool) -> None:
        self._read_paused = value

    async def send(self, message: ASGISendEvent) -> None:
        """Send as uvicorn does; after the last body part of a denial response, the handshake is over."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


class _CorkedTransport:
    """A socket transport whose writes made in one event-loop step go out in one `send`.

    A conversation's events often come in twos (turn.created then response.created): written
    separately they cost two system calls. Data is kept until the end of the step (`call_soon`), in
    order; closing, aborting or asking how much is buffered first sends what is kept (abort drops it).
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep `data` for the one send at the end of this event-loop step."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        """Send what is kept, then close."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once; what is kept is dropped."""
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent, kept here included."""
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server as AssistantServer runs it: no signal handlers, bind errors raised, a prompt close.

    `serve()` runs as a task: startup, then uvicorn's main loop, which refreshes the Date header
    until AssistantServer.shutdown cancels it and calls `shutdown()`.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers: `run_until_signal` handles SIGINT and SIGTERM."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen; a failure (uvicorn logs it and exits) reaches `listening` as its OSError instead."""
        try:
            await super().startup(sockets)
        except SystemExit as exit_:
            self.should_exit = True  # serve() returns without a main loop
            error = exit_.__context__
            self.listening.set_exception(error if isinstance(error, OSError) else OSError(f"uvicorn could not start ({exit_.code})"))
        else:
            self.listening.set_result(None)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the listeners and what is left open (idle HTTP connections), letting requests in progress finish.

        uvicorn's own would send 1012 to websockets, which the dialects have closed by now, and it
        pauses 0.1 s, then polls every 0.1 s until connections are gone.
        """
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if self.server_state.tasks:
            await asyncio.wait(list(self.server_state.tasks))
        for server in self.servers:
            await server.wait_closed()


class AssistantServer:
    """Serves one App over HTTP and websockets. `start()`, then `shutdown()` (or `run_until_signal()`)."""

    def __init__(self, app: App, dialects: Sequence[Dialect] | None = None) -> None:
        self.app = app
        self.ready = False
        self.stopped = False
        self.dialects = list(dialects) if dialects is not None else build_dialects(app.config.server.dialects)
        self.static_files: dict[str, StaticFile] = load_static_files()
        self.asgi = self._build_asgi_app()
        self._uvicorn: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None
        self._collector_tuned = False  # tune_collector ran for this server (once listening)
        self._store_checked: tuple[float, bool] = (-HEALTH_CHECK_S, False)  # (when, writable)

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        assert self._uvicorn is not None
        return self._uvicorn.servers[0].sockets[0].getsockname()[1]

    def _build_asgi_app(self) -> Starlette:
        """The one ASGI app: the server's own routes, then each dialect's."""
        routes: list[BaseRoute] = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/attachments/{sha256:path}", self._attachment, methods=["GET"]),
            *(Route(path, self._static, methods=["GET"]) for path in self.static_files),
        ]
        for dialect in self.dialects:
            routes.extend(dialect.routes(self))
        asgi = Starlette(routes=routes)
        asgi.router.redirect_slashes = False  # /healthz/ is not /healthz
        asgi.router.default = not_found  # websocket handshakes get the 404 too (Starlette's would be a 403)
        asgi.add_middleware(AccessGuard, server=self)
        return asgi

    async def _healthz(self, request: Request) -> Response:
        """GET /healthz: 200 while serving, 503 before, once shutdown begins, and while the database takes no writes."""
        if not self.ready:
            return PlainTextResponse("not ready\n", 503)
        now = time.monotonic()
        if now - self._store_checked[0] >= HEALTH_CHECK_S:  # at most one probe write per second, however often polled
            store = self.app.store
            self._store_checked = (now, store is not None and await store.writable())
        if not self._store_checked[1]:
            return PlainTextResponse("the database does not take writes\n", 503)
        return PlainTextResponse("ok\n")

    async def _metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format; with auth on, any valid bearer token may read it."""
        if self.app.auth.enabled and await principal_of(self.app.auth, bearer_token(request.headers.get("authorization"))) is None:
            return PlainTextResponse(NEEDS_TOKEN, 401)
        return ok_response(self.app.metrics.render(), self.app.metrics.content_type)

    async def _attachment(self, request: Request) -> Response:
        """GET /attachments/<sha256>: a stored attachment's bytes with its content type.

        With auth on, the request needs `Authorization: Bearer <token>` and the attachment must be in
        one of that principal's conversations (else 404, as for an unknown one).
        """
        sha256 = request.path_params["sha256"]
        if not SHA256.fullmatch(sha256):
            return PlainTextResponse("an attachment is named by its lowercase hex sha256\n", 400)
        store = self.app.store
        if store is not None and self.app.auth.enabled:
            principal = await principal_of(self.app.auth, bearer_token(request.headers.get("authorization")))
            if principal is None:
                return PlainTextResponse(NEEDS_TOKEN, 401)
            if not await store.owns_attachment(principal, sha256):
                return PlainTextResponse("no such attachment\n", 404)
        found = await store.attachment(sha256) if store is not None and self.ready else None
        if found is None:
            return PlainTextResponse("no such attachment\n", 404)
        mime, body = found
        # the name is the content's hash, so it never changes; private: it may belong to one principal
        return ok_response(body, mime, ("Cache-Control", "private, max-age=31536000, immutable"), ("X-Content-Type-Options", "nosniff"))

    async def _static(self, request: Request) -> Response:
        """A web client file, with a policy that keeps the page to this origin."""
        file = self.static_files[request.url.path]
        return ok_response(
            file.body, file.content_type, ("Cache-Control", "no-cache"), ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
        )

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
        self._uvicorn = _Uvicorn(uvicorn.Config(
            self.asgi, host=cfg.host, port=cfg.port, lifespan="off", proxy_headers=False,
            ws=_SansIOWebSocket, ws_max_size=cfg.max_frame_bytes, ws_per_message_deflate=cfg.compression,
            ws_ping_interval=cfg.ping_interval_s, ws_ping_timeout=cfg.ping_timeout_s,
            log_config=None,  # the process's logging as it is (see cli.main)
            access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),  # on with `assistant -v`
        ))
        self._serving = asyncio.create_task(self._uvicorn.serve())
        await self._uvicorn.listening
        tune_collector()
        self._collector_tuned = True
        self.ready = True
        for dialect in self.dialects:
            await dialect.start(self)
        if any(dialect.name == "native" for dialect in self.dialects):
            log.info("listening on ws://%s:%d/ws; web page http://%s:%d/", cfg.host, self.port, cfg.host, self.port)
        else:
            log.info("listening on http://%s:%d (no websocket: [server] dialects has no \"native\")", cfg.host, self.port)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting, let replies finish within the grace period, cancel the rest, close connections, stop the App."""
        if self.stopped:
            return
        self.stopped = True
        self.ready = False
        try:
            if self._uvicorn is not None and self._uvicorn.started:
                for listener in self._uvicorn.servers:
                    listener.close()  # stop accepting connections; open ones stay
            await self.app.drain(self.app.config.server.shutdown_grace_s if grace_s is None else grace_s)
            for dialect in self.dialects:
                await dialect.stop()
            if self._uvicorn is not None and self._serving is not None and self._uvicorn.started:
                self._serving.cancel()  # uvicorn's main loop, which only refreshes the Date header
                await asyncio.wait([self._serving])
                await self._uvicorn.shutdown()
            await self.app.stop()
        finally:  # even when a step failed or the shutdown was cancelled: the process's collector is not this server's
            if self._collector_tuned:
                self._collector_tuned = False
                untune_collector()

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


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the event loop `[server] event_loop` names: uvloop's (libuv; its loop, callbacks and
    transports in C) or Python's own asyncio loop."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        raise ConfigError('[server] event_loop = "uvloop" but uvloop is not installed; install it or set event_loop = "asyncio"') from None
    return uvloop.new_event_loop


def run_on_server_loop(main: Coroutine[Any, Any, T], config: Config) -> T:
    """Run `main` to its end on the event loop `[server] event_loop` names, as `assistant serve` does."""
    with asyncio.Runner(loop_factory=event_loop_factory(config.server.event_loop)) as runner:
        return runner.run(main)


async def serve_app(config: Config, extra_plugins: Iterable[Any] = ()) -> AssistantServer:
    """Start an App and its server; returns the running server."""
    dialects = build_dialects(config.server.dialects)  # an unknown name fails before any model loads
    check_port(config.server.host, config.server.port)  # so does a port another server holds
    app = await App.start(config, extra_plugins)
    server = AssistantServer(app, dialects)
    try:
        await server.start()
    except BaseException:
        await server.shutdown(grace_s=0)  # stops the App, and uvicorn if it was listening already
        raise
    return server
