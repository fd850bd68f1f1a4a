"""The dialogue context: stored turns -> the engine's messages (late-fused image text, or the images themselves)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from assistant.engines import ChatMessage, MessagePart, ToolCall
from assistant.image_features import stored_image
from assistant.store import TOOL_PART_KINDS, PartRecord, TurnRecord
from assistant.tools import tool_message_content

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.image_input import DecodedImage

log = logging.getLogger("assistant.context")


def dialogue_context(
    system_prompt: str,
    history: list[TurnRecord],
    images: dict[str, Any] | None = None,
    max_chars: int | None = None,
    part_labels: Mapping[str, str] | None = None,
    native_parts: Mapping[str, MessagePart] | None = None,
    tools: bool = False,
) -> list[ChatMessage]:
    """The messages for the engine: system prompt, then stored turns that have something to say, oldest first.

    Assistant replies count when completed or cancelled (the user saw their text); failed and
    interrupted replies are left out; a spoken reply the user talked over counts as what they heard.
    `images` (sha256 -> pixels) is given for an engine that sees images: user messages then carry
    those images. Otherwise each user image is rendered as the text the modalities stored for it
    (`[Image N: ocr text; labels]`, one line per image), before the turn's own words.

    `part_labels` (part type name -> label) names the plugin part types: each such part is rendered as
    the text its type described it with (`[Document N: ...]`, numbered per type), after the images.
    `native_parts` (sha256 -> decoded part) are the new turn's parts of types the engine takes
    natively: their user message carries them in `parts` instead of a line of text.

    `max_chars` bounds the characters of the turns' messages: the newest are kept, and the history
    stops at the first older message that would not fit (the newest message is always kept). It is
    what keeps an engine from tokenizing a long stored history again at every turn.

    `tools` (the engine takes tools): a reply's stored tool calls and results come back as an assistant
    message with `tool_calls` and one `tool` message per result, before the reply's text; for other
    engines they are left out (the reply's text says what came of them).
    """
    kept: list[ChatMessage] = []
    chars = 0
    labels, native = part_labels or {}, native_parts or {}
    plain = not (labels.keys() & _WORDS)  # a plain-text user turn is its text alone (see `user_message`)
    for turn in reversed(history):
        messages, size = _turn_messages(turn, images, labels, native, plain, tools)
        if not messages:
            continue
        chars += size
        if max_chars is not None and kept and chars > max_chars:
            break
        kept += reversed(messages)
    return ([ChatMessage("system", system_prompt)] if system_prompt else []) + kept[::-1]


Rendered = tuple[tuple[ChatMessage, ...], int]
"""A turn's messages in the context, oldest first, and their characters."""

_UNSEEN = object()


def _turn_messages(
    turn: TurnRecord, images: dict[str, Any] | None, labels: Mapping[str, str], native: Mapping[str, MessagePart], plain: bool, tools: bool,
) -> Rendered:
    """What a stored turn adds to the context. A plain-text user turn and a reply are rendered once per record
    (`TurnRecord.memo`): the same records come back from memory turn after turn, so a long history is not
    rendered again at every turn. A user turn with images or plugin parts depends on this turn's arguments."""
    if turn.role == "user":
        if plain:
            found = turn.memo.get("plain_user", _UNSEEN)
            if found is _UNSEEN:
                found = turn.memo["plain_user"] = _plain_user(turn)
            if found is not None:
                return cast(Rendered, found)
        message = _user_message(turn, images, labels, native)
        return _rendered([message] if message.content or message.images or message.parts else [])
    if turn.role == "assistant" and turn.status in ("completed", "cancelled"):
        key = ("reply", tools)
        found = turn.memo.get(key)
        if found is None:
            messages = tool_messages(turn.parts) if tools else []
            said = _said(turn)
            if said:
                messages.append(ChatMessage("assistant", said))
            found = turn.memo[key] = _rendered(messages)
        return cast(Rendered, found)
    return (), 0


def _plain_user(turn: TurnRecord) -> Rendered | None:
    """A user turn of text and transcripts alone: its words as one message; None when it holds anything else."""
    if not all(p.kind in _WORDS for p in turn.parts):
        return None
    text = turn.text.strip()
    return _rendered([ChatMessage("user", text)] if text else [])


def _rendered(messages: list[ChatMessage]) -> Rendered:
    return tuple(messages), sum(len(m.content) for m in messages)


_WORDS = frozenset({"text", "transcript"})
"""Part kinds that are a turn's own words (`TurnRecord.text`)."""


def _said(turn: TurnRecord) -> str:
    """What an assistant turn said to the user: its text, or what the user heard of a spoken reply cut short."""
    heard = [p.text or "" for p in turn.parts if p.kind == "heard"]
    return heard[-1] if heard else turn.text


def tool_messages(parts: list[PartRecord]) -> list[ChatMessage]:
    """A stored reply's tool exchange as messages: the assistant's calls, then each call's `tool` message."""
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for part in parts:
        if part.kind not in TOOL_PART_KINDS or not part.text:
            continue
        try:
            data = json.loads(part.text)
        except ValueError:
            continue
        if part.kind == "tool_call":
            arguments = data.get("arguments")
            calls.append(ToolCall(data["call_id"], data["name"], arguments if isinstance(arguments, dict) else {}))
        else:
            content = tool_message_content(data["status"], data.get("result"), data.get("error"))
            results.append(ChatMessage("tool", content, tool_call_id=data["call_id"], name=data["name"]))
    return [ChatMessage("assistant", "", tool_calls=tuple(calls)), *results] if calls else []


def image_numbers(shas: list[str]) -> dict[str, int]:
    """Each distinct image's number in its turn: the 1-based position where it first appears, in order."""
    numbers: dict[str, int] = {}
    for index, sha in enumerate(shas, start=1):
        numbers.setdefault(sha, index)
    return numbers


def _user_message(turn: TurnRecord, images: dict[str, Any] | None, labels: Mapping[str, str], native: Mapping[str, MessagePart]) -> ChatMessage:
    return user_message(turn.parts, turn.text, images, labels, native)


def user_message(
    parts: list[PartRecord], text: str, images: dict[str, Any] | None,
    labels: Mapping[str, str] | None = None, native: Mapping[str, MessagePart] | None = None,
) -> ChatMessage:
    """A user turn's message: its `text` with its images' pixels (`images` given), or with one
    `[Image N: ...]` line per image rendered from its `image_text` parts; then its plugin parts (`labels`:
    part type -> label) as `[Label N: ...]` lines, or as decoded parts for a native engine (`native`)."""
    shas = [p.attachment_sha256 for p in parts if p.kind == "image" and p.attachment_sha256]
    part_lines, native_parts = _plugin_parts(parts, labels or {}, native or {})
    if images is not None:
        return ChatMessage("user", "\n".join([*part_lines, text]).strip(), tuple(images[sha] for sha in shas if sha in images), parts=native_parts)
    number = image_numbers(shas)
    said: dict[str, list[str]] = {}  # what the modalities said, per image, joined into one line
    for part in parts:
        if part.kind == "image_text" and part.text:
            said.setdefault(part.attachment_sha256 or "", []).append(part.text)
    lines = [f"[Image {number.get(sha, len(shas))}: {'; '.join(texts)}]" for sha, texts in said.items()]
    described = {p.attachment_sha256 for p in parts if p.kind == "image_text"}
    lines += [f"[Image {index}: no description available]" for sha, index in number.items() if sha not in described]
    return ChatMessage("user", "\n".join([*lines, *part_lines, text]).strip(), parts=native_parts)


def _plugin_parts(
    parts: list[PartRecord], labels: Mapping[str, str], native: Mapping[str, MessagePart],
) -> tuple[list[str], tuple[MessagePart, ...]]:
    """The turn's plugin parts: a `[Label N: text]` line each (numbered per type), or the decoded part for a native engine."""
    lines: list[str] = []
    found: list[MessagePart] = []
    counts: dict[str, int] = {}
    texts: dict[tuple[str, str], list[str]] = {}
    for part in parts:
        kind = part.kind.removesuffix("_text")
        if part.kind.endswith("_text") and kind in labels and part.text:
            texts.setdefault((kind, part.attachment_sha256 or ""), []).append(part.text)
    for part in parts:
        if part.kind not in labels:
            continue
        counts[part.kind] = number = counts.get(part.kind, 0) + 1
        sha = part.attachment_sha256 or ""
        if sha in native and native[sha].type == part.kind:
            found.append(native[sha])
            continue
        said = texts.get((part.kind, sha))
        lines.append(f"[{labels[part.kind]} {number}: {'; '.join(said) if said else 'no description available'}]")
    return lines, tuple(found)


async def context_images(app: App, history: list[TurnRecord], new_images: list[DecodedImage]) -> dict[str, Any]:
    """Pixels of the most recent user images in `history` (at most `[image_input] context_images`), by sha256.

    `new_images` are the turn's own, already decoded; earlier ones are loaded from the store.
    """
    keep = app.config.image_input.context_images
    shas = [p.attachment_sha256 for t in history if t.role == "user" for p in t.parts if p.kind == "image" and p.attachment_sha256]
    wanted = list(dict.fromkeys(reversed(shas)))[:keep]
    have = {image.sha256: image.image for image in new_images}
    try:
        loaded = await asyncio.gather(*(stored_image(app, sha) for sha in wanted if sha not in have))
    except Exception:  # the reply placeholder is committed: never leave it unfinished over an earlier image
        log.exception("loading earlier images for the context failed; they are left out")
        loaded = []
    have.update(pair for pair in loaded if pair is not None)
    return {sha: have[sha] for sha in wanted if sha in have}
