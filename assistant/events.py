"""Domain events: what happens in a conversation, as plain data. No JSON, no wire names.

The core emits these; each dialect translates them to its wire. Conversation events are numbered
(`seq`) by the conversation's channel, kept for replay and sent to every follower; an `Error` answers
one client's request and goes to that client only (`broadcast = False`). Binary payloads (previews,
pictures) are bytes here; a dialect encodes them as its wire needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from assistant.errors import ErrorCode

EndStatus = Literal["completed", "cancelled", "failed"]
ToolStatus = Literal["ok", "error", "declined", "timeout", "cancelled"]


@dataclass(slots=True)
class ErrorInfo:
    """Why a reply or job failed: a code from assistant.errors and a message for people."""

    code: ErrorCode
    message: str


@dataclass(slots=True)
class Event:
    """Base of every domain event."""

    broadcast: ClassVar[bool] = True


@dataclass(slots=True)
class TurnCreated(Event):
    """A user turn is stored (durable) and will be answered."""

    turn_id: str


@dataclass(slots=True)
class SpeechStarted(Event):
    """Server VAD heard speech begin in streamed audio."""

    audio_start_ms: int


@dataclass(slots=True)
class SpeechStopped(Event):
    """Server VAD heard speech end in streamed audio; the utterance becomes a turn."""

    audio_end_ms: int


@dataclass(slots=True)
class TranscriptDelta(Event):
    """The growing hypothesis of an utterance still being spoken."""

    turn_id: str
    text: str


@dataclass(slots=True)
class TranscriptDone(Event):
    """An audio part's final transcript, stored with its turn."""

    turn_id: str
    text: str
    language: str | None
    duration_s: float


@dataclass(slots=True)
class ReplyStarted(Event):
    """The assistant began answering `turn_id`; its reply is `response_id`."""

    response_id: str
    turn_id: str


@dataclass(slots=True)
class TextDelta(Event):
    """The next piece of a reply's text."""

    response_id: str
    delta: str


@dataclass(slots=True)
class ReplyDone(Event):
    """A reply ended and is stored with its status and (partial) text."""

    response_id: str
    status: EndStatus
    text: str
    usage: dict[str, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: ErrorInfo | None = None
    finish_reason: str | None = None  # the engine's: "stop", "length" (cut at the token limit) or "cancelled"; None when it failed


@dataclass(slots=True)
class AudioDelta(Event):
    """The next piece of a reply's speech: PCM16 mono little-endian at `sample_rate`."""

    response_id: str
    audio: bytes
    sample_rate: int


@dataclass(slots=True)
class AudioDone(Event):
    """A reply's speech ended: all of it said, cut short, or failed (the text reply is unaffected)."""

    response_id: str
    status: EndStatus
    duration_ms: int
    error: ErrorInfo | None = None


@dataclass(slots=True)
class ImageStarted(Event):
    """An image job is stored and queued; `turn_id` is its prompt's turn when it has one of its own."""

    job_id: str
    turn_id: str | None
    prompt: str
    width: int
    height: int
    steps: int
    seed: int


@dataclass(slots=True)
class ImageProgress(Event):
    """An image job finished `step` of `total`; `preview` is a low-resolution PNG of the image so far."""

    job_id: str
    step: int
    total: int
    preview: bytes | None = None


@dataclass(slots=True)
class ImageDone(Event):
    """An image job ended and is stored; a completed one carries its PNG."""

    job_id: str
    status: EndStatus
    seed: int
    mime: str | None = None
    data: bytes | None = None
    sha256: str | None = None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class ToolCallStarted(Event):
    """The reply `response_id` calls a tool; with `needs_confirmation` it waits for the user to approve (tool.confirm)."""

    response_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    needs_confirmation: bool = False


@dataclass(slots=True)
class ToolCallDone(Event):
    """A tool call ended: `ok` with its (JSON-able) `result`, or `error`/`declined`/`timeout`/`cancelled` with `error` saying why."""

    response_id: str
    call_id: str
    name: str
    status: ToolStatus
    result: Any = None
    error: str | None = None


@dataclass(slots=True)
class Error(Event):
    """A request of this client could not be served; for this client only, never replayed."""

    broadcast: ClassVar[bool] = False
    code: ErrorCode
    message: str
    ref: str | None = None


@dataclass(slots=True)
class ReminderDue(Event):
    """A reminder (or timer) fell due: sent to every connected client of its owner, never numbered or replayed."""

    broadcast: ClassVar[bool] = False
    reminder_id: str
    text: str
    due_at: str  # ISO 8601 with the offset of `timezone`
    timezone: str  # IANA name the reminder was set in
    conversation_id: str | None
    kind: str = "reminder"  # or "timer"


CONVERSATION_EVENTS: tuple[type[Event], ...] = (
    TurnCreated, SpeechStarted, SpeechStopped, TranscriptDelta, TranscriptDone, ReplyStarted, TextDelta, ReplyDone,
    AudioDelta, AudioDone, ImageStarted, ImageProgress, ImageDone, ToolCallStarted, ToolCallDone,
)
"""Every broadcast event, for dialects that must translate them all (a test checks each is handled)."""
