"""Voice activity detection with Silero VAD (the ONNX model from the `silero-vad` package).

One onnxruntime session per process, shared by every stream; each stream keeps its own recurrent
state and context, so sessions never disturb each other. Speech start and end follow Silero's own
rule (the package's VADIterator): speech starts when a 32 ms window's probability reaches the
threshold, and ends after `min_silence_ms` below `threshold - 0.15`.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

WINDOW = 512  # samples per model call at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees again
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class VadEvent:
    """Speech began or ended at `sample` (counted from the start of the stream, 16 kHz)."""

    kind: Literal["start", "end"]
    sample: int

    @property
    def ms(self) -> int:
        """The event's position in milliseconds."""
        return self.sample * 1000 // SAMPLE_RATE


def model_path() -> Path:
    """The ONNX file inside the installed `silero-vad` package.

    Found without importing the package: importing it calls torch.set_num_threads(1), which would
    slow every other model in the process.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed (pip install silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class SileroVad:
    """The Silero VAD model, loaded once; `stream()` gives each audio stream its own state."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        # Full graph optimization costs ~3.5 s at first load for no measurable gain on this small model.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.session = onnxruntime.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def stream(self, threshold: float = 0.5, min_silence_ms: int = 500, speech_pad_ms: int = 100) -> VadStream:
        """A new detector with fresh state."""
        return VadStream(self, threshold, min_silence_ms, speech_pad_ms)

    def probability(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one window (context + 512 samples) and the next state."""
        out, next_state = self.session.run(None, {"input": window[np.newaxis, :], "state": state, "sr": self._sr})
        return float(out[0][0]), next_state


class VadStream:
    """Feeds 16 kHz samples through the shared model and reports where speech starts and ends."""

    def __init__(self, model: SileroVad, threshold: float, min_silence_ms: int, speech_pad_ms: int) -> None:
        self.model = model
        self.threshold = threshold
        self.min_silence = min_silence_ms * SAMPLE_RATE // 1000
        self.pad = speech_pad_ms * SAMPLE_RATE // 1000
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything heard so far."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0  # samples consumed by the model
        self.in_speech = False
        self._silence_since = 0

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Consume samples; returns the speech starts and ends they complete. Blocking: call off the loop."""
        with self._lock:
            events = []
            self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
            while self._pending.size >= WINDOW:
                chunk, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
                probability, self._state = self.model.probability(np.concatenate([self._context, chunk]), self._state)
                self._context = chunk[-CONTEXT:]
                self._position += WINDOW
                event = self._decide(probability)
                if event is not None:
                    events.append(event)
            return events

    def _decide(self, probability: float) -> VadEvent | None:
        if probability >= self.threshold and self._silence_since:
            self._silence_since = 0
        if probability >= self.threshold and not self.in_speech:
            self.in_speech = True
            return VadEvent("start", max(0, self._position - WINDOW - self.pad))
        if probability < self.threshold - 0.15 and self.in_speech:
            if not self._silence_since:
                self._silence_since = self._position
            if self._position - self._silence_since >= self.min_silence:
                self.in_speech = False
                end = self._silence_since + self.pad
                self._silence_since = 0
                return VadEvent("end", end)
        return None
