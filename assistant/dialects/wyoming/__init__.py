"""The Wyoming dialect: speech to text, text to speech and conversation for Home Assistant, on a TCP port of its own.

`[wyoming] enabled = true` (with "wyoming" in `[server] dialects`) opens the listener when the server starts,
at `[wyoming] host` and `port` (10700 by default), serving each connection with a `handler.WyomingHandler`.
Wyoming has no authentication: every connection acts as `[wyoming] principal` (its session places and turn
rate apply), so the listener belongs on loopback or a trusted network. With `[wyoming] zeroconf = true` the
service is announced as `_wyoming._tcp.local.` so Home Assistant discovers it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from functools import partial
from typing import TYPE_CHECKING

from wyoming.server import AsyncServer, HandlerFactory

from assistant.access import is_loopback
from assistant.dialects import Dialect, ServerContext
from assistant.dialects.wyoming.conversation import Conversations
from assistant.dialects.wyoming.handler import WyomingHandler
from assistant.dialects.wyoming.reader import HEADER_LIMIT

if TYPE_CHECKING:
    from starlette.routing import BaseRoute
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger("assistant.dialects.wyoming")

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


class TcpListener(AsyncServer):
    """The `wyoming` package's AsyncServer on a TCP socket whose stream readers stop at HEADER_LIMIT per line."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self.closing = False

    async def _handler_callback(self, handler_factory: HandlerFactory, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Start a handler for a new connection; one accepted while the listener closes is closed at once."""
        if self.closing:
            writer.close()
            return
        await super()._handler_callback(handler_factory, reader, writer)

    async def start(self, handler_factory: HandlerFactory) -> None:
        """Listen; each connection gets a handler from `handler_factory`, run as its own task."""
        self._server = await asyncio.start_server(partial(self._handler_callback, handler_factory), self.host, self.port, limit=HEADER_LIMIT)

    async def run(self, handler_factory: HandlerFactory) -> None:
        """Listen and serve until cancelled."""
        await self.start(handler_factory)
        assert self._server is not None
        await self._server.serve_forever()

    @property
    def bound_port(self) -> int:
        """The port listened on (useful when configured as 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, end every connection (a synthesis in progress stops) and wait for their handlers."""
        self.closing = True  # from now on no connection gets a handler
        if self._server is not None:
            self._server.close()
        handlers = dict(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers)
        for handler in handlers.values():
            handler.writer.close()  # a handler cancelled before it ever ran has not closed its connection
        if self._server is not None:
            await self._server.wait_closed()


def service_name() -> str:
    """The instance name announced over zeroconf: `assistant-<hostname>`, in the characters DNS labels allow."""
    return "assistant-" + (re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host")


def announced_address(host: str) -> str:
    """The IPv4 address to announce: the listening one, or for a wildcard the interface that reaches the mDNS group.

    (Connecting a UDP socket sends nothing; it only picks the route.)
    """
    if host not in ("", "0.0.0.0", "::"):
        return socket.gethostbyname(host)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((MDNS_GROUP, 1))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def service_info(name: str, address: str, port: int) -> AsyncServiceInfo:
    """The zeroconf record announcing a Wyoming service at `address`:`port` (what Home Assistant's discovery looks for)."""
    from zeroconf.asyncio import AsyncServiceInfo

    return AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", addresses=[socket.inet_aton(address)], port=port)


class WyomingDialect(Dialect):
    """The Wyoming listener, opened at start when `[wyoming] enabled`."""

    name = "wyoming"

    def __init__(self) -> None:
        self.listener: TcpListener | None = None
        self.conversations = Conversations()
        self._zeroconf: AsyncZeroconf | None = None
        self._announced: AsyncServiceInfo | None = None

    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """None: Wyoming is not HTTP."""
        return []

    @property
    def port(self) -> int:
        """The Wyoming port listened on."""
        assert self.listener is not None
        return self.listener.bound_port

    async def start(self, server: ServerContext) -> None:
        """Open the listener (and announce it) when enabled."""
        config = server.app.config.wyoming
        if not config.enabled:
            return
        if not is_loopback(config.host):
            log.warning("wyoming: listening on %s with no authentication: every client there acts as %r; "
                        "keep it to a trusted network", config.host, config.principal)

        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WyomingHandler:
            return WyomingHandler(reader, writer, server, self.conversations)

        self.listener = TcpListener(config.host, config.port)
        await self.listener.start(handler)
        log.info("wyoming: listening on tcp://%s:%d", config.host, self.port)
        if config.zeroconf:
            await self._announce(config.host)

    async def _announce(self, host: str) -> None:
        from zeroconf.asyncio import AsyncZeroconf

        if is_loopback(host):
            log.warning("wyoming: announcing a loopback address over zeroconf; only this machine can reach it")
        info = service_info(service_name(), announced_address(host), self.port)
        self._zeroconf = AsyncZeroconf()
        try:
            await self._zeroconf.async_register_service(info)
        except Exception:
            log.exception("wyoming: the zeroconf announcement failed; Home Assistant can still be given host and port")
            await self._zeroconf.async_close()
            self._zeroconf = None
            return
        self._announced = info

    async def stop(self) -> None:
        """Withdraw the announcement, close the listener and every connection."""
        if self._zeroconf is not None:
            zeroconf, self._zeroconf = self._zeroconf, None
            try:
                if self._announced is not None:
                    await zeroconf.async_unregister_service(self._announced)
            finally:
                await zeroconf.async_close()
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await listener.stop()
