"""Protocol v1 <-> the core: wire parts to `assistant.turns` inputs, domain events to server events."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING

from assistant import events
from assistant.dialects.native import protocol as wire
from assistant.engines import GenerationOptions
from assistant.errors import AssistantError
from assistant.turns import AudioIn, ImageIn, PartIn, PluginPartIn, TextIn, check_turn_bytes, known_part_types

if TYPE_CHECKING:
    from assistant.app import App


def decode_base64(data: str, what: str, ref: str | None) -> bytes:
    """Bytes of a base64 field; AssistantError(bad_request) naming `what` if it is not valid base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AssistantError("bad_request", f"{what}: not valid base64", ref) from None


def parts_in(app: App, event: wire.TurnCreate) -> list[PartIn]:
    """The turn's parts for the core: the size limit checked on the base64 first, then each part decoded."""
    ref = event.event_id
    # base64 is 4 characters per 3 bytes: checked before decoding anything
    check_turn_bytes(app, sum(len(p.text.encode()) if isinstance(p, wire.TextPart) else len(p.data) * 3 // 4 for p in event.content), ref)
    for index, part in enumerate(event.content):  # an unknown type is refused before any base64 is decoded
        if isinstance(part, wire.PluginPart) and part.type not in app.part_types:
            raise AssistantError("bad_request", f"content.{index}.type: unknown part type {part.type!r}; known: {known_part_types(app)}", ref)
    parts: list[PartIn] = []
    for index, part in enumerate(event.content):
        if isinstance(part, wire.TextPart):
            parts.append(TextIn(part.text))
        elif isinstance(part, wire.ImagePart):
            parts.append(ImageIn(decode_base64(part.data, f"content.{index}.data", ref), part.mime))
        elif isinstance(part, wire.PluginPart):
            parts.append(PluginPartIn(part.type, decode_base64(part.data, f"content.{index}.data", ref), part.mime, part.fields))
        else:
            data = decode_base64(part.data, f"content.{index}.data", ref)
            parts.append(AudioIn(data, part.format, part.sample_rate, part.language))
    return parts


def generation_options(event: wire.TurnCreate) -> GenerationOptions:
    """Per-turn overrides from the event."""
    if event.options is None:
        return GenerationOptions()
    o = event.options
    return GenerationOptions(
        max_new_tokens=o.max_new_tokens,
        temperature=None if o.temperature is None else float(o.temperature),
        top_p=None if o.top_p is None else float(o.top_p),
    )


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data else None


def _error_body(error: events.ErrorInfo | None) -> wire.ErrorBody | None:
    return None if error is None else wire.ErrorBody(code=error.code, message=error.message)


_TO_WIRE: dict[type[events.Event], Callable[[events.Event], wire.ServerEvent]] = {
    events.TurnCreated: lambda e: wire.TurnCreated(turn_id=e.turn_id),  # type: ignore[attr-defined]
    events.SpeechStarted: lambda e: wire.SpeechStarted(audio_start_ms=e.audio_start_ms),  # type: ignore[attr-defined]
    events.SpeechStopped: lambda e: wire.SpeechStopped(audio_end_ms=e.audio_end_ms),  # type: ignore[attr-defined]
    events.TranscriptDelta: lambda e: wire.TranscriptDelta(turn_id=e.turn_id, text=e.text),  # type: ignore[attr-defined]
    events.TranscriptDone: lambda e: wire.TranscriptDone(
        turn_id=e.turn_id, text=e.text, language=e.language, duration_s=e.duration_s,  # type: ignore[attr-defined]
    ),
    events.ReplyStarted: lambda e: wire.ResponseCreated(response_id=e.response_id, turn_id=e.turn_id),  # type: ignore[attr-defined]
    events.TextDelta: lambda e: wire.ResponseTextDelta(response_id=e.response_id, delta=e.delta),  # type: ignore[attr-defined]
    events.ReplyDone: lambda e: wire.ResponseDone(
        response_id=e.response_id, status=e.status, text=e.text, usage=e.usage, timings=e.timings,  # type: ignore[attr-defined]
        error=_error_body(e.error), finish_reason=e.finish_reason,  # type: ignore[attr-defined]
    ),
    events.AudioDelta: lambda e: wire.ResponseAudioDelta(
        response_id=e.response_id, data=base64.b64encode(e.audio).decode(), sample_rate=e.sample_rate,  # type: ignore[attr-defined]
    ),
    events.AudioDone: lambda e: wire.ResponseAudioDone(
        response_id=e.response_id, status=e.status, duration_ms=e.duration_ms, error=_error_body(e.error),  # type: ignore[attr-defined]
    ),
    events.ImageStarted: lambda e: wire.ImageStarted(
        job_id=e.job_id, turn_id=e.turn_id, prompt=e.prompt, width=e.width, height=e.height,  # type: ignore[attr-defined]
        steps=e.steps, seed=e.seed,  # type: ignore[attr-defined]
    ),
    events.ImageProgress: lambda e: wire.ImageProgress(
        job_id=e.job_id, step=e.step, total=e.total, preview=_b64(e.preview),  # type: ignore[attr-defined]
    ),
    events.ImageDone: lambda e: wire.ImageDone(
        job_id=e.job_id, status=e.status, seed=e.seed, mime=e.mime, data=_b64(e.data),  # type: ignore[attr-defined]
        sha256=e.sha256, error=_error_body(e.error),  # type: ignore[attr-defined]
    ),
    events.ToolCallStarted: lambda e: wire.ToolCallEvent(
        response_id=e.response_id, call_id=e.call_id, name=e.name, arguments=e.arguments,  # type: ignore[attr-defined]
        needs_confirmation=e.needs_confirmation,  # type: ignore[attr-defined]
    ),
    events.ToolCallDone: lambda e: wire.ToolResult(
        response_id=e.response_id, call_id=e.call_id, name=e.name, status=e.status, result=e.result, error=e.error,  # type: ignore[attr-defined]
    ),
    events.ReminderDue: lambda e: wire.ReminderDue(
        reminder_id=e.reminder_id, kind=e.kind, text=e.text, due_at=e.due_at, timezone=e.timezone,  # type: ignore[attr-defined]
        conversation_id=e.conversation_id,  # type: ignore[attr-defined]
    ),
    events.Error: lambda e: wire.Error(code=e.code, message=e.message, ref=e.ref),  # type: ignore[attr-defined]
}


def to_wire(event: events.Event) -> wire.ServerEvent:
    """The protocol v1 server event for a domain event."""
    return _TO_WIRE[type(event)](event)


def error_event(error: AssistantError) -> wire.Error:
    """The `error` event for an AssistantError."""
    return wire.Error(code=error.code, message=error.message, ref=error.ref)
