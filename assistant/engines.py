"""Engine roles and the small base class each role's engines implement.

An engine is loaded once per process and shared by all sessions. Its methods are blocking and run
on a worker thread (see `assistant.scheduler`); they never run on the event loop.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

ROLES: tuple[str, ...] = ("asr", "image_encoder", "dialogue", "image_generator")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, for the core and for clients."""

    streaming: bool = False
    batching: bool = False
    accepts_image_features: bool = False
    devices: tuple[str, ...] = ("cpu",)


class Engine(ABC):
    """Base of every engine: an id such as `transformers:SmolLM2-135M-Instruct`, and capabilities."""

    role: ClassVar[str]
    id: str
    capabilities: Capabilities = Capabilities()

    def close(self) -> None:
        """Release the engine's resources; called once at shutdown. Default: nothing to release."""


class EngineError(Exception):
    """An engine refused a request for a reason the client can act on; `code` is a protocol error code."""

    code: str = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class ChatMessage:
    """One message of the dialogue context."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    """Per-turn overrides; None means the engine's configured default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True)
class DialogueRequest:
    """The fused context for one reply: system prompt first, the new user message last."""

    messages: list[ChatMessage]
    options: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class DialogueResult:
    """How a reply ended: `finish_reason` is `stop`, `length` or `cancelled`."""

    text: str
    usage: Usage
    finish_reason: Literal["stop", "length", "cancelled"]


class DialogueEngine(Engine):
    """Answers from the fused context, streaming text as it is produced."""

    role = "dialogue"

    @abstractmethod
    def generate(
        self,
        request: DialogueRequest,
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> DialogueResult:
        """Produce a reply; call `emit(delta)` for each new piece of text, in order.

        Blocking: the core calls it on a worker thread. Check `cancelled` between tokens and stop
        with finish_reason `cancelled` once it is set. Raise `EngineError` for a request the engine
        cannot serve (code `too_large` for a context that does not fit).
        """


@dataclass(frozen=True)
class ImageRequest:
    """A text-to-image job, every field filled in and validated by the engine's `prepare`."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance: float
    seed: int


@dataclass(frozen=True)
class GeneratedImage:
    """A finished image: PNG bytes and the seed that made it."""

    png: bytes
    width: int
    height: int
    seed: int


class GenerationCancelled(Exception):
    """Raised by an image generator that stopped because its job was cancelled."""


class ImageGenerator(Engine):
    """Paints images from text, reporting progress after every denoising step."""

    role = "image_generator"

    @abstractmethod
    def prepare(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
    ) -> ImageRequest:
        """Fill defaults and validate against the engine's limits; raise EngineError(code bad_request).

        Cheap and non-blocking: the core calls it on the event loop before queueing the job.
        """

    @abstractmethod
    def generate(
        self,
        request: ImageRequest,
        on_step: Callable[[int, int, bytes | None], None],
        cancelled: threading.Event,
    ) -> GeneratedImage:
        """Paint the image; call `on_step(step, total, preview_png_or_None)` after each step.

        Blocking: runs on the engine's worker thread. Once `cancelled` is set, stop at the next step
        by raising GenerationCancelled. The same request gives the same image on the same device.
        """


@dataclass(frozen=True)
class Transcript:
    """What was said: text, the language spoken (or None if unknown) and the audio's length."""

    text: str
    language: str | None
    duration_s: float


class AsrEngine(Engine):
    """Speech to text."""

    role = "asr"

    @abstractmethod
    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 samples (a numpy array); `language` None means detect it.

        Blocking: runs on the engine's worker thread. Raise EngineError for audio it cannot take.
        """


ENGINE_BASES: dict[str, type[Engine]] = {
    "asr": AsrEngine, "dialogue": DialogueEngine, "image_generator": ImageGenerator,
}
"""Roles the core can serve today, with their base class. Other roles land with their features."""
