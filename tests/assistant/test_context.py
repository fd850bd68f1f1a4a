"""The dialogue context built from stored turns: here, how a reply's stored tool calls come back to the model."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

from assistant.context import dialogue_context, user_message
from assistant.store import PartRecord, TurnRecord


def turn(role: str, parts: list[PartRecord], status: str = "completed") -> TurnRecord:
    return TurnRecord("t", role, status, datetime.now(timezone.utc), None, None, None, None, parts)


def tool_parts(call_id: str, status: str, result, error=None) -> list[PartRecord]:
    return [
        PartRecord("tool_call", json.dumps({"call_id": call_id, "name": "add", "arguments": {"a": 1}, "needs_confirmation": False})),
        PartRecord("tool_result", json.dumps({"call_id": call_id, "name": "add", "status": status, "result": result, "error": error})),
    ]


HISTORY = [
    turn("user", [PartRecord("text", "add one")]),
    turn("assistant", [*tool_parts("c1", "ok", {"sum": 2}), *tool_parts("c2", "timeout", None, "add did not answer"), PartRecord("text", "It is 2.")]),
    turn("user", [PartRecord("text", "thanks")]),
]


def test_stored_tool_calls_come_back_as_tool_messages_for_a_tool_engine():
    """An engine that takes tools sees the reply's calls as one assistant message with tool_calls, then one tool message per result."""
    messages = dialogue_context("sys", HISTORY, tools=True)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "user"]
    calls = messages[2]
    assert calls.content == "" and [(c.id, c.name, c.arguments) for c in calls.tool_calls] == [("c1", "add", {"a": 1}), ("c2", "add", {"a": 1})]
    assert (messages[3].tool_call_id, messages[3].name, messages[3].content) == ("c1", "add", '{"sum": 2}')
    assert messages[4].content == "Error (timeout): add did not answer" and messages[5].content == "It is 2."


def test_other_engines_see_only_the_replies_text():
    """An engine that cannot take tools sees the reply's text alone."""
    messages = dialogue_context("sys", HISTORY)
    assert [(m.role, m.content) for m in messages] == [("system", "sys"), ("user", "add one"), ("assistant", "It is 2."), ("user", "thanks")]


def test_the_character_bound_keeps_a_turns_tool_messages_together():
    """A turn's tool exchange is kept or left out as a whole when the history is cut to max_chars."""
    messages = dialogue_context("", HISTORY, tools=True, max_chars=20)
    assert [m.role for m in messages] == ["user"]
    messages = dialogue_context("", HISTORY, tools=True, max_chars=200)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant", "user"]


def test_plain_text_turns_come_back_as_the_full_rendering_would_make_them():
    """Text and transcript turns take a shortcut; what they become is what `user_message` makes of them,
    with or without images, and a plugin part type named like a word part still goes the long way."""
    history = [
        turn("user", [PartRecord("text", "  hello  ")]),
        turn("assistant", [PartRecord("text", "hi")]),
        turn("user", [PartRecord("text", "look"), PartRecord("transcript", "and listen ")]),
        turn("assistant", [PartRecord("text", "a long answer"), PartRecord("heard", "a long")]),
        turn("user", [PartRecord("transcript", "   ")]),
    ]
    for images, labels in ((None, None), ({}, None), (None, {"text": "Note"})):
        messages = dialogue_context("", history, images=images, part_labels=labels)
        expected = [user_message(t.parts, t.text, images, labels) for t in history if t.role == "user"]
        assert [m for m in messages if m.role == "user"] == [m for m in expected if m.content]
        assert [m.content for m in messages if m.role == "assistant"] == ["hi", "a long"]
    assert [m.content for m in dialogue_context("", history) if m.role == "user"] == ["hello", "look\nand listen"]


def test_a_turn_is_rendered_once_per_record_and_a_changed_turn_anew():
    """The same records (kept in memory turn after turn) give the same message objects; a reply that changes is a new
    record (what the user heard was stored) and says what it says now; tool messages follow the engine's kind."""
    user, reply = turn("user", [PartRecord("text", "tell me")]), turn("assistant", [PartRecord("text", "a long story")])
    first = dialogue_context("", [user, reply])
    assert [m.content for m in first] == ["tell me", "a long story"]
    assert all(a is b for a, b in zip(dialogue_context("", [user, reply]), first, strict=True))
    heard = replace(reply, parts=[*reply.parts, PartRecord("heard", "a long")])
    assert heard.memo == {} and [m.content for m in dialogue_context("", [user, heard])] == ["tell me", "a long"]
    assert [m.content for m in dialogue_context("", [user, reply])] == ["tell me", "a long story"]
    stored = HISTORY[1]
    assert [m.role for m in dialogue_context("", [stored])] == ["assistant"]
    assert [m.role for m in dialogue_context("", [stored], tools=True)] == ["assistant", "tool", "tool", "assistant"]
    assert [m.role for m in dialogue_context("", [stored])] == ["assistant"]
