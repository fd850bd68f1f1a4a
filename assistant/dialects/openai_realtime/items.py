"""A Realtime session's conversation: its items, in order, kept in memory and bounded; the context they make.

Items are what the Realtime API calls the conversation: user, system and assistant messages, function
calls and their outputs. They live as long as the connection (Realtime sessions are ephemeral here, as
at OpenAI: nothing is stored). Audio is kept as its transcript, images as their bytes until the session
ends; past `MAX_ITEMS` items or `max_bytes` bytes a new item is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from assistant.dialects.openai_realtime.protocol import RealtimeProblem
from assistant.engines import ToolCall
from assistant.stateless import StatelessMessage
from assistant.turns import ImageIn, PartIn, TextIn

if TYPE_CHECKING:
    from assistant.speech import Speaker

MAX_ITEMS = 1000
"""Items one session may hold."""


@dataclass
class Content:
    """One content part of a message item: text, an audio's transcript, or an image's bytes."""

    type: str  # input_text, input_audio, input_image, output_text, output_audio
    text: str | None = None
    transcript: str | None = None
    image: bytes | None = None
    mime: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """As in an item of a server event (audio and image bytes are not echoed back)."""
        if self.type in ("input_text", "output_text"):
            return {"type": self.type, "text": self.text or ""}
        if self.type == "input_image":
            return {"type": "input_image"}
        return {"type": self.type, "transcript": self.transcript}

    @property
    def size(self) -> int:
        """Bytes this part holds."""
        return len((self.text or "").encode()) + len((self.transcript or "").encode()) + len(self.image or b"")


@dataclass
class Item:
    """One conversation item."""

    id: str
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    content: list[Content] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    speaker: Speaker | None = None  # the speech of an assistant audio item, for `conversation.item.truncate`

    def to_wire(self) -> dict[str, Any]:
        """The item as OpenAI's `ConversationItem`."""
        base: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "message":
            return {**base, "role": self.role, "content": [part.to_wire() for part in self.content]}
        if self.type == "function_call":
            return {**base, "call_id": self.call_id, "name": self.name, "arguments": self.arguments or ""}
        return {**base, "call_id": self.call_id, "output": self.output or ""}

    @property
    def size(self) -> int:
        """Bytes this item holds."""
        return sum(part.size for part in self.content) + sum(len((v or "").encode()) for v in (self.arguments, self.output, self.name))

    @property
    def text(self) -> str:
        """The item's words: its text and transcripts, joined."""
        return "\n".join(t for part in self.content for t in (part.text, part.transcript) if t)


class Items:
    """A session's items in order, bounded in count and bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: list[Item] = []

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str, event_id: str | None, param: str = "item_id") -> Item:
        """The item with this id; RealtimeProblem `item_not_found` otherwise."""
        for item in self._items:
            if item.id == item_id:
                return item
        raise RealtimeProblem("item_not_found", f"no item {item_id!r} in this session", param, event_id)

    def add(self, item: Item, previous_item_id: str | None, event_id: str | None) -> str | None:
        """Insert `item` after `previous_item_id` (None: at the end, `root`: first); returns the id before it."""
        if any(existing.id == item.id for existing in self._items):
            raise RealtimeProblem("invalid_value", f"an item with id {item.id!r} already exists", "item.id", event_id)
        if len(self._items) >= MAX_ITEMS:
            raise RealtimeProblem("too_large", f"this session holds {MAX_ITEMS} items, the most it may; start a new session", None, event_id)
        held = sum(existing.size for existing in self._items)
        if held + item.size > self.max_bytes:
            raise RealtimeProblem(
                "too_large", f"this session's items would hold {held + item.size} bytes, more than the {self.max_bytes} it may; start a new session",
                None, event_id,
            )
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = self._items.index(self.get(previous_item_id, event_id, "previous_item_id")) + 1
        self._items.insert(index, item)
        return self._items[index - 1].id if index else None

    def delete(self, item_id: str, event_id: str | None) -> None:
        """Remove an item; `item_not_found` when there is none."""
        self._items.remove(self.get(item_id, event_id))

    def messages(self, instructions: str, context_chars: int) -> list[StatelessMessage]:
        """The context of a response: the instructions, then the newest items whose words fit `context_chars`.

        Consecutive function calls become one assistant message with several tool calls; an in-progress item, and a
        function call output whose call is not in the context, are left out."""
        kept: list[Item] = []
        chars = 0
        for item in reversed(self._items):
            if item.status == "in_progress":
                continue
            chars += len(item.text) + len(item.arguments or "") + len(item.output or "")
            if chars > context_chars and kept:
                break
            kept.insert(0, item)
        calls = {item.call_id for item in kept if item.type == "function_call"}
        kept = [item for item in kept if item.type != "function_call_output" or item.call_id in calls]  # a result without its call: dropped
        names = {item.call_id: item.name for item in self._items if item.type == "function_call"}
        messages = [StatelessMessage("system", [TextIn(instructions)])] if instructions else []
        for item in kept:
            if item.type == "function_call":
                call = ToolCall(item.call_id or item.id, item.name or "", _arguments(item.arguments))
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant" and last.tool_calls:
                    messages[-1] = StatelessMessage("assistant", last.content, (*last.tool_calls, call))
                else:
                    messages.append(StatelessMessage("assistant", [], (call,)))
            elif item.type == "function_call_output":
                messages.append(StatelessMessage("tool", [TextIn(item.output or "")], tool_call_id=item.call_id, name=names.get(item.call_id)))
            else:
                assert item.role is not None
                messages.append(StatelessMessage(item.role, _parts(item)))
        return messages


def _parts(item: Item) -> list[PartIn]:
    parts: list[PartIn] = []
    for part in item.content:
        if part.image is not None:
            parts.append(ImageIn(part.image, part.mime))
        elif part.text or part.transcript:
            parts.append(TextIn(part.text or part.transcript or ""))
    return parts


def _arguments(arguments: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"_unparsed": arguments}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}
