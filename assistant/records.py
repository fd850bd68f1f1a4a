"""What the store hands out: turns and parts detached from the database, and what a turn's start returns.

Plain frozen dataclasses with no database in them, so the core (and `assistant.recent_turns`) can hold
and pass them without importing the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class ImageRef:
    """An image part of a conversation: the turn it belongs to and its attachment."""

    turn_id: str
    role: str
    sha256: str
    mime: str


TOOL_PART_KINDS = ("tool_call", "tool_result")
"""Parts of an assistant turn that record a tool call and its result, as JSON text (see assistant.tool_loop)."""


@dataclass(frozen=True)
class PartRecord:
    """A stored part, detached from the database session."""

    kind: str
    text: str | None = None
    attachment_sha256: str | None = None
    mime: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The part as `conversation.history` sends it: attachments by sha256 and URL, not inline; a tool call or
        result (stored as JSON text) with its fields, as `tool.call` / `tool.result` carry them."""
        wire: dict[str, Any] = {"type": self.kind}
        if self.kind in TOOL_PART_KINDS and self.text:
            wire.update(json.loads(self.text))
        elif self.text is not None:
            wire["text"] = self.text
        if self.attachment_sha256:
            wire.update(sha256=self.attachment_sha256, mime=self.mime, url=f"/attachments/{self.attachment_sha256}")
        return wire


@dataclass(frozen=True)
class TurnStart:
    """What begin_turn committed and read: the new turn ids and the context history."""

    user_turn_id: str
    reply_id: str
    history: list[TurnRecord]


@dataclass(frozen=True)
class TurnRecord:
    """A stored turn with its parts, detached from the database session."""

    id: str
    role: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    usage: dict[str, Any] | None
    reply_to: str | None
    parts: list[PartRecord]
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    """What readers derived from this record, kept with it (the dialogue context's messages): a turn that
    changes gets a new record (`dataclasses.replace` starts it empty), so an entry never goes stale."""

    @cached_property
    def text(self) -> str:
        """What the turn says: its text and transcript parts, joined (image descriptions are not its words)."""
        return "\n".join(p.text for p in self.parts if p.kind in ("text", "transcript") and p.text)

    def to_wire(self) -> dict[str, Any]:
        """The turn as `conversation.history` sends it."""
        return {
            "turn_id": self.id,
            "role": self.role,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "error": self.error,
            "usage": self.usage,
            "reply_to": self.reply_to,
            "content": [p.to_wire() for p in self.parts],
        }
