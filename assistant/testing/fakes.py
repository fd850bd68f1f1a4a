"""Scriptable fake engines for every role, a fake modality, and a plugin that registers them.

They keep the contract the core relies on (each passes its role's conformance suite) and let a test
control replies, pace and failures, so a plugin that works beside engines (a modality, a turn router,
a lifecycle hook) can be tested with no model at all:

    plugin = FakeEnginesPlugin(ScriptedDialogue(), asr=FixedAsr("hello"))
    server = await start_server(config, [plugin, my_plugin])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from assistant.engines import (
    AsrEngine,
    Capabilities,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    EngineError,
    GeneratedImage,
    GenerationCancelled,
    ImageEncoder,
    ImageGenerator,
    ImageRequest,
    SpeechSynthesizer,
    Transcript,
    Usage,
    Voice,
)
from assistant.hookspecs import hookimpl
from assistant.modalities import ImageInput, Modality
from assistant.testing.media import solid_image


def echo_script(request: DialogueRequest) -> list[str]:
    """Default script: 'You said: <last user text>' in word-sized deltas."""
    words = f"You said: {request.messages[-1].content}".split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedDialogue(DialogueEngine):
    """A dialogue engine whose reply, pace and failures a test controls; it records every request.

    `script(request)` gives the deltas; `delay_s` waits after each; `fail_times` makes the next calls
    raise RuntimeError; `gate` holds every call until set; `finish_reason` is what a reply that ran
    to the end reports ("length" makes a reply look cut at the token limit).
    """

    def __init__(
        self,
        script: Callable[[DialogueRequest], list[str]] = echo_script,
        delay_s: float = 0.0,
        fail_times: int = 0,
        gate: threading.Event | None = None,
        engine_id: str = "fake:scripted",
        accepts_images: bool = False,
        record: bool = True,
        finish_reason: str = "stop",
    ) -> None:
        self.id = engine_id
        self.capabilities = Capabilities(accepts_images=accepts_images)
        self.script = script
        self.delay_s = delay_s
        self.fail_times = fail_times
        self.gate = gate
        self.finish_reason = finish_reason
        self.requests: list[DialogueRequest] = []
        self.record = record  # off for load tests: the list would hold every context ever sent
        self.closed = False

    def generate(self, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        """Emit the scripted deltas, honouring cancel between them."""
        if self.record:
            self.requests.append(request)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("scripted engine failure")
        emitted: list[str] = []
        for delta in self.script(request):
            if cancelled.is_set():
                return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), "cancelled")
            emit(delta)
            emitted.append(delta)
            if self.delay_s:
                time.sleep(self.delay_s)
        return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), self.finish_reason)  # type: ignore[arg-type]

    def close(self) -> None:
        """Record that the app closed the engine."""
        self.closed = True


COLOUR_WORDS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourEncoder(ImageEncoder):
    """An image encoder whose vector is an image's mean colour; texts naming a colour land next to it.

    It counts its calls and the images it encoded, and can be told to return garbage.
    """

    dim = 3

    def __init__(self, engine_id: str = "fake:colour") -> None:
        self.id = engine_id
        self.image_calls: list[int] = []  # images per encode_images call
        self.garbage = False

    def encode_images(self, images: list[Any]) -> Any:
        """Unit mean-RGB vectors."""
        self.image_calls.append(len(images))
        if self.garbage:
            return [[float("nan")] * 3]
        vectors = np.array([np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) + 1.0 for image in images]).reshape(-1, 3)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts: list[str]) -> Any:
        """A colour word's axis, else the grey diagonal."""
        vectors = np.array([next((COLOUR_WORDS[w] for w in t.lower().split() if w in COLOUR_WORDS), (1.0, 1.0, 1.0)) for t in texts]).reshape(-1, 3)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class ColourNamer(Modality):
    """A modality naming an image's mean colour from its features; it records the images it saw."""

    def __init__(self, fail: bool = False, garbage: bool = False) -> None:
        self.seen: list[ImageInput] = []
        self.fail = fail
        self.garbage = garbage

    def describe(self, image: ImageInput) -> str | None:
        """`mostly red` (from the encoder's features when present, else the pixels)."""
        self.seen.append(image)
        if self.fail:
            raise RuntimeError("colour namer broke")
        if self.garbage:
            return {"not": "text"}  # type: ignore[return-value]
        rgb = image.features if image.features is not None else np.asarray(image.image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        return f"mostly {('red', 'green', 'blue')[int(np.argmax(rgb))]}, {image.image.width}x{image.image.height}"


class FixedAsr(AsrEngine):
    """An ASR engine that hears `text` in any clip; it records the clips' lengths."""

    def __init__(self, text: str = "what is the weather like", engine_id: str = "fake:asr") -> None:
        self.id = engine_id
        self.text = text
        self.heard: list[int] = []

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """`text`, in English, as long as the clip."""
        self.heard.append(len(samples))
        return Transcript(self.text, "en", len(samples) / 16000)


class StepPainter(ImageGenerator):
    """An image generator that paints a one-colour PNG in `steps` steps; `gate` holds it after step one."""

    def __init__(self, steps: int = 3, gate: threading.Event | None = None, engine_id: str = "fake:painter") -> None:
        self.id = engine_id
        self.default_steps = steps
        self.gate = gate

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
        """Defaults filled in; an empty prompt, more than 50 steps or a size outside 1..2048 is a bad request."""
        problems = []
        if not prompt.strip():
            problems.append("an empty prompt")
        if steps is not None and not 1 <= steps <= 50:
            problems.append(f"steps={steps} (1..50)")
        for key, value in (("width", width), ("height", height)):
            if value is not None and not 1 <= value <= 2048:
                problems.append(f"{key}={value} (1..2048)")
        if problems:
            raise EngineError("cannot paint " + ", ".join(problems), "bad_request")
        return ImageRequest(prompt, negative_prompt, width or 16, height or 16, steps or self.default_steps, guidance or 0.0, 7 if seed is None else seed)

    def generate(self, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event) -> GeneratedImage:
        """One step at a time, a preview after each; stops at the next step once cancelled."""
        for step in range(1, request.steps + 1):
            if cancelled.is_set():
                raise GenerationCancelled()
            on_step(step, request.steps, solid_image("red", (4, 4)))
            if step == 1 and self.gate is not None:
                self.gate.wait(timeout=30)
        png = solid_image("red", (request.width, request.height))
        return GeneratedImage(png, request.width, request.height, request.seed)


class ToneVoice(SpeechSynthesizer):
    """A speech synthesizer that 'says' each word as 100 ms of tone, in 100 ms chunks; it records what it spoke.

    `fail` raises on every sentence; `hang` blocks until cancelled (or 30 s); `pace_s` waits after each word.
    """

    def __init__(self, fail: bool = False, hang: bool = False, pace_s: float = 0.002, engine_id: str = "fake:tone") -> None:
        self.id = engine_id
        self.fail = fail
        self.hang = hang
        self.pace_s = pace_s  # wait after each word's chunk (a real synthesizer takes time too)
        self.spoken: list[str] = []

    def voices(self) -> list[Voice]:
        """Two voices; `low` is the default."""
        return [Voice("low", "en-US", 16000), Voice("high", "en-GB", 16000)]

    def synthesize(self, text: str, voice: str | None, on_audio: Callable[[bytes], None], cancelled: threading.Event) -> None:
        """100 ms of 220 Hz (low) or 440 Hz (high) per word, a chunk at a time."""
        if voice not in (None, "low", "high"):
            raise EngineError(f"unknown voice {voice!r}; voices: low, high", "bad_request")
        if self.fail:
            raise RuntimeError("tone generator broke")
        if self.hang:
            cancelled.wait(timeout=30)
            return
        self.spoken.append(text)
        tone = (8000 * np.sin(np.arange(1600) * 2 * np.pi * (440 if voice == "high" else 220) / 16000)).astype("<i2").tobytes()
        for _ in text.split():
            if cancelled.is_set():
                return
            on_audio(tone)
            time.sleep(self.pace_s)


class FakeEnginesPlugin:
    """A plugin registering the given engine instances under one name (default `fake`), and modalities.

    Select them with `[engines] <role> = "fake"`. The dialogue engine is the first argument; the
    others are keywords: `encoder`, `asr`, `painter` (image generator), `voice` (speech synthesizer).
    `tools` are functions and toolboxes registered with `register_tools` (an `(obj, {options})` pair
    passes its options).
    """

    __name__ = "fake_engines"

    def __init__(
        self,
        engine: DialogueEngine | None,
        name: str = "fake",
        encoder: ImageEncoder | None = None,
        modalities: dict[str, Modality] | None = None,
        asr: AsrEngine | None = None,
        painter: ImageGenerator | None = None,
        voice: SpeechSynthesizer | None = None,
        tools: list[Any] | None = None,
    ) -> None:
        self.engine = engine
        self.tools = tools or []
        self.name = name
        self.encoder = encoder
        self.modalities = modalities or {}
        self.others: dict[str, Any] = {"asr": asr, "image_generator": painter, "speech_synthesizer": voice}

    @hookimpl
    def register_engines(self, register: Callable[..., None]) -> None:
        """Register the fake dialogue engine (and image encoder, ASR engine, image generator and voice when given)."""
        if self.engine is not None:
            register("dialogue", self.name, lambda app: self.engine)
        if self.encoder is not None:
            register("image_encoder", self.name, lambda app: self.encoder)
        for role, engine in self.others.items():
            if engine is not None:
                register(role, self.name, lambda app, engine=engine: engine)

    @hookimpl
    def register_modalities(self, register: Callable[..., None]) -> None:
        """Register the given modalities."""
        for name, modality in self.modalities.items():
            register(name, modality)

    @hookimpl
    def register_tools(self, register: Callable[..., None]) -> None:
        """Register the given tools; an `(obj, {options})` pair passes its options."""
        for tool in self.tools:
            obj, options = tool if isinstance(tool, tuple) else (tool, {})
            register(obj, **options)
