"""Who may use the server, the same for every wire: bearer tokens, browser origins, loopback addresses.

Plain functions of header values, free of any HTTP or websocket library, so that each dialect
applies the same rules to its own requests.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from assistant.auth import Authenticator


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (not for "" or 0.0.0.0, which listen everywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def principal_of(auth: Authenticator, token: str | None) -> str | None:
    """The principal a token names (None: unknown or revoked; auth off: `local`), looked up off the event loop.

    Off the loop because the lookup may read the token file again.
    """
    return await asyncio.to_thread(auth.principal, token)


def host_name(host: str) -> str:
    """The name or address of a Host header value, without its port or IPv6 brackets, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """With auth off, whether a request's Host may be served: an IP address, `localhost`, or a name in `allowed`.

    A page on a name the attacker controls can make that name resolve to 127.0.0.1 (DNS rebinding);
    its requests then carry that name as Host. An IP literal or `localhost` cannot be rebound.
    """
    if host is None:
        return False
    name = host_name(host)
    allowed = [a.lower() for a in allowed]
    if "*" in allowed or name in allowed or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


SINGLE_HEADERS = (b"host", b"origin", b"authorization")
"""Headers a request may carry at most once: two of them are ambiguous (which one was checked?)."""


def repeated_header(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The name of a header of SINGLE_HEADERS that appears more than once, or None."""
    seen: set[bytes] = set()
    for name, _ in headers:
        name = name.lower()
        if name in SINGLE_HEADERS:
            if name in seen:
                return name.decode()
            seen.add(name)
    return None


def origin_allowed(origin: str, host: str | None, allowed: Iterable[str]) -> bool:
    """A browser page may connect from the server's own origin (its Host), or one listed in `allowed` ("*": any)."""
    allowed = list(allowed)
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and host is not None and parts.netloc.lower() == host.lower()
