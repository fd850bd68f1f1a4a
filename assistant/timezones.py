"""IANA time zones by name: the one place that turns a client's or the config's zone name into a ZoneInfo."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo called `name` (such as "Europe/Berlin" or "UTC"); ValueError naming it when there is none."""
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        raise ValueError(f"{name!r} is not an IANA time zone name (such as 'Europe/Berlin' or 'UTC')")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'") from None
