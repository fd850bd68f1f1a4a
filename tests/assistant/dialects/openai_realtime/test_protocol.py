"""The Realtime wire and items with no sockets: client events parsed, problems named, items bounded and turned into context."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from assistant.dialects.openai_realtime import protocol as wire
from assistant.dialects.openai_realtime.items import Content, Item, Items
from assistant.turns import ImageIn, TextIn
from tests.assistant.dialects.openai_realtime.realtime import validate
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ToolCallingDialogue

SDK_EVENTS = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "hi", "output_modalities": ["audio"],
                                           "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                               "turn_detection": {"type": "server_vad", "threshold": 0.6}},
                                                     "output": {"voice": "marin"}},
                                           "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                                           "tool_choice": {"type": "function", "name": "f"}}},
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "{}"}, "previous_item_id": "root"},
    {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1500},
    {"type": "conversation.item.delete", "item_id": "i"},
    {"type": "conversation.item.retrieve", "item_id": "i"},
    {"type": "response.create", "response": {"output_modalities": ["text"], "conversation": "none", "metadata": {"k": "v"}}},
    {"type": "response.cancel", "response_id": "r"},
    {"type": "output_audio_buffer.clear"},
]


@pytest.mark.parametrize("event", SDK_EVENTS, ids=[e["type"] for e in SDK_EVENTS])
def test_every_client_event_the_sdk_can_send_parses(event):
    """Each client event type, as the SDK's own type accepts it, parses into our model with its event_id."""
    TypeAdapter(RealtimeClientEvent).validate_python(event)
    parsed = wire.parse_client_event(json.dumps({**event, "event_id": "e1"}))
    assert parsed.type == event["type"] and parsed.event_id == "e1"


def test_a_partial_session_update_sets_only_what_it_names():
    """Fields a client leaves out are not in model_fields_set, so they keep their values; an explicit null turn_detection is kept."""
    parsed = wire.parse_client_event(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}))
    assert isinstance(parsed, wire.SessionUpdate)
    assert parsed.session.model_fields_set == {"type", "audio"} and "turn_detection" in parsed.session.audio.input.model_fields_set


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("[1, 2]", "invalid_event", None),
        ('{"event_id": "x"}', "missing_required_parameter", "type"),
        ('{"type": "response.create", "response": {"output_modalities": ["text", "audio"]}}', "invalid_value", "response.output_modalities"),
        ('{"type": "session.update", "session": {"type": "realtime", "tools": [{"name": "has space"}]}}', "invalid_value", "session.tools.0.name"),
        ('{"type": "session.update", "session": {"type": "realtime", "output_modalities": ["smell"]}}', "invalid_value", "session.output_modalities.0"),
    ],
)
def test_problems_name_their_parameter(frame, code, param):
    """Bad events raise a RealtimeProblem with an OpenAI-style code and the dotted path at fault; its error event validates."""
    with pytest.raises(wire.RealtimeProblem) as raised:
        wire.parse_client_event(frame)
    problem = raised.value
    assert (problem.code, problem.param) == (code, param) and problem.message
    assert validate(problem.to_wire())["error"]["param"] == param


def test_items_become_the_engines_context():
    """Instructions first; consecutive function calls merge into one assistant message; tool results carry their call's name."""
    items = Items(10_000)
    items.add(Item("u", "message", "user", [Content("input_text", text="weather?"), Content("input_image", image=b"png", mime="image/png")]), None, None)
    items.add(Item("c1", "function_call", call_id="a", name="weather", arguments='{"city": "Oslo"}'), None, None)
    items.add(Item("c2", "function_call", call_id="b", name="time", arguments="not json"), None, None)
    items.add(Item("o1", "function_call_output", call_id="a", output="rain"), None, None)
    items.add(Item("s", "message", "system", [Content("input_text", text="be kind")]), "u", None)
    messages = items.messages("You help.", 10_000)
    assert [m.role for m in messages] == ["system", "user", "system", "assistant", "tool"]
    assert messages[1].content == [TextIn("weather?"), ImageIn(b"png", "image/png")]
    assert [(c.name, c.arguments) for c in messages[3].tool_calls] == [("weather", {"city": "Oslo"}), ("time", {"_unparsed": "not json"})]
    assert (messages[4].tool_call_id, messages[4].name, messages[4].text) == ("a", "weather", "rain")
    assert [m.role for m in items.messages("", 12)] == ["assistant"], "only the newest items that fit; a dangling tool result is dropped"


def test_items_are_bounded():
    """An item past the byte bound, or a duplicate id, is refused; `root` places an item first."""
    items = Items(100)
    items.add(Item("a", "message", "user", [Content("input_text", text="x" * 60)]), None, None)
    with pytest.raises(wire.RealtimeProblem) as raised:
        items.add(Item("b", "message", "user", [Content("input_text", text="x" * 60)]), None, "e")
    assert raised.value.code == "too_large" and raised.value.event_id == "e"
    with pytest.raises(wire.RealtimeProblem, match="already exists"):
        items.add(Item("a", "message", "user", [Content("input_text", text="y")]), None, None)
    assert items.add(Item("c", "message", "user", [Content("input_text", text="y")]), "root", None) is None
    assert [item.id for item in items] == ["c", "a"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_events(draw) -> dict:
    """An event the SDK could send, with one field (at any depth) replaced, removed or added."""
    event = copy.deepcopy(draw(st.sampled_from(SDK_EVENTS)))
    target = event
    while isinstance(target, dict) and target and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(target)))
        if not isinstance(target[key], dict):
            break
        target = target[key]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "add" or not target:
        target[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    elif action == "remove":
        del target[draw(st.sampled_from(sorted(target)))]
    else:
        target[draw(st.sampled_from(sorted(target)))] = draw(JSON_VALUES)
    return event


@pytest.fixture(scope="module")
def fuzzed_session(tmp_path_factory):
    """A RealtimeSession on a real App (tool-calling fake engine), on its own event loop; what it sends is kept."""
    from assistant.app import App
    from assistant.dialects.openai_realtime.session import RealtimeSession

    loop = asyncio.new_event_loop()
    config = make_config(tmp_path_factory.mktemp("fuzz"), limits={"turns_per_minute": 1_000_000})
    app = loop.run_until_complete(App.start(config, [FakeEnginesPlugin(ToolCallingDialogue())]))
    sent: list[dict] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    yield loop, RealtimeSession(app, "local", send), sent
    loop.run_until_complete(app.drain(0))
    loop.run_until_complete(app.stop())
    loop.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=mutated_events())
def test_mutated_events_never_break_the_session(fuzzed_session, event):
    """Whatever a mutated event holds, the session answers with valid server events and never an internal error."""
    loop, session, sent = fuzzed_session
    before = len(sent)
    loop.run_until_complete(session.handle_frame(json.dumps(event)))
    while session._work is not None and not session._work.done():
        loop.run_until_complete(asyncio.wait([session._work]))
    for answer in sent[before:]:
        validate(answer)
        assert not (answer["type"] == "error" and answer["error"]["code"] == "internal"), (event, answer)
        if answer["type"] == "response.done" and answer["response"]["status"] == "failed":
            assert answer["response"]["status_details"]["error"]["code"] != "internal", (event, answer)
