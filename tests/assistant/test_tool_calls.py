"""Tool calls read from a model's text, and the filter that keeps their markup off the wire."""

from __future__ import annotations

import pytest

from assistant.tool_calls import ToolCallFilter, parse_tool_calls


def test_hermes_tagged_calls_are_read_and_the_text_around_them_kept():
    """`<tool_call>` JSON blocks become calls; the words outside them stay the reply's text."""
    text = 'Sure.\n<tool_call>\n{"name": "set_timer", "arguments": {"seconds": 60}}\n</tool_call>\n<tool_call>{"name": "now", "arguments": {}}</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == "Sure."
    assert [(c.name, c.arguments) for c in calls] == [("set_timer", {"seconds": 60}), ("now", {})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_an_unterminated_tag_at_the_end_of_a_reply_still_counts():
    """A model that stops right after the JSON (no closing tag) still made its call."""
    _, calls = parse_tool_calls('<tool_call>{"name": "now", "arguments": {"timezone": "UTC"}}')
    assert [(c.name, c.arguments) for c in calls] == [("now", {"timezone": "UTC"})]


def test_a_tagged_call_that_is_not_json_is_kept_for_the_model_to_correct():
    """Broken JSON inside the tags is a nameless call carrying the raw text, not a crash and not prose."""
    _, calls = parse_tool_calls("<tool_call>{name: now}</tool_call>")
    assert calls[0].name == "" and calls[0].arguments == {"_unparsed": "{name: now}"}


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "set_reminder", "arguments": {"text": "dentist"}}',
        '```json\n{"name": "set_reminder", "parameters": {"text": "dentist"}}\n```',
        '[{"name": "set_reminder", "arguments": "{\\"text\\": \\"dentist\\"}"}]',
        '{"type": "function", "function": {"name": "set_reminder", "arguments": {"text": "dentist"}}}',
    ],
)
def test_json_forms_small_models_write_are_read(text):
    """Bare, fenced, listed, string-argument and OpenAI-shaped JSON calls all parse to the same call."""
    content, calls = parse_tool_calls(text)
    assert content == ""
    assert [(c.name, c.arguments) for c in calls] == [("set_reminder", {"text": "dentist"})]


def test_pythonic_calls_need_a_known_tool_name():
    """`now(timezone="UTC")` is a call only when `now` is a tool; otherwise it is text."""
    assert parse_tool_calls('[now(timezone="UTC")]', ["now"])[1][0].arguments == {"timezone": "UTC"}
    assert parse_tool_calls('print("hi")', ["now"]) == ('print("hi")', [])
    assert parse_tool_calls('now(timezone="UTC")') == ('now(timezone="UTC")', [])


def test_json_that_is_not_a_call_stays_text():
    """A JSON answer without a tool name is the reply itself."""
    assert parse_tool_calls('{"answer": 4}') == ('{"answer": 4}', [])


def _run_filter(pieces: list[str], tools=("now", "set_timer")):
    emitted: list[str] = []
    calls = ToolCallFilter(emitted.append, tools)
    for piece in pieces:
        calls.push(piece)
    return emitted, calls.finish("".join(pieces))


def test_plain_text_streams_through_the_filter_piece_by_piece():
    """A reply that is not a call is emitted as it comes, not held to the end."""
    emitted, (content, calls) = _run_filter(["It ", "is ", "sunny."])
    assert emitted == ["It ", "is ", "sunny."] and content == "It is sunny." and calls == []


def test_call_markup_never_reaches_emit():
    """Text before a `<tool_call>` tag streams; the tag, split across pieces, and its JSON do not."""
    emitted, (content, calls) = _run_filter(["One moment", " <tool", "_call>", '{"name": "now", ', '"arguments": {}}', "</tool_call>"])
    assert "".join(emitted) == "One moment " and content == "One moment"
    assert [c.name for c in calls] == ["now"]


def test_held_text_that_was_no_call_is_emitted_at_the_end():
    """A reply starting like a call (`{`, a tool's name) that turns out not to be one is emitted whole."""
    emitted, (content, calls) = _run_filter(["{", '"answer": 4}'])
    assert "".join(emitted) == '{"answer": 4}' and calls == []
    emitted, _ = _run_filter(["no", "w is a good time"])
    assert "".join(emitted) == "now is a good time"


def test_a_pythonic_call_is_held_and_read():
    """`set_timer(seconds=5)` streamed in pieces emits nothing and is read as a call."""
    emitted, (content, calls) = _run_filter(["set_", "timer(", "seconds=5)"])
    assert emitted == [] and calls[0].arguments == {"seconds": 5}
