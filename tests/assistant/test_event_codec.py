"""Conversation events as JSON for other nodes: every event comes back equal; nothing else is accepted."""

from __future__ import annotations

import pytest

from assistant import events
from assistant.event_codec import CodecError, decode, encode

ERROR = events.ErrorInfo("unavailable", "gone")
SAMPLES = [
    events.TurnCreated("t"), events.SpeechStarted(5), events.SpeechStopped(9), events.TranscriptDelta("t", "he"),
    events.TranscriptDone("t", "hello", "en", 1.5), events.ReplyStarted("r", "t"), events.TextDelta("r", "hi"),
    events.ReplyDone("r", "failed", "hi", {"completion_tokens": 1}, {"total_ms": 2.5}, ERROR, None),
    events.AudioDelta("r", b"\x00\x01\xff", 22050), events.AudioDone("r", "completed", 120),
    events.ImageStarted("j", None, "a cat", 64, 64, 4, 7), events.ImageProgress("j", 1, 4, b"\x89PNG"),
    events.ImageDone("j", "completed", 7, "image/png", b"\x89PNG\r\n", "ab" * 32), events.ImageDone("j", "failed", 7, error=ERROR),
    events.ToolCallStarted("r", "c", "clock", {"zone": "UTC", "nested": {"$bytes": "not bytes"}}, True),
    events.ToolCallDone("r", "c", "clock", "ok", {"time": "12:00"}),
    events.ReminderDue("m", "stretch", "2026-01-01T12:00:00+00:00", "UTC", None),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_survives_the_trip(event):
    """An event encoded and decoded is equal to the original, bytes and error included."""
    assert decode(encode(event)) == event


def test_every_conversation_event_has_a_sample():
    """The samples above cover every conversation event, so a new event cannot go untested."""
    assert {type(e) for e in SAMPLES} >= set(events.CONVERSATION_EVENTS)


@pytest.mark.parametrize("payload", [
    "not json", "[]", '{"type": "Error", "fields": {"code": "internal", "message": "x"}}',
    '{"type": "os.system", "fields": {}}', '{"type": "TextDelta", "fields": {"response_id": "r"}}',
    '{"type": "AudioDelta", "fields": {"response_id": "r", "audio": "***", "sample_rate": 1}}',
])
def test_anything_else_is_refused(payload):
    """Malformed JSON, a non-broadcast event, an unknown type, missing fields or bad base64 raise CodecError."""
    with pytest.raises(CodecError):
        decode(payload)


def test_an_error_event_is_never_encoded():
    """An Error (for one client only) is not a conversation event: encoding it refuses."""
    with pytest.raises(CodecError):
        encode(events.Error("internal", "x"))
