"""Tool calls in a model's text: find them, and keep their markup out of the text a user sees.

Small open models write calls in several forms. `parse_tool_calls` reads, in this order:

1. the Hermes / Qwen form: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one or more;
2. JSON: a bare or fenced (```json) object `{"name": ..., "arguments": {...}}` (or `"parameters"`),
   or a list of them, as the whole reply;
3. the pythonic form: `tool_name(a=1, b="x")` or `[f(...), g(...)]` as the whole reply, for known tools only.

`ToolCallFilter` sits between an engine and its `emit` while tools are offered: it holds back text
that may be the start of a call and lets everything else through at once, so plain replies still
stream token by token. Engines call it; the tool-call loop never sees markup.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Callable, Collection
from typing import Any

from assistant.engines import ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*")


def new_call_id() -> str:
    """A fresh tool-call id, in the `call_...` form OpenAI clients expect."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_calls(text: str, known_tools: Collection[str] = ()) -> tuple[str, list[ToolCall]]:
    """Split a model's reply into the text for the user and the tool calls it makes (see the module doc).

    Names are returned as written (the loop checks them against the registered tools); `known_tools`
    only enables the pythonic form, which would otherwise mistake prose for calls.
    """
    if TOOL_CALL_OPEN in text:
        calls = [call for body in _TAGGED.findall(text) if (call := _json_call(body)) is not None]
        if calls:
            outside = _TAGGED.sub("", text).strip()
            return outside, calls
    stripped = text.strip()
    fenced = _FENCED.match(stripped)
    body = fenced.group(1).strip() if fenced else stripped
    if body.startswith(("{", "[")):
        calls = _json_calls(body)
        if calls:
            return "", calls
    if known_tools:
        calls = _pythonic_calls(body, known_tools)
        if calls:
            return "", calls
    return text, []


def _json_calls(body: str) -> list[ToolCall]:
    try:
        value = json.loads(body)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = [_call_from(item) for item in items]
    return [call for call in calls if call is not None] if all(call is not None for call in calls) else []


def _json_call(body: str) -> ToolCall | None:
    try:
        value = json.loads(body)
    except ValueError:
        return _broken_call(body)
    return _call_from(value) or _broken_call(body)


def _broken_call(body: str) -> ToolCall | None:
    """A tagged call whose JSON does not parse: kept as a call with no name, so the loop can tell the model."""
    if not body.strip():
        return None
    return ToolCall(new_call_id(), "", {"_unparsed": body.strip()[:2000]})


def _call_from(value: Any) -> ToolCall | None:
    """`{"name": ..., "arguments": {...}}` (arguments may also be `parameters`, or a JSON string) as a call."""
    if not isinstance(value, dict):
        return None
    function = value.get("function")
    if isinstance(function, dict) and "name" in function:  # the OpenAI form, sometimes echoed back
        value = function
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {"_unparsed": arguments[:2000]}
    if not isinstance(arguments, dict):
        arguments = {"_unparsed": json.dumps(arguments)[:2000]}
    return ToolCall(str(value.get("id") or new_call_id()), name, arguments)


def _pythonic_calls(body: str, known_tools: Collection[str]) -> list[ToolCall]:
    """`f(a=1)` or `[f(a=1), g()]` where every name is a known tool and every argument a literal."""
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError):
        return []
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls: list[ToolCall] = []
    for node in nodes:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in known_tools) or node.args:
            return []
        try:
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except ValueError:
            return []
        calls.append(ToolCall(new_call_id(), node.func.id, arguments))
    return calls


class ToolCallFilter:
    """Wraps an engine's `emit` while tools are offered: text that may open a tool call is held back.

    Feed every decoded piece to `push`; call `finish(full_text)` once generation ended. It returns the
    user-facing text and the calls (from `parse_tool_calls`), and emits whatever held-back text turned
    out not to be a call, so what was emitted is the returned text (up to surrounding whitespace).
    """

    def __init__(self, emit: Callable[[str], None], known_tools: Collection[str]) -> None:
        self.emit = emit
        self.known_tools = tuple(known_tools)
        self.emitted: list[str] = []
        self.held = ""
        self.holding_call = False  # a `<tool_call>` tag or a call-shaped start was seen: hold to the end

    def push(self, piece: str) -> None:
        """Take the next piece of decoded text; emit what can no longer be part of a call."""
        if self.holding_call:
            self.held += piece
            return
        text = self.held + piece
        if not self.emitted and self._may_open_call(text.lstrip()):
            self.held = text
            if self._opens_call(text.lstrip()):
                self.holding_call = True
            return
        tag = text.find(TOOL_CALL_OPEN)
        if tag >= 0:
            self._emit(text[:tag])
            self.held, self.holding_call = text[tag:], True
            return
        keep = _partial_suffix(text, TOOL_CALL_OPEN)
        self._emit(text[: len(text) - keep])
        self.held = text[len(text) - keep :]

    def finish(self, text: str) -> tuple[str, list[ToolCall]]:
        """The user-facing text and the calls of the whole reply `text`; emits held text that was no call."""
        content, calls = parse_tool_calls(text, self.known_tools)
        if not calls:
            self._emit(self.held)
            return text, []
        said = "".join(self.emitted).strip()
        if content.startswith(said):  # text around the calls that was held back
            self._emit(content[len(said) :])
        return content, calls

    def _emit(self, piece: str) -> None:
        if piece:
            self.emitted.append(piece)
            self.emit(piece)

    def _may_open_call(self, start: str) -> bool:
        """Whether the reply so far (stripped) could still be the beginning of a call."""
        if not start:
            return True
        if start.startswith(("{", "[", "`")) or TOOL_CALL_OPEN.startswith(start[: len(TOOL_CALL_OPEN)]):
            return True
        name = _IDENTIFIER.match(start)
        if name is None:
            return False
        word = name.group(0)
        rest = start[len(word) :]
        if rest == "":
            return any(tool.startswith(word) for tool in self.known_tools)
        return word in self.known_tools and rest.lstrip().startswith("(")

    def _opens_call(self, start: str) -> bool:
        return start.startswith(TOOL_CALL_OPEN)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag` (a tag that may be arriving)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
