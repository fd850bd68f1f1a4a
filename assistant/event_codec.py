"""Conversation events as JSON text and back, for carrying them between nodes (Redis streams).

Only the conversation events (`assistant.events.CONVERSATION_EVENTS`) and `ReminderDue` (a notice) are encoded. Each field is
read by its declared type: bytes travel as base64, an `ErrorInfo` as an object; everything else an
event holds is already JSON (tool arguments and results are JSON by contract). Decoding builds
nothing but those dataclasses, so a value read back from Redis can never run code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from typing import Any

from assistant.events import CONVERSATION_EVENTS, ErrorInfo, Event, ReminderDue


class CodecError(ValueError):
    """A payload that is not an encoded conversation event."""


def _kinds(hint: Any) -> set[Any]:
    """The classes a field's type hint allows (unions unpacked)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint))
    return {hint}


_FIELDS: dict[str, tuple[type[Event], dict[str, set[Any]]]] = {
    cls.__name__: (cls, {name: _kinds(hint) for name, hint in typing.get_type_hints(cls).items() if name != "broadcast"})
    for cls in (*CONVERSATION_EVENTS, ReminderDue)
}


def encode(event: Event) -> str:
    """One conversation event as JSON text."""
    name = type(event).__name__
    if name not in _FIELDS:
        raise CodecError(f"{name} is not a conversation event or a notice")
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, ErrorInfo):
            value = {"code": value.code, "message": value.message}
        fields[field.name] = value
    return json.dumps({"type": name, "fields": fields}, separators=(",", ":"))


def decode(text: str | bytes) -> Event:
    """The event `encode` wrote; CodecError for anything else."""
    try:
        data = json.loads(text)
        cls, kinds = _FIELDS[data["type"]]
        fields = dict(data["fields"])
        for name, value in fields.items():
            if value is None:
                continue
            if bytes in kinds[name]:
                fields[name] = base64.b64decode(value, validate=True)
            elif ErrorInfo in kinds[name]:
                fields[name] = ErrorInfo(value["code"], value["message"])
        return cls(**fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise CodecError(f"not an encoded conversation event: {exc}") from None
