"""Whether the server can listen where it is told to, asked before anything slow (loading models) starts."""

from __future__ import annotations

import socket


class PortUnavailable(RuntimeError):
    """The configured host and port cannot be listened on (another server has the port, or the address is not this machine's)."""


def check_port(host: str, port: int) -> None:
    """Raise PortUnavailable, saying what to do, when (host, port) cannot be bound; port 0 always can.

    Checked before any model loads, so a taken port fails in a moment instead of after the loading.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: unknown host ({exc.strerror}); set [server] host or --host") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
            try:
                probe.bind(address)
            except OSError as exc:
                raise PortUnavailable(
                    f"cannot listen on {host}:{port}: {exc.strerror or exc}. Is another server (an earlier `assistant serve`?) "
                    "using the port? Stop it, or choose another port with --port or [server] port"
                ) from None
