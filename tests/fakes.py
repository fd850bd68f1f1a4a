"""Scriptable fake engines and a plugin that registers them, for tests of core logic."""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from assistant import (
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
    ToolCallFilter,
    ImageInput,
    Modality,
    Transcript,
    Usage,
    Voice,
    hookimpl,
)


def echo_script(request: DialogueRequest) -> list[str]:
    """Default script: 'You said: <last user text>' in word-sized deltas."""
    words = f"You said: {request.messages[-1].content}".split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedDialogue(DialogueEngine):
    """A dialogue engine whose reply, pace and failures a test controls; it records every request."""

    def __init__(
        self,
        script: Callable[[DialogueRequest], list[str]] = echo_script,
        delay_s: float = 0.0,
        fail_times: int = 0,
        gate: threading.Event | None = None,
        engine_id: str = "fake:scripted",
        accepts_images: bool = False,
        record: bool = True,
    ) -> None:
        self.id = engine_id
        self.capabilities = Capabilities(accepts_images=accepts_images)
        self.script = script
        self.delay_s = delay_s
        self.fail_times = fail_times
        self.gate = gate
        self.requests: list[DialogueRequest] = []
        self.record = record  # off for load tests: the list would hold every context ever sent
        self.closed = False

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Emit the scripted deltas, honouring cancel between them."""
        if self.record:
            self.requests.append(request)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("scripted engine failure")
        emitted = []
        for delta in self.script(request):
            if cancelled.is_set():
                return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), "cancelled")
            emit(delta)
            emitted.append(delta)
            if self.delay_s:
                time.sleep(self.delay_s)
        return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), "stop")

    def close(self) -> None:
        """Record that the app closed the engine."""
        self.closed = True


class ToolCallingDialogue(ScriptedDialogue):
    """A dialogue engine that calls tools the way a tool-tuned model does, deterministically.

    Offered tools, a user message naming one of them makes it call that tool, its arguments taken
    from the first `{...}` JSON object in the message (else none): the call is streamed as Hermes
    `<tool_call>` markup through the same `ToolCallFilter` real engines use. After tool results it
    answers `The <name> tool said: <result>`; otherwise it echoes like `ScriptedDialogue`.
    """

    def __init__(self, engine_id: str = "fake:tool-caller", **kwargs) -> None:
        super().__init__(engine_id=engine_id, **kwargs)
        self.capabilities = Capabilities(accepts_tools=True, accepts_images=kwargs.get("accepts_images", False))

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Call a named tool, report tool results, or echo."""
        if self.record:
            self.requests.append(request)
        last = request.messages[-1]
        usage = Usage(len(request.messages), 1)
        if last.role == "tool":
            results = []
            for message in reversed(request.messages):
                if message.role != "tool":
                    break
                results.insert(0, f"The {message.name} tool said: {message.content}")
            text = " ".join(results)
            emit(text)
            return DialogueResult(text, usage, "stop")
        named = [tool for tool in request.tools if tool.name in last.content] if request.tool_choice != "none" else []
        if not named:
            return super().generate(request, emit, cancelled)
        start, end = last.content.find("{"), last.content.rfind("}")
        arguments = last.content[start : end + 1] if 0 <= start < end else "{}"
        markup = f'<tool_call>\n{{"name": "{named[0].name}", "arguments": {arguments}}}\n</tool_call>'
        calls = ToolCallFilter(emit, [tool.name for tool in request.tools])
        for index in range(0, len(markup), 7):
            calls.push(markup[index : index + 7])
        content, found = calls.finish(markup)
        if not found:
            return DialogueResult(content, usage, "stop")
        return DialogueResult(content, usage, "tool_calls", tuple(found))


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

    def encode_images(self, images):
        """Unit mean-RGB vectors."""
        self.image_calls.append(len(images))
        if self.garbage:
            return [[float("nan")] * 3]
        vectors = np.array([np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) + 1.0 for image in images])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def encode_texts(self, texts):
        """A colour word's axis, else the grey diagonal."""
        vectors = np.array([next((COLOUR_WORDS[w] for w in t.lower().split() if w in COLOUR_WORDS), (1.0, 1.0, 1.0)) for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class ColourNamer(Modality):
    """A modality naming an image's mean colour from its features; it records the images it saw."""

    def __init__(self, fail: bool = False, garbage: bool = False) -> None:
        self.seen: list[ImageInput] = []
        self.fail = fail
        self.garbage = garbage

    def describe(self, image: ImageInput):
        """`mostly red` (from the encoder's features when present, else the pixels)."""
        self.seen.append(image)
        if self.fail:
            raise RuntimeError("colour namer broke")
        if self.garbage:
            return {"not": "text"}
        rgb = image.features if image.features is not None else np.asarray(image.image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        return f"mostly {('red', 'green', 'blue')[int(np.argmax(rgb))]}, {image.image.width}x{image.image.height}"


class FakeEnginesPlugin:
    """Registers a given dialogue engine instance under the name `fake`, and optionally an encoder and modalities."""

    __name__ = "fake_engines"

    def __init__(
        self, engine: DialogueEngine | None, name: str = "fake", encoder: ImageEncoder | None = None,
        modalities: dict[str, Modality] | None = None, asr: AsrEngine | None = None, painter: ImageGenerator | None = None,
        voice: SpeechSynthesizer | None = None, tools: list | None = None,
    ) -> None:
        self.engine = engine
        self.tools = tools or []  # functions and toolboxes, each registered with register_tools (or (obj, options) pairs)
        self.name = name
        self.encoder = encoder
        self.modalities = modalities or {}
        self.others = {"asr": asr, "image_generator": painter, "speech_synthesizer": voice}

    @hookimpl
    def register_engines(self, register):
        """Register the fake dialogue engine (and image encoder, ASR engine and image generator when given)."""
        if self.engine is not None:
            register("dialogue", self.name, lambda app: self.engine)
        if self.encoder is not None:
            register("image_encoder", self.name, lambda app: self.encoder)
        for role, engine in self.others.items():
            if engine is not None:
                register(role, self.name, lambda app, engine=engine: engine)

    @hookimpl
    def register_modalities(self, register):
        """Register the given modalities."""
        for name, modality in self.modalities.items():
            register(name, modality)

    @hookimpl
    def register_tools(self, register):
        """Register the given tools; an `(obj, {options})` pair passes its options."""
        for tool in self.tools:
            obj, options = tool if isinstance(tool, tuple) else (tool, {})
            register(obj, **options)


class FixedAsr(AsrEngine):
    """An ASR engine that hears `text` in any clip; it records the clips' lengths."""

    def __init__(self, text: str = "what is the weather like", engine_id: str = "fake:asr") -> None:
        self.id = engine_id
        self.text = text
        self.heard: list[int] = []

    def transcribe(self, samples, language=None) -> Transcript:
        """`text`, in English, as long as the clip."""
        self.heard.append(len(samples))
        return Transcript(self.text, "en", len(samples) / 16000)


class StepPainter(ImageGenerator):
    """An image generator that paints a one-colour PNG in `steps` steps; `gate` holds it after step one."""

    def __init__(self, steps: int = 3, gate: threading.Event | None = None, engine_id: str = "fake:painter") -> None:
        self.id = engine_id
        self.default_steps = steps
        self.gate = gate

    def prepare(self, prompt, negative_prompt=None, width=None, height=None, steps=None, guidance=None, seed=None) -> ImageRequest:
        """Defaults filled in; an empty prompt or more than 50 steps is a bad request."""
        if not prompt.strip() or (steps is not None and not 1 <= steps <= 50):
            raise EngineError("a prompt and 1..50 steps are needed", "bad_request")
        return ImageRequest(prompt, negative_prompt, width or 16, height or 16, steps or self.default_steps, guidance or 0.0, seed or 7)

    def generate(self, request, on_step, cancelled) -> GeneratedImage:
        """One step at a time, a preview after each; stops at the next step once cancelled."""
        from PIL import Image

        from tests.images import encode

        for step in range(1, request.steps + 1):
            if cancelled.is_set():
                raise GenerationCancelled()
            on_step(step, request.steps, encode(Image.new("RGB", (4, 4), "red")))
            if step == 1 and self.gate is not None:
                self.gate.wait(timeout=30)
        png = encode(Image.new("RGB", (request.width, request.height), "red"))
        return GeneratedImage(png, request.width, request.height, request.seed)


class SettingsApp:
    """Just what a modality's `load` uses of the app: one plugin's validated settings (and no engines)."""

    def __init__(self, plugin_name: str, settings: object) -> None:
        self.plugin_name = plugin_name
        self.settings = settings
        self.engines: dict[str, object] = {}

    def plugin_settings(self, name: str) -> object:
        """The settings, for this plugin only."""
        assert name == self.plugin_name
        return self.settings


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

    def synthesize(self, text, voice, on_audio, cancelled) -> None:
        """100 ms of 220 Hz (low) or 440 Hz (high) per word, a chunk at a time."""
        if voice not in (None, "low", "high"):
            raise EngineError(f"unknown voice {voice!r}", "bad_request")
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


def record_requests(engine: DialogueEngine) -> list[DialogueRequest]:
    """Wrap a real dialogue engine's `generate` so that every request it gets is kept in the returned list."""
    requests: list[DialogueRequest] = []
    generate = engine.generate

    def recording(request, emit, cancelled):
        requests.append(request)
        return generate(request, emit, cancelled)

    engine.generate = recording  # type: ignore[method-assign]
    return requests
