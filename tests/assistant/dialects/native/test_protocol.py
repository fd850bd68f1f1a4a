"""Protocol v1 parsing and serializing, with no sockets."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from assistant.dialects.native.protocol import (
    CLIENT_EVENT_TYPES,
    ResponseDone,
    ResponseTextDelta,
    SessionStart,
    TurnCreate,
    parse_client_event,
    parse_server_event,
    serialize,
)
from assistant.errors import AssistantError


def test_every_client_event_type_of_the_design_parses():
    """Each client event of protocol v1 parses from a minimal valid frame."""
    frames = {
        "session.start": {}, "turn.create": {"content": [{"type": "text", "text": "hi"}]},
        "audio.append": {"data": "AAAA"}, "audio.commit": {}, "audio.clear": {},
        "response.cancel": {"response_id": "r"}, "image.generate": {"prompt": "a cat"},
        "image.cancel": {"job_id": "j"}, "conversation.get": {}, "conversation.search": {"query": "cat"},
    }
    assert set(frames) == CLIENT_EVENT_TYPES
    for event_type, fields in frames.items():
        assert parse_client_event(json.dumps({"type": event_type, **fields})).type == event_type


def test_turn_create_parts_and_options():
    """Text, image and audio parts parse; options are typed and bounded."""
    event = parse_client_event(json.dumps({
        "type": "turn.create", "event_id": "e",
        "content": [{"type": "text", "text": "a"}, {"type": "image", "data": "QQ==", "mime": "image/png"},
                    {"type": "audio", "data": "QQ==", "format": "wav"}],
        "options": {"max_new_tokens": 5, "temperature": 0.5},
    }))
    assert isinstance(event, TurnCreate) and event.content[2].sample_rate == 16000
    assert event.options.max_new_tokens == 5


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("{", "malformed JSON"),
        ('"text"', "JSON object"),
        ('{"type": 5}', "'type'"),
        ('{"type": "nope"}', "unknown event type"),
        ('{"type": "session.start", "extra": 1}', "extra"),
        ('{"type": "turn.create", "content": [{"type": "text", "text": "x"}], "options": {"max_new_tokens": 0}}', "max_new_tokens"),
        ('{"type": "turn.create", "content": [{"type": "audio", "data": "x", "format": "mp9"}]}', "format"),
        ('{"type": "response.cancel", "response_id": ""}', "response_id"),
        ('{"type": "session.start", "event_id": 5}', "event_id"),
    ],
)
def test_bad_frames_raise_bad_request_naming_the_problem(frame, needle):
    """Every malformed frame raises AssistantError(bad_request) with the offending field in the message."""
    with pytest.raises(AssistantError) as err:
        parse_client_event(frame)
    assert err.value.code == "bad_request" and needle in err.value.message


def test_error_carries_the_event_id_as_ref():
    """A bad event with an event_id is answered with that id as ref."""
    with pytest.raises(AssistantError) as err:
        parse_client_event('{"type": "turn.create", "event_id": "abc"}')
    assert err.value.ref == "abc"


def test_server_events_round_trip_with_seq():
    """Serialized server events carry seq and parse back; invalid ones are rejected."""
    frame = serialize(ResponseTextDelta(response_id="r", delta="hi"), 7)
    assert json.loads(frame) == {"type": "response.text.delta", "seq": 7, "response_id": "r", "delta": "hi"}
    done = parse_server_event(serialize(ResponseDone(response_id="r", status="completed", text="hi"), 8))
    assert done.seq == 8 and done.status == "completed"
    with pytest.raises(ValidationError):
        parse_server_event('{"type": "response.done", "seq": 1, "response_id": "r", "status": "weird", "text": ""}')
    assert isinstance(parse_client_event('{"type": "session.start"}'), SessionStart)
