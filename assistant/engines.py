"""Engine roles and the small base class each role's engines implement.

An engine is loaded once per process and shared by all sessions. Its methods are blocking and run
on a worker thread (see `assistant.scheduler`); they never run on the event loop. An engine whose
work runs elsewhere may add awaitable `_async` twins, awaited on the loop (see `assistant.async_calls`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, as far as the core needs to know (clients see only the engine's `id`)."""

    accepts_images: bool = False  # a dialogue engine that sees images itself (early fusion, a VLM)
    max_batch: int = 1  # calls the engine serves at once; the core gives it this many worker threads
    accepts_parts: frozenset[str] = frozenset()  # a dialogue engine that takes these plugin part types itself (ChatMessage.parts)
    accepts_tools: bool = False  # a dialogue engine that takes `DialogueRequest.tools` and returns tool calls


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
class MessagePart:
    """A plugin part type's decoded part, for a dialogue engine that takes it natively (`Capabilities.accepts_parts`)."""

    type: str  # the part type's name, e.g. "document"
    mime: str | None
    value: Any  # what the part type's `decode` returned as `DecodedPart.value`


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its arguments as a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_function(self) -> dict[str, Any]:
        """The OpenAI-style `{"type": "function", "function": {...}}` form chat templates take."""
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: an id unique within its reply, the tool's name and its arguments (a JSON object)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the dialogue context.

    `images` (decoded RGB `PIL.Image.Image`s, in the order the user sent them) are filled only for
    engines whose capabilities say `accepts_images`; for the others the core has already turned each
    image into text in `content` (late fusion, see `assistant.modalities`). `parts` holds the new user
    message's plugin parts of the types the engine lists in `Capabilities.accepts_parts`.

    An `assistant` message may carry the `tool_calls` the model made (its `content` then holds any text
    said with them); a `tool` message carries one call's result in `content`, with that call's
    `tool_call_id` and the tool's `name`. Engines that do not accept tools never see either.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    images: tuple[Any, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    parts: tuple[MessagePart, ...] = ()


@dataclass(frozen=True)
class GenerationOptions:
    """Per-turn overrides; None means the engine's configured default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None  # sampling seed: the same request and seed give the same reply on the same engine


ToolChoice = Literal["auto", "none", "required"]
"""Whether the model may call a tool (`auto`), must not (`none`), or must call one (`required`)."""


@dataclass(frozen=True)
class DialogueRequest:
    """The fused context for one reply: system prompt first, the new user message (or tool results) last.

    `tools` are given only to engines whose capabilities say `accepts_tools`.
    """

    messages: list[ChatMessage]
    options: GenerationOptions = field(default_factory=GenerationOptions)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply."""

    prompt_tokens: int
    completion_tokens: int


FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]
"""Why a reply ended: the model stopped, hit the token limit, was cancelled, or called tools."""


@dataclass(frozen=True)
class DialogueResult:
    """How a reply ended. `text` is what the model said to the user (never the tool-call markup);
    `tool_calls` are the calls it made, with `finish_reason` `tool_calls`."""

    text: str
    usage: Usage
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()


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
class TranscriptSegment:
    """A stretch of a transcript, with its start and end in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was said: text, the language spoken (or None if unknown) and the audio's length; `segments` time its
    stretches when the engine knows them (empty otherwise)."""

    text: str
    language: str | None
    duration_s: float
    segments: tuple[TranscriptSegment, ...] = ()


class AsrEngine(Engine):
    """Speech to text."""

    role = "asr"

    @abstractmethod
    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 samples (a numpy array); `language` None means detect it.

        Blocking: runs on the engine's worker thread. Raise EngineError for audio it cannot take.
        """


@dataclass(frozen=True)
class Voice:
    """A voice a speech synthesizer offers."""

    name: str  # what a client asks for
    language: str  # BCP 47, e.g. "en-US"
    sample_rate: int  # of the PCM16 it produces


class SpeechSynthesizer(Engine):
    """Text to speech, streamed."""

    role = "speech_synthesizer"

    @abstractmethod
    def voices(self) -> list[Voice]:
        """The voices offered, the default first."""

    @abstractmethod
    def synthesize(self, text: str, voice: str | None, on_audio: Callable[[bytes], None], cancelled: threading.Event) -> None:
        """Speak `text` (a sentence or clause) in `voice` (None: the default), calling `on_audio(chunk)` with
        PCM16 mono little-endian audio at the voice's sample rate as it is made. Blocking: runs on the
        engine's worker thread. Stop at the next chunk once `cancelled` is set. An unknown voice raises
        EngineError(code "bad_request") naming the available ones. Text it cannot say (emoji, symbols)
        is skipped, never an exception."""


class ImageEncoder(Engine):
    """Images and texts into one embedding space (CLIP, SigLIP): unit vectors of `dim` floats."""

    role = "image_encoder"
    dim: int

    @abstractmethod
    def encode_images(self, images: list[Any]) -> Any:
        """Encode RGB `PIL.Image.Image`s in one call: a float32 numpy array (len(images), dim), rows of unit norm.

        Blocking: runs on the engine's worker thread. Row i must equal what encoding image i alone gives.
        """

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> Any:
        """Encode texts into the same space: a float32 numpy array (len(texts), dim), rows of unit norm."""

    def label_scores(self, image_features: Any, text_features: Any) -> Any:
        """Per image row, a score in [0, 1] per text row: how well each label fits (zero-shot labels).

        Default: softmax over 100 x cosine similarity, as CLIP does; engines override with their own
        learned scale (and SigLIP's sigmoid).
        """
        import numpy as np

        logits = 100.0 * np.asarray(image_features) @ np.asarray(text_features).T
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)


ENGINE_BASES: dict[str, type[Engine]] = {base.role: base for base in (AsrEngine, ImageEncoder, DialogueEngine, ImageGenerator, SpeechSynthesizer)}
"""Every engine role with its base class: the one list of roles. config.py's `[engines]` fields and its
latency-class defaults, config.toml, README.md, docs/plugins.md and docs/protocol.md name the same
roles, in this order; tests/assistant/test_config.py checks that they agree."""

ROLES: tuple[str, ...] = tuple(ENGINE_BASES)
"""The engine roles, in the order `assistant models` and `session.started` capabilities list them."""
