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


def origin_allowed(origin: str, host: str | None, allowed: Iterable[str]) -> bool:
    """A browser page may connect from the server's own origin (its Host), or one listed in `allowed` ("*": any)."""
    allowed = list(allowed)
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and host is not None and parts.netloc.lower() == host.lower()
