"""Part types from plugins: new kinds of input part (a document, a video) beside text, image and audio.

A plugin registers a `PartType` with the `register_part_types` hook. It names the part's wire `type`,
validates its extra wire fields (a pydantic model), decodes its bytes within limits (blocking, on the
`media-decode` worker) and says what it holds as text (`describe`, which may use the core's image
path and ASR through `PartTools`). The core stores the part's bytes as an attachment (by sha256)
and the text as a `<name>_text` part of the turn, which a text-only dialogue engine reads as
`[Document 1: ...]`. A dialogue engine whose capabilities list the type in `accepts_parts` gets the
decoded object itself in `ChatMessage.parts` instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from assistant.engines import Transcript

if TYPE_CHECKING:
    from assistant.types import AppView

log = logging.getLogger("assistant.part_types")

T = TypeVar("T")

RESERVED_NAMES = frozenset({"text", "image", "audio", "transcript", "image_text", "image_request", "heard"})
"""Wire types and stored part kinds of the core: no part type may take one."""

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
"""A part type's name: lower case, at most 24 characters (its stored `<name>_text` kind fits the store)."""

PART_ERROR_CODES = frozenset({"bad_request", "too_large", "unsupported"})
"""The codes a `PartError` may carry."""

MAX_PART_TEXT_CHARS = 20_000
"""A longer description of one part is cut: one plugin must not flood the context."""


class PartError(Exception):
    """A part the plugin refuses, with a protocol error code: `bad_request` (not what it claims to be),
    `too_large` (past a limit) or `unsupported` (a valid file the plugin cannot read, e.g. an encrypted PDF)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        if code not in PART_ERROR_CODES:
            raise ValueError(f"PartError code must be one of {sorted(PART_ERROR_CODES)}, not {code!r}")
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PartLimits:
    """The limits a part is decoded within (the core checks `max_bytes` before calling `decode` too)."""

    max_bytes: int  # of the part's bytes: the part type's `max_bytes`, within `[limits] max_turn_bytes`
    max_decoded_bytes: int  # memory the decoded part may hold: what the core took for it from the media budget
    max_pixels: int  # of one picture inside the part (a frame, a page): `[image_input] max_pixels`
    max_audio_seconds: float  # of sound inside the part: `[speech] max_seconds`


@dataclass(frozen=True)
class DecodedPart:
    """What `PartType.decode` returns."""

    value: Any = None  # the decoded object: handed to `describe`, and to engines that take the part type natively
    text: str | None = None  # text found while decoding (a document's text); the default `describe` returns it
    nbytes: int = 0  # memory `value` holds; counted against the media budget until the turn has been answered
    mime: str | None = None  # the bytes' type as decoding found it; stored with the attachment


class PartTools(Protocol):
    """What the core lends `PartType.describe`: the image path, ASR, and a worker thread for blocking work."""

    async def describe_images(self, images: list[Any]) -> list[str | None]:
        """For each PIL image, what the loaded image modalities (OCR, labels, ...) say about it, joined; None
        where nothing was said. Features come from the configured image encoder. Never raises."""

    async def transcribe(self, samples: Any, language: str | None = None) -> Transcript | None:
        """The ASR engine's transcript of 16 kHz mono float32 samples; None when no ASR engine is configured.
        Raises `assistant.EngineError` when the engine fails or times out."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking `fn(*args)` on the part type's own worker thread and return its result."""


class PartType(ABC):
    """A kind of input part a plugin adds. Register an instance with `register_part_types`.

    Class attributes to set: `name` (the wire `type`), `label` (how the context names it:
    `[Label N: ...]`), `mimes` (the types accepted; a part whose `mime` is not listed is refused),
    `max_bytes` (larger parts are refused as `too_large` before decoding) and optionally `fields`,
    a pydantic model for the part's other wire fields (besides `type`, `data` and `mime`).
    """

    name: str
    label: str = ""
    mimes: tuple[str, ...] = ()
    max_bytes: int = 10 * 1024 * 1024
    fields: type[BaseModel] | None = None

    def load(self, app: AppView) -> bool:
        """Called once at startup, off the event loop: read settings, load models. Return False to sit out."""
        return True

    def decode_cost(self, size: int) -> int:
        """Memory decoding a part of `size` bytes may hold at its peak; taken from the media budget first.
        Default: four times its bytes. `decode` gets it as `limits.max_decoded_bytes` and must stay within."""
        return 4 * size

    @abstractmethod
    def decode(self, data: bytes, mime: str | None, options: BaseModel | None, limits: PartLimits) -> DecodedPart:
        """Check and decode the part's bytes (blocking, on the `media-decode` worker).

        `mime` is what the client said (None: find out), `options` its other wire fields validated by
        `fields` (None without `fields`). Raise `PartError` for input the client can fix; anything
        else fails the turn as `internal`. Never hold more than `limits` allow.
        """

    async def describe(self, part: DecodedPart, tools: PartTools) -> str | None:
        """The part as text for a text-only dialogue engine, or None. Runs on the event loop after the
        turn is stored: do blocking work with `tools.run`. Default: the text decoding found."""
        return part.text

    def close(self) -> None:
        """Release what `load` took; called once at shutdown."""


@dataclass(frozen=True)
class RegisteredPartType:
    """A part type with the plugin that registered it."""

    name: str
    part_type: PartType
    plugin: str


def check_part_type(part_type: Any, plugin: str) -> str | None:
    """Why `part_type` cannot be registered, or None when it can."""
    if not isinstance(part_type, PartType):
        return f"plugin {plugin!r}: {part_type!r} is not an assistant.PartType"
    name = getattr(part_type, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"plugin {plugin!r}: part type name {name!r} must match {NAME_PATTERN.pattern}"
    if name in RESERVED_NAMES or name.endswith("_text"):
        return f"plugin {plugin!r}: part type name {name!r} is the core's own ({', '.join(sorted(RESERVED_NAMES))} are taken)"
    if not isinstance(part_type.max_bytes, int) or part_type.max_bytes < 1:
        return f"plugin {plugin!r}: part type {name!r}: max_bytes must be a positive int"
    if part_type.fields is not None and not (isinstance(part_type.fields, type) and issubclass(part_type.fields, BaseModel)):
        return f"plugin {plugin!r}: part type {name!r}: fields must be a pydantic model class or None"
    if not all(isinstance(m, str) for m in part_type.mimes) or not part_type.mimes:
        return f"plugin {plugin!r}: part type {name!r}: mimes must name at least one type"
    return None


def label_of(part_type: PartType) -> str:
    """How the context names the part type: its `label`, or its name capitalized."""
    return part_type.label or part_type.name.replace("_", " ").capitalize()


async def load_part_types(app: AppView, registered: list[RegisteredPartType]) -> dict[str, RegisteredPartType]:
    """Load each part type off the loop, by name; those whose `load` returns False sit out."""
    loaded = {}
    for entry in registered:
        if await asyncio.to_thread(entry.part_type.load, app):
            loaded[entry.name] = entry
            log.info("part type ready: %s (plugin %s)", entry.name, entry.plugin)
        else:
            log.info("part type %s sits out", entry.name)
    return loaded
