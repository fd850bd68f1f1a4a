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
        "response.cancel": {"response_id": "r"}, "response.audio.played": {"response_id": "r", "ms": 5}, "image.generate": {"prompt": "a cat"},
        "image.cancel": {"job_id": "j"}, "conversation.get": {}, "conversation.search": {"query": "cat"},
        "tool.confirm": {"call_id": "c", "approved": True},
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


def test_any_other_part_type_parses_as_a_plugin_part_with_its_own_fields():
    """A part of a type the core does not know parses as PluginPart (checked against registered types later), extra fields kept."""
    from assistant.dialects.native.protocol import PluginPart, TextPart

    event = parse_client_event(json.dumps({
        "type": "turn.create", "content": [{"type": "document", "data": "QQ==", "mime": "application/pdf", "name": "a.pdf"}, {"type": "text", "text": "x"}],
    }))
    part = event.content[0]
    assert isinstance(part, PluginPart) and isinstance(event.content[1], TextPart)
    assert (part.type, part.data, part.mime, part.fields) == ("document", "QQ==", "application/pdf", {"name": "a.pdf"})


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
        ('{"type": "turn.create", "content": [{"type": "document", "mime": "application/pdf"}]}', "content.0.plugin.data: Field required"),
        ('{"type": "turn.create", "content": [{"type": "text"}]}', "content.0.text.text: Field required"),
        ('{"type": "turn.create", "content": [{"type": 5, "data": ""}]}', "content.0.plugin.type"),
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


def _documented_types(section: str) -> set[str]:
    """Event types in the first column of the first table under `## <section>` of docs/protocol.md (`a` / `b` rows give both)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[4] / "docs" / "protocol.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    table = body[body.index("\n|"):].split("\n\n", 1)[0]
    found: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            found.update(re.findall(r"`([a-z_.]+)`", line.split("|")[1]))
    return found


def test_docs_list_exactly_the_protocols_events():
    """docs/protocol.md's client and server tables name exactly the event types the models define."""
    from assistant.dialects.native.protocol import SERVER_EVENTS

    assert _documented_types("Client -> server") == set(CLIENT_EVENT_TYPES)
    assert _documented_types("Server -> client") == {model.model_fields["type"].default for model in SERVER_EVENTS}


def test_every_domain_event_has_a_protocol_form():
    """The native dialect translates every domain event the core can emit into a v1 server event."""
    from assistant import events
    from assistant.dialects.native.translate import to_wire

    samples = {
        events.TurnCreated: ("t",), events.SpeechStarted: (1,), events.SpeechStopped: (2,), events.TranscriptDelta: ("t", "hi"),
        events.TranscriptDone: ("t", "hi", "en", 1.0), events.ReplyStarted: ("r", "t"), events.TextDelta: ("r", "x"),
        events.ReplyDone: ("r", "completed", "x"), events.AudioDelta: ("r", b"\x00\x01", 16000),
        events.AudioDone: ("r", "completed", 1), events.ImageStarted: ("j", None, "p", 8, 8, 1, 3),
        events.ImageProgress: ("j", 1, 2, b"png"), events.ImageDone: ("j", "completed", 3, "image/png", b"png", "s"),
        events.ToolCallStarted: ("r", "c", "get_time", {"zone": "UTC"}, True),
        events.ToolCallDone: ("r", "c", "get_time", "ok", {"time": "12:00"}, None),
        events.ReminderDue: ("m", "tea", "2026-01-01T12:00:00+01:00", "Europe/Berlin", "conv"),
    }
    assert set(samples) == {*events.CONVERSATION_EVENTS, events.ReminderDue}  # a reminder is for a principal, not a conversation
    for kind, args in samples.items():
        frame = json.loads(serialize(to_wire(kind(*args)), 5))
        assert parse_server_event(json.dumps(frame)).seq == 5
    assert json.loads(serialize(to_wire(events.Error("not_found", "gone", "e1")), 0))["ref"] == "e1"
