"""Conformance suites: what the core relies on from an engine of each role, and from a modality.

Subclass the suite of your engine's role in your plugin's tests, with a class name pytest collects
(`Test...`), and give it an `engine` fixture (a `modality` fixture for `ModalityConformance`) that
returns your engine, built and ready:

    from assistant.testing.conformance import DialogueEngineConformance

    class TestReverseEngine(DialogueEngineConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def engine(cls):
            return ReverseEngine(ReverseSettings())

Every check runs the engine the way the core does (blocking calls, a `cancelled` event, callbacks)
and fails with a message saying what the engine did and what to change. The checks cover: the types
returned, the order of streamed pieces, what to do when `cancelled` is set (stop at the next step),
what to do with input the engine cannot take (raise `assistant.EngineError` with a protocol error
code; any other exception reaches the client as an `internal` error), and role-specific rules
(unit-norm vectors, PCM16 chunks, deterministic images...). Class attributes tune the suite for
your engine (e.g. `max_deltas_after_cancel`); override `request()` and friends to change the input.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pytest

from assistant.engines import (
    AsrEngine,
    Capabilities,
    ChatMessage,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    Engine,
    EngineError,
    GeneratedImage,
    GenerationCancelled,
    GenerationOptions,
    ImageEncoder,
    ImageGenerator,
    ImageRequest,
    SpeechSynthesizer,
    Transcript,
    Usage,
    Voice,
)
from assistant.errors import ERROR_CODES
from assistant.modalities import ImageInput, Modality
from assistant.testing import media

__all__ = [
    "AsrEngineConformance",
    "DialogueEngineConformance",
    "ImageEncoderConformance",
    "ImageGeneratorConformance",
    "ModalityConformance",
    "SpeechSynthesizerConformance",
]

_ENGINE_ERROR_HINT = (
    "raise assistant.EngineError(message, code=...) with one of the protocol codes ({codes}) for input the "
    "engine cannot take; any other exception reaches the client as an `internal` error"
)


def _hint() -> str:
    return _ENGINE_ERROR_HINT.format(codes=", ".join(ERROR_CODES))


def _run(call: Callable[[], Any], what: str, timeout_s: float) -> Any:
    """`call()` on a worker thread, as the core runs engine calls; its exception is re-raised here.

    A call still running after `timeout_s` (a generous bound meant for hangs) fails the check.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"conformance: {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {timeout_s:.0f} s: does it wait on something, or ignore `cancelled`?", pytrace=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _refuses_cleanly(call: Callable[[], Any], what: str, timeout_s: float) -> tuple[Any, EngineError | None]:
    """Run a call given input the engine may refuse: (its value, None), or (None, the EngineError it raised).

    Any exception other than EngineError, or an EngineError with an unknown code, fails the check.
    """
    try:
        return _run(call, what, timeout_s), None
    except EngineError as exc:
        if exc.code not in ERROR_CODES:
            pytest.fail(f"{what} raised EngineError with code {exc.code!r}, which is no protocol error code; use one of: {', '.join(ERROR_CODES)}",
                        pytrace=False)
        return None, exc
    except Exception as exc:
        pytest.fail(f"{what} raised {type(exc).__name__}: {exc}. Instead, {_hint()}", pytrace=False)


def _check(condition: bool, message: str) -> None:
    """Fail the check with `message` (no traceback into the suite) unless `condition` holds."""
    if not condition:
        pytest.fail(message, pytrace=False)


class _EngineConformance:
    """Checks every engine must pass: its base class, `id` and `capabilities`."""

    base: ClassVar[type[Engine]]
    call_timeout_s: ClassVar[float] = 120.0  # a hang detector, not a speed requirement

    @pytest.fixture
    def engine(self) -> Engine:
        """Override in your subclass: return your engine, built and ready (scope="class" loads it once)."""
        pytest.fail(f"{type(self).__name__} needs an `engine` fixture that returns the engine to check", pytrace=False)

    def test_is_an_engine_of_its_role(self, engine: Engine) -> None:
        """The engine subclasses its role's base class and has a non-empty string `id` and `Capabilities`."""
        _check(isinstance(engine, self.base), f"the engine is a {type(engine).__name__}, not an assistant.{self.base.__name__}: subclass it")
        _check(isinstance(engine.id, str) and bool(engine.id), f"engine.id must be a non-empty str naming engine and model, got {engine.id!r}")
        caps = engine.capabilities
        _check(isinstance(caps, Capabilities), f"engine.capabilities must be an assistant.Capabilities, got {type(caps).__name__}")
        _check(isinstance(caps.max_batch, int) and caps.max_batch >= 1, f"capabilities.max_batch must be an int >= 1, got {caps.max_batch!r}")


class DialogueEngineConformance(_EngineConformance):
    """The contract of a dialogue engine (`assistant.DialogueEngine`)."""

    base = DialogueEngine
    max_deltas_after_cancel: ClassVar[int] = 1  # deltas an engine may still emit once `cancelled` is set

    def request(self) -> DialogueRequest:
        """A short ordinary request. Override to suit the engine."""
        return DialogueRequest([ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello.")], GenerationOptions(max_new_tokens=8))

    def long_request(self) -> DialogueRequest:
        """A request whose reply takes many deltas (for the cancel checks)."""
        return DialogueRequest(
            [ChatMessage("system", "Be thorough."), ChatMessage("user", "Count from 1 to 200, one number per line.")],
            GenerationOptions(max_new_tokens=64),
        )

    def oversized_request(self) -> DialogueRequest:
        """A context far beyond any model's window: 100,000 words."""
        return DialogueRequest([ChatMessage("user", "word " * 100_000)], GenerationOptions(max_new_tokens=4))

    def _generate(self, engine: DialogueEngine, request: DialogueRequest, cancelled: threading.Event,
                  on_delta: Callable[[str], None] | None = None) -> tuple[Any, list[Any]]:
        deltas: list[Any] = []

        def emit(delta: Any) -> None:
            deltas.append(delta)
            if on_delta is not None:
                on_delta(delta)

        result = _run(lambda: engine.generate(request, emit, cancelled), "generate()", self.call_timeout_s)
        return result, deltas

    def _check_result(self, result: Any, deltas: list[Any]) -> None:
        _check(isinstance(result, DialogueResult), f"generate() returned {type(result).__name__}, not an assistant.DialogueResult(text, usage, finish_reason)")
        _check(all(isinstance(d, str) for d in deltas),
               f"emit() got {sorted({type(d).__name__ for d in deltas if not isinstance(d, str)})}: call emit(delta) with str pieces only")
        _check(isinstance(result.text, str), f"DialogueResult.text must be a str, got {type(result.text).__name__}")
        _check("".join(deltas) == result.text,
               f"the emitted deltas joined ({''.join(map(str, deltas))[:80]!r}) differ from DialogueResult.text ({str(result.text)[:80]!r}): "
               "emit every piece of the reply, in order, and nothing else")
        usage = result.usage
        _check(isinstance(usage, Usage), f"DialogueResult.usage must be an assistant.Usage, got {type(usage).__name__}")
        _check(all(isinstance(n, int) and n >= 0 for n in (usage.prompt_tokens, usage.completion_tokens)),
               f"Usage token counts must be ints >= 0, got {usage!r}")

    def test_streams_deltas_that_join_to_the_result(self, engine: DialogueEngine) -> None:
        """A reply streams str deltas, in order, that join to DialogueResult.text; it ends with `stop` or `length`."""
        result, deltas = self._generate(engine, self.request(), threading.Event())
        self._check_result(result, deltas)
        _check(result.finish_reason in ("stop", "length"),
               f"an uncancelled reply must end with finish_reason 'stop' or 'length' (at the token limit), got {result.finish_reason!r}")

    def test_returns_cancelled_when_cancelled_before_it_starts(self, engine: DialogueEngine) -> None:
        """With `cancelled` already set, the engine returns at once with finish_reason `cancelled`."""
        cancelled = threading.Event()
        cancelled.set()
        result, deltas = self._generate(engine, self.long_request(), cancelled)
        self._check_result(result, deltas)
        _check(len(deltas) <= self.max_deltas_after_cancel and result.finish_reason == "cancelled",
               f"with `cancelled` set the engine emitted {len(deltas)} delta(s) and returned finish_reason {result.finish_reason!r}: "
               "check `cancelled.is_set()` before each token and return DialogueResult(text_so_far, usage, 'cancelled')")

    def test_stops_at_the_next_delta_once_cancelled(self, engine: DialogueEngine) -> None:
        """`cancelled` set after the first delta: at most `max_deltas_after_cancel` more, and finish_reason `cancelled`."""
        cancelled = threading.Event()
        result, deltas = self._generate(engine, self.long_request(), cancelled, lambda delta: cancelled.set())
        self._check_result(result, deltas)
        after = max(len(deltas) - 1, 0)
        _check(after <= self.max_deltas_after_cancel,
               f"the engine emitted {after} delta(s) after `cancelled` was set: check `cancelled.is_set()` between tokens and stop")
        if after:  # a reply that ended with the delta that set `cancelled` may say how it ended
            _check(result.finish_reason == "cancelled",
                   f"a reply stopped by `cancelled` must return finish_reason 'cancelled', got {result.finish_reason!r}")

    def test_an_oversized_context_is_refused_with_an_engine_error(self, engine: DialogueEngine) -> None:
        """A context past the model's window is answered (trimmed) or refused with EngineError (code `too_large`)."""
        result, _ = _refuses_cleanly(lambda: engine.generate(self.oversized_request(), lambda d: None, threading.Event()),
                                     "generate() with a 100,000-word context", self.call_timeout_s)
        if result is not None:
            _check(isinstance(result, DialogueResult), f"generate() returned {type(result).__name__}, not an assistant.DialogueResult")

    def test_impossible_options_are_refused_with_an_engine_error(self, engine: DialogueEngine) -> None:
        """Options no model can use (a negative temperature) are ignored, clamped, or refused with EngineError (code `bad_request`)."""
        request = DialogueRequest(self.request().messages, GenerationOptions(max_new_tokens=4, temperature=-1.0, top_p=7.0))
        result, _ = _refuses_cleanly(lambda: engine.generate(request, lambda d: None, threading.Event()),
                                     "generate() with temperature=-1.0, top_p=7.0", self.call_timeout_s)
        if result is not None:
            _check(isinstance(result, DialogueResult), f"generate() returned {type(result).__name__}, not an assistant.DialogueResult")


class AsrEngineConformance(_EngineConformance):
    """The contract of a speech-to-text engine (`assistant.AsrEngine`)."""

    base = AsrEngine

    def clip(self) -> Any:
        """What to transcribe: 16 kHz mono float32 samples (default: a second of a 220 Hz tone)."""
        return media.tone(1.0)

    def _transcribe(self, engine: AsrEngine, samples: Any, language: str | None = None) -> Any:
        return _run(lambda: engine.transcribe(samples, language), "transcribe()", self.call_timeout_s)

    def _check_transcript(self, result: Any, samples: Any) -> None:
        _check(isinstance(result, Transcript), f"transcribe() returned {type(result).__name__}, not an assistant.Transcript(text, language, duration_s)")
        _check(isinstance(result.text, str), f"Transcript.text must be a str, got {type(result.text).__name__}")
        _check(result.language is None or (isinstance(result.language, str) and bool(result.language)),
               f"Transcript.language must be a language code or None, got {result.language!r}")
        seconds = len(samples) / 16000
        _check(isinstance(result.duration_s, (int, float)) and abs(result.duration_s - seconds) <= 0.05 * seconds + 0.05,
               f"Transcript.duration_s must be the clip's length ({seconds:.2f} s at 16 kHz), got {result.duration_s!r}")

    def test_transcribes_a_clip(self, engine: AsrEngine) -> None:
        """A clip gives a Transcript: text, a language code or None, and the clip's length in seconds."""
        samples = self.clip()
        self._check_transcript(self._transcribe(engine, samples), samples)

    def test_takes_a_language_hint(self, engine: AsrEngine) -> None:
        """`language="en"` is accepted (a monolingual engine may ignore it)."""
        samples = self.clip()
        result, _ = _refuses_cleanly(lambda: engine.transcribe(samples, "en"), 'transcribe(samples, "en")', self.call_timeout_s)
        if result is not None:
            self._check_transcript(result, samples)

    def test_silence_and_a_very_short_clip_are_not_errors(self, engine: AsrEngine) -> None:
        """A second of silence and a 20 ms clip give a Transcript (text may be empty) or an EngineError."""
        for samples, what in ((np.zeros(16000, dtype=np.float32), "a second of silence"), (media.tone(0.02), "a 20 ms clip")):
            result, _ = _refuses_cleanly(partial(engine.transcribe, samples, None), f"transcribe() of {what}", self.call_timeout_s)
            if result is not None:
                self._check_transcript(result, samples)


class ImageEncoderConformance(_EngineConformance):
    """The contract of an image encoder (`assistant.ImageEncoder`): unit vectors of `dim` floats."""

    base = ImageEncoder
    tolerance: ClassVar[float] = 1e-3  # for unit norm, and for a batch row against the image alone

    def images(self) -> list[Any]:
        """Images to encode: different colours and sizes (RGB PIL images)."""
        from PIL import Image

        return [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (33, 90), (20, 160, 40)), Image.new("RGB", (128, 128), "navy")]

    def _vectors(self, value: Any, count: int, dim: int, what: str) -> Any:
        _check(isinstance(value, np.ndarray), f"{what} returned {type(value).__name__}: return a float32 numpy array of shape (n, dim)")
        _check(value.shape == (count, dim), f"{what} returned shape {value.shape}, expected ({count}, {dim}): one row of `dim` floats per input")
        _check(value.dtype == np.float32, f"{what} returned dtype {value.dtype}: return float32")
        _check(bool(np.isfinite(value).all()), f"{what} returned NaN or infinite numbers")
        norms = np.linalg.norm(value, axis=1)
        _check(bool(np.all(np.abs(norms - 1.0) <= self.tolerance)),
               f"{what} returned rows of norm {np.round(norms, 4).tolist()}: divide each row by its norm (unit vectors)")
        return value

    def test_has_a_dimension(self, engine: ImageEncoder) -> None:
        """`dim` is a positive int."""
        _check(isinstance(getattr(engine, "dim", None), int) and engine.dim > 0, f"engine.dim must be a positive int, got {getattr(engine, 'dim', None)!r}")

    def test_images_become_unit_vectors_and_a_batch_matches_one_by_one(self, engine: ImageEncoder) -> None:
        """encode_images gives (n, dim) float32 unit rows, and row i equals encoding image i alone."""
        images = self.images()
        batch = self._vectors(_run(lambda: engine.encode_images(images), "encode_images()", self.call_timeout_s), len(images), engine.dim, "encode_images()")
        for i, image in enumerate(images):
            alone = self._vectors(_run(partial(engine.encode_images, [image]), "encode_images()", self.call_timeout_s), 1, engine.dim,
                                  "encode_images([one image])")
            _check(bool(np.allclose(batch[i], alone[0], atol=self.tolerance)),
                   f"row {i} of a batch differs from encoding image {i} alone (max difference {float(np.abs(batch[i] - alone[0]).max()):.2g}): "
                   "a batch must give each image's own vector (check padding and resizing)")

    def test_texts_become_unit_vectors(self, engine: ImageEncoder) -> None:
        """encode_texts gives (n, dim) float32 unit rows, also for an empty text and one far past the model's length."""
        texts = ["a red square", "a photo of a dog", "", "word " * 2000]
        result, _ = _refuses_cleanly(lambda: engine.encode_texts(texts), "encode_texts() with an empty and a 2,000-word text", self.call_timeout_s)
        if result is not None:
            self._vectors(result, len(texts), engine.dim, "encode_texts()")

    def test_label_scores_are_between_zero_and_one(self, engine: ImageEncoder) -> None:
        """label_scores gives (images, labels) scores in [0, 1]."""
        images = engine.encode_images(self.images())
        texts = engine.encode_texts(["red", "green", "blue"])
        scores = np.asarray(engine.label_scores(images, texts))
        _check(scores.shape == (len(images), 3), f"label_scores() returned shape {scores.shape}, expected ({len(images)}, 3)")
        _check(bool(np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()), "label_scores() must return scores in [0, 1]")

    def test_odd_images_are_encoded_or_refused_with_an_engine_error(self, engine: ImageEncoder) -> None:
        """A 1x1 image and a 2000x8 strip give unit rows or an EngineError."""
        from PIL import Image

        for image in (Image.new("RGB", (1, 1), "white"), Image.new("RGB", (2000, 8), "black")):
            result, _ = _refuses_cleanly(partial(engine.encode_images, [image]), f"encode_images() of a {image.width}x{image.height} image",
                                         self.call_timeout_s)
            if result is not None:
                self._vectors(result, 1, engine.dim, f"encode_images() of a {image.width}x{image.height} image")


class ImageGeneratorConformance(_EngineConformance):
    """The contract of an image generator (`assistant.ImageGenerator`)."""

    base = ImageGenerator
    steps: ClassVar[int] = 3  # steps of the requests the suite paints (keep it small)
    max_steps_after_cancel: ClassVar[int] = 1
    prompt: ClassVar[str] = "a red bicycle near the sea"

    def _prepare(self, engine: ImageGenerator, **values: Any) -> ImageRequest:
        request = engine.prepare(self.prompt, **values)
        _check(isinstance(request, ImageRequest), f"prepare() returned {type(request).__name__}, not an assistant.ImageRequest")
        return request

    def _paint(self, engine: ImageGenerator, request: ImageRequest, cancelled: threading.Event,
               on_step: Callable[[int, int, bytes | None], None] | None = None) -> tuple[Any, list[tuple[Any, Any, Any]]]:
        steps: list[tuple[Any, Any, Any]] = []

        def record(step: Any, total: Any, preview: Any) -> None:
            steps.append((step, total, preview))
            if on_step is not None:
                on_step(step, total, preview)

        return _run(lambda: engine.generate(request, record, cancelled), "generate()", self.call_timeout_s), steps

    def test_prepare_fills_in_every_field(self, engine: ImageGenerator) -> None:
        """prepare(prompt) fills width, height, steps (positive ints), guidance and an int seed."""
        request = self._prepare(engine)
        _check(request.prompt == self.prompt, "prepare() must keep the prompt as given")
        for key in ("width", "height", "steps"):
            value = getattr(request, key)
            _check(isinstance(value, int) and value > 0, f"prepare() must fill {key} with a positive int, got {value!r}")
        _check(isinstance(request.seed, int), f"prepare() must fill seed with an int (a random one when none is given), got {request.seed!r}")
        _check(isinstance(request.guidance, (int, float)), f"prepare() must fill guidance with a number, got {request.guidance!r}")
        kept = self._prepare(engine, steps=self.steps, seed=1234)
        _check(kept.steps == self.steps and kept.seed == 1234,
               f"prepare(steps={self.steps}, seed=1234) must keep both, got steps={kept.steps}, seed={kept.seed}")

    def test_prepare_refuses_impossible_values_with_bad_request(self, engine: ImageGenerator) -> None:
        """steps=0, a million steps, a negative width and a zero height each raise EngineError(code="bad_request")."""
        cases: list[dict[str, Any]] = [{"steps": 0}, {"steps": 1_000_000}, {"width": -64}, {"height": 0}]
        for values in cases:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            try:
                engine.prepare(self.prompt, **values)
            except EngineError as exc:
                _check(exc.code == "bad_request", f"prepare({shown}) raised EngineError with code {exc.code!r}: use code='bad_request'")
            except Exception as exc:
                pytest.fail(f"prepare({shown}) raised {type(exc).__name__}: {exc}. Instead, raise assistant.EngineError(message, code='bad_request') "
                            "naming the value and the engine's limits", pytrace=False)
            else:
                pytest.fail(f"prepare({shown}) accepted it: validate every value against the engine's limits and raise "
                            "assistant.EngineError(message, code='bad_request')", pytrace=False)

    def test_paints_a_png_reporting_every_step(self, engine: ImageGenerator) -> None:
        """generate() calls on_step(1..total, total, PNG or None) in order and returns a PNG of the requested size and seed."""
        from PIL import Image

        request = self._prepare(engine, steps=self.steps, seed=1234)
        result, steps = self._paint(engine, request, threading.Event())
        _check(isinstance(result, GeneratedImage), f"generate() returned {type(result).__name__}, not an assistant.GeneratedImage")
        _check(bool(steps), "generate() never called on_step: call on_step(step, total, preview_png_or_None) after each step")
        _check([s for s, _, _ in steps] == list(range(1, len(steps) + 1)), f"on_step steps must count 1, 2, 3...: got {[s for s, _, _ in steps]}")
        _check(all(total == steps[-1][1] for _, total, _ in steps) and steps[-1][0] == steps[-1][1],
               f"on_step's total must stay the same and the last step must equal it: got {[(s, t) for s, t, _ in steps]}")
        for _, _, preview in steps:
            _check(preview is None or (isinstance(preview, bytes) and preview.startswith(b"\x89PNG")),
                   "on_step's preview must be PNG bytes or None")
        _check(isinstance(result.png, bytes) and result.png.startswith(b"\x89PNG"), "GeneratedImage.png must be PNG bytes")
        with Image.open(io.BytesIO(result.png)) as image:
            size = image.size
        _check(size == (request.width, request.height) == (result.width, result.height),
               f"the PNG is {size}, the request {request.width}x{request.height}, the result says {result.width}x{result.height}: they must agree")
        _check(result.seed == request.seed, f"GeneratedImage.seed must be the request's seed ({request.seed}), got {result.seed}")

    def test_the_same_request_paints_the_same_image(self, engine: ImageGenerator) -> None:
        """The same request twice gives the same pixels (seeded generation)."""
        from PIL import Image

        request = self._prepare(engine, steps=self.steps, seed=1234)
        first, _ = self._paint(engine, request, threading.Event())
        second, _ = self._paint(engine, request, threading.Event())
        pixels = [np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")) for image in (first, second)]
        _check(bool(np.array_equal(pixels[0], pixels[1])), "the same request gave two different images: seed every random number generator from request.seed")

    def test_cancelled_before_it_starts_raises_generation_cancelled(self, engine: ImageGenerator) -> None:
        """With `cancelled` already set, generate() raises GenerationCancelled at once."""
        cancelled = threading.Event()
        cancelled.set()
        request = self._prepare(engine, steps=max(self.steps, 4), seed=1234)
        steps: list[Any] = []
        try:
            self._paint(engine, request, cancelled, lambda *step: steps.append(step))
        except GenerationCancelled:
            pass
        else:
            pytest.fail("with `cancelled` set, generate() painted the image: check `cancelled.is_set()` before each step and raise "
                        "assistant.GenerationCancelled", pytrace=False)
        _check(len(steps) <= self.max_steps_after_cancel, f"with `cancelled` set, generate() still ran {len(steps)} step(s)")

    def test_stops_at_the_next_step_once_cancelled(self, engine: ImageGenerator) -> None:
        """`cancelled` set at step 1: GenerationCancelled, after at most `max_steps_after_cancel` more steps."""
        cancelled = threading.Event()
        request = self._prepare(engine, steps=max(self.steps, 4), seed=1234)
        steps: list[Any] = []

        def on_step(*step: Any) -> None:
            steps.append(step)
            cancelled.set()

        try:
            self._paint(engine, request, cancelled, on_step)
        except GenerationCancelled:
            pass
        else:
            pytest.fail("generate() finished the image after `cancelled` was set: check `cancelled.is_set()` after each step and raise "
                        "assistant.GenerationCancelled", pytrace=False)
        _check(len(steps) - 1 <= self.max_steps_after_cancel, f"generate() ran {len(steps) - 1} step(s) after `cancelled` was set")


class SpeechSynthesizerConformance(_EngineConformance):
    """The contract of a speech synthesizer (`assistant.SpeechSynthesizer`): PCM16 chunks, streamed."""

    base = SpeechSynthesizer
    max_chunks_after_cancel: ClassVar[int] = 1
    sentence: ClassVar[str] = "Hello there, this is a test of the voice."
    long_text: ClassVar[str] = " ".join(["This sentence is one of many that make a long text to speak."] * 12)

    def _speak(self, engine: SpeechSynthesizer, text: str, voice: str | None = None, cancelled: threading.Event | None = None,
               on_chunk: Callable[[Any], None] | None = None) -> list[Any]:
        chunks: list[Any] = []

        def on_audio(chunk: Any) -> None:
            chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk)

        _run(lambda: engine.synthesize(text, voice, on_audio, cancelled or threading.Event()), "synthesize()", self.call_timeout_s)
        return chunks

    def _check_chunks(self, chunks: list[Any]) -> None:
        for chunk in chunks:
            _check(isinstance(chunk, bytes), f"on_audio got {type(chunk).__name__}: pass PCM16 mono little-endian audio as bytes")
            _check(len(chunk) % 2 == 0, f"on_audio got {len(chunk)} bytes, an odd number: PCM16 has two bytes per sample")

    def test_offers_voices(self, engine: SpeechSynthesizer) -> None:
        """voices() lists Voice(name, language, sample_rate), the default first, names unique."""
        voices = engine.voices()
        _check(isinstance(voices, list) and bool(voices), f"voices() must return a non-empty list, got {voices!r}")
        for voice in voices:
            _check(isinstance(voice, Voice), f"voices() must list assistant.Voice objects, got {type(voice).__name__}")
            _check(isinstance(voice.name, str) and bool(voice.name) and isinstance(voice.language, str),
                   f"a Voice needs a name and a BCP 47 language, got {voice!r}")
            _check(isinstance(voice.sample_rate, int) and voice.sample_rate > 0, f"Voice.sample_rate must be a positive int, got {voice.sample_rate!r}")
        names = [voice.name for voice in voices]
        _check(len(set(names)) == len(names), f"voice names must be unique, got {names}")

    def test_speaks_pcm16_chunks(self, engine: SpeechSynthesizer) -> None:
        """A sentence in the default voice streams non-empty PCM16 audio as bytes chunks."""
        chunks = self._speak(engine, self.sentence)
        self._check_chunks(chunks)
        _check(sum(len(c) for c in chunks) > 0, "synthesize() produced no audio for an ordinary sentence")

    def test_an_unknown_voice_is_a_bad_request_naming_the_voices(self, engine: SpeechSynthesizer) -> None:
        """An unknown voice raises EngineError(code="bad_request") whose message names the default voice."""
        default = engine.voices()[0].name
        try:
            self._speak(engine, self.sentence, voice="no-such-voice")
        except EngineError as exc:
            _check(exc.code == "bad_request", f"an unknown voice raised EngineError with code {exc.code!r}: use code='bad_request'")
            _check(default in str(exc), f"the error for an unknown voice ({exc}) must name the available voices (e.g. {default!r})")
        except Exception as exc:
            pytest.fail(f"an unknown voice raised {type(exc).__name__}: {exc}. Instead, raise assistant.EngineError(message, code='bad_request') "
                        "naming the available voices", pytrace=False)
        else:
            pytest.fail("an unknown voice was accepted: raise assistant.EngineError(message, code='bad_request') naming the available voices",
                        pytrace=False)

    def test_text_it_cannot_say_is_skipped(self, engine: SpeechSynthesizer) -> None:
        """Emoji, symbols and an empty text are no errors (silence or nothing at all)."""
        for text in ("🙂🙂 ✨", "", "```{}```"):
            try:
                chunks = self._speak(engine, text)
            except Exception as exc:
                pytest.fail(f"synthesize({text!r}) raised {type(exc).__name__}: {exc}. Skip what the voice cannot say; never raise for it", pytrace=False)
            self._check_chunks(chunks)

    def test_returns_at_once_when_cancelled_before_it_starts(self, engine: SpeechSynthesizer) -> None:
        """With `cancelled` already set, at most `max_chunks_after_cancel` chunks come."""
        cancelled = threading.Event()
        cancelled.set()
        chunks = self._speak(engine, self.long_text, cancelled=cancelled)
        _check(len(chunks) <= self.max_chunks_after_cancel,
               f"with `cancelled` set, synthesize() still sent {len(chunks)} chunk(s): check `cancelled.is_set()` before each chunk and return")

    def test_stops_at_the_next_chunk_once_cancelled(self, engine: SpeechSynthesizer) -> None:
        """`cancelled` set at the first chunk: at most `max_chunks_after_cancel` more."""
        cancelled = threading.Event()
        chunks = self._speak(engine, self.long_text, cancelled=cancelled, on_chunk=lambda chunk: cancelled.set())
        _check(len(chunks) - 1 <= self.max_chunks_after_cancel,
               f"synthesize() sent {len(chunks) - 1} chunk(s) after `cancelled` was set: check `cancelled.is_set()` between chunks and return")


class ModalityConformance:
    """The contract of a modality (`assistant.Modality`); give the suite a `modality` fixture, already loaded."""

    call_timeout_s: ClassVar[float] = 120.0

    @pytest.fixture
    def modality(self) -> Modality:
        """Override in your subclass: return your modality, its `load(app)` done."""
        pytest.fail(f"{type(self).__name__} needs a `modality` fixture that returns the loaded modality to check", pytrace=False)

    def images(self) -> list[ImageInput]:
        """Images as the core hands them over: a PNG, a JPEG, a 1x1 PNG, a 2000x8 strip, with their 1-based index."""
        from PIL import Image

        made = [
            (media.solid_image("red", (64, 48)), "image/png"),
            (media.encode_image(Image.new("RGB", (80, 60), (30, 90, 200)), "JPEG"), "image/jpeg"),
            (media.solid_image("white", (1, 1)), "image/png"),
            (media.solid_image("black", (2000, 8)), "image/png"),
        ]
        return [media.image_input(data, mime, index=i) for i, (data, mime) in enumerate(made, start=1)]

    def _check_text(self, text: Any, what: str) -> None:
        _check(text is None or isinstance(text, str), f"{what} returned {type(text).__name__}: return a str, or None when there is nothing to say")

    def test_is_a_modality(self, modality: Modality) -> None:
        """The object subclasses assistant.Modality."""
        _check(isinstance(modality, Modality), f"the modality is a {type(modality).__name__}, not an assistant.Modality: subclass it")

    def test_describes_each_image_with_text_or_none(self, modality: Modality) -> None:
        """describe() returns a str or None for ordinary and odd images, never raising."""
        for image in self.images():
            what = f"describe() of a {image.image.width}x{image.image.height} {image.mime}"
            try:
                text = _run(partial(modality.describe, image), what, self.call_timeout_s)
            except Exception as exc:
                pytest.fail(f"{what} raised {type(exc).__name__}: {exc}. Return None for an image you have nothing to say about "
                            "(the core logs an exception and drops your text)", pytrace=False)
            self._check_text(text, what)

    def test_describe_batch_gives_one_text_per_image_in_order(self, modality: Modality) -> None:
        """describe_batch() returns a list with one str or None per image."""
        images = self.images()
        texts = _run(lambda: modality.describe_batch(images), "describe_batch()", self.call_timeout_s)
        _check(isinstance(texts, list) and len(texts) == len(images),
               f"describe_batch() of {len(images)} images returned {texts!r}: return a list with one entry per image, in order")
        for text in texts:
            self._check_text(text, "describe_batch()")

    def test_cache_key_is_stable(self, modality: Modality) -> None:
        """cache_key() is a str or None, the same each time it is asked."""
        key = modality.cache_key()
        _check(key is None or (isinstance(key, str) and bool(key)), f"cache_key() must return a non-empty str or None, got {key!r}")
        _check(modality.cache_key() == key, "cache_key() must give the same key every time for the same settings")
