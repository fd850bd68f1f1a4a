"""Reading Wyoming events with every size bounded before it is read.

A Wyoming event is a JSON header line (`type`, optional `data`, `data_length`, `payload_length`), then
`data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload. The `wyoming` package's
`async_read_event` reads whatever lengths the header promises and hides every problem as "connection
closed"; here the header is checked first (a JSON object with a string `type`, lengths that are integers
within the limit), so a header promising 2 GB is refused before a byte of it is read, and each problem has a
message for the `error` event the connection answers with before it closes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

HEADER_LIMIT = 64 * 1024
"""The longest header line; the stream reader of each connection is created with this limit."""


class ProtocolError(Exception):
    """The peer sent something that is not a valid Wyoming event; `code` is the error code for the `error` event."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event, or None when the peer closed the connection (also in the middle of an event).

    Raises ProtocolError for bytes that are not a Wyoming event, and (code `too_large`) for a header line
    over HEADER_LIMIT or data or payload over `max_bytes`.
    """
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: no newline within the reader's limit
        raise ProtocolError(f"not a Wyoming event: no header line within {HEADER_LIMIT} bytes", "too_large") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        return None  # closed in the middle of the header
    header = _json_object(line, "the header line")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("not a Wyoming event: the header has no string \"type\"")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError(f"{kind}: \"data\" must be a JSON object")
    data_length = _length(header, "data_length", kind, max_bytes)
    payload_length = _length(header, "payload_length", kind, max_bytes)
    try:
        if data_length:
            data = {**data, **_json_object(await reader.readexactly(data_length), f"{kind}: the data")}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    return Event(type=kind, data=data, payload=payload)


def _length(header: dict[str, Any], key: str, kind: str, max_bytes: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{kind}: {key} must be a non-negative integer")
    if value > max_bytes:
        raise ProtocolError(f"{kind}: {key} is {value} bytes; at most {max_bytes} are accepted ([wyoming] max_payload_bytes)", "too_large")
    return value


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"not a Wyoming event: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"not a Wyoming event: {what} is not a JSON object")
    return value
