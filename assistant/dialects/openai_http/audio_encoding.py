"""PCM16 from a speech synthesizer, encoded as it streams into the formats `/v1/audio/speech` offers.

`pcm` is raw 24 kHz PCM16 (what OpenAI's clients expect), `wav` a WAV header with open-ended sizes then
the voice's PCM16, and `mp3`, `opus` (in Ogg), `aac` (ADTS) and `flac` are encoded by PyAV (FFmpeg's
encoders), each chunk as soon as it is made. A speed other than 1 goes through FFmpeg's `atempo`
filter first. An encoder is not thread-safe: feed it from one task.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np

PCM_RATE = 24000
"""The sample rate of `pcm` output, as OpenAI sends it."""

CONTAINERS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 24000),
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}
"""Format -> (FFmpeg container, encoder, the rate it encodes at; None: the voice's)."""

MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}


class _Sink:
    """A write-only, unseekable file for PyAV: what the muxer wrote since the last `take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def wav_header(sample_rate: int) -> bytes:
    """A PCM16 mono WAV header whose sizes say "until the end" (0xFFFFFFFF), for a stream of unknown length."""
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


class Tempo:
    """FFmpeg's `atempo` filter: audio faster or slower at the same pitch (chained for factors below 0.5)."""

    def __init__(self, sample_rate: int, speed: float) -> None:
        self.graph = av.filter.Graph()
        self.time_base = Fraction(1, sample_rate)
        self.pts = 0
        node = self.source = self.graph.add_abuffer(format="s16", sample_rate=sample_rate, layout="mono", time_base=self.time_base)
        factors = []
        while speed < 0.5:
            factors.append(0.5)
            speed /= 0.5
        for factor in (*factors, speed):
            step = self.graph.add("atempo", f"{factor:.6f}")
            node.link_to(step)
            node = step
        node.link_to(self.graph.add("abuffersink"))
        self.graph.configure()

    def filter(self, frame: Any) -> list[Any]:
        """The frames ready after `frame` (None: the end of the stream, flush everything)."""
        if frame is not None:
            frame.pts = self.pts
            frame.time_base = self.time_base
            self.pts += frame.samples
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (BlockingIOError, av.EOFError):
                return out


class AudioEncoder:
    """Encodes one stream of PCM16 mono at `sample_rate` into `audio_format`, at `speed`; `push` then `finish`
    return the bytes to send."""

    def __init__(self, audio_format: str, sample_rate: int, speed: float = 1.0) -> None:
        self.format = audio_format
        self.sample_rate = sample_rate
        self.started = False
        self._tempo = Tempo(sample_rate, speed) if speed != 1.0 else None
        self._resampler: Any = None
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        if audio_format == "pcm" and sample_rate != PCM_RATE:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
        elif audio_format in CONTAINERS:
            container, codec, rate = CONTAINERS[audio_format]
            self._container = av.open(self._sink, mode="w", format=container)
            self._stream = self._container.add_stream(codec, rate=rate or sample_rate, layout="mono")
            self._resampler = av.AudioResampler(format=self._stream.codec_context.format.name, layout="mono", rate=rate or sample_rate)

    def _frame(self, pcm: bytes) -> Any:
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        return frame

    def _head(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return wav_header(self.sample_rate) if self.format == "wav" else b""

    def _encode(self, frame: Any) -> bytes:
        """A frame (None: the end) through the tempo filter, the resampler and the encoder; the bytes ready."""
        frames = self._tempo.filter(frame) if self._tempo is not None else ([frame] if frame is not None else [])
        if self._resampler is not None:
            frames = [out for each in frames for out in self._resampler.resample(each)]
            if frame is None:
                frames += self._resampler.resample(None)
        if self._container is None:  # wav or pcm: the samples themselves
            return b"".join(each.to_ndarray().astype("<i2").tobytes() for each in frames)
        for each in frames:
            self._container.mux(self._stream.encode(each))
        if frame is None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
        return self._sink.take()

    def push(self, pcm: bytes) -> bytes:
        """Encode a chunk of PCM16; returns what is ready to send (maybe nothing yet)."""
        head = self._head()
        if self._tempo is None and self._resampler is None:  # wav, or pcm at 24 kHz already
            return head + pcm
        return head + (self._encode(self._frame(pcm)) if pcm else b"")

    def finish(self) -> bytes:
        """Flush the filter, the encoder and the container; returns the last bytes."""
        head = self._head()
        if self._tempo is None and self._resampler is None:
            return head
        return head + self._encode(None)

    def close(self) -> None:
        """Release the encoder of a stream cut short."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # a stream cut before any frame may not close cleanly; nothing is sent any more
                pass
            self._container = None
