"""PCM16 from a speech synthesizer, encoded as it streams into the formats `/v1/audio/speech` offers.

`pcm` is raw 24 kHz PCM16 (what OpenAI's clients expect), `wav` a WAV header with open-ended sizes then
the voice's PCM16, and `mp3`, `opus` (in Ogg), `aac` (ADTS) and `flac` are encoded by PyAV (FFmpeg's
encoders), each chunk as soon as it is made. An encoder is not thread-safe: feed it from one task.
"""

from __future__ import annotations

import struct
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


class AudioEncoder:
    """Encodes one stream of PCM16 mono at `sample_rate` into `audio_format`; `push` then `finish` return the bytes to send."""

    def __init__(self, audio_format: str, sample_rate: int) -> None:
        self.format = audio_format
        self.sample_rate = sample_rate
        self.started = False
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

    def push(self, pcm: bytes) -> bytes:
        """Encode a chunk of PCM16; returns what is ready to send (maybe nothing yet)."""
        head = b""
        if not self.started:
            self.started = True
            head = wav_header(self.sample_rate) if self.format == "wav" else b""
        if self.format == "wav" or (self.format == "pcm" and self._resampler is None):
            return head + pcm
        if not pcm:
            return head
        frames = self._resampler.resample(self._frame(pcm))
        if self.format == "pcm":
            return head + b"".join(bytes(frame.to_ndarray().astype("<i2").tobytes()) for frame in frames)
        for frame in frames:
            self._container.mux(self._stream.encode(frame))
        return head + self._sink.take()

    def finish(self) -> bytes:
        """Flush the encoder and the container; returns the last bytes."""
        out = self.push(b"") if not self.started else b""
        if self._resampler is None:
            return out
        frames = self._resampler.resample(None)
        if self.format == "pcm":
            return out + b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)
        for frame in frames:
            self._container.mux(self._stream.encode(frame))
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        return out + self._sink.take()

    def close(self) -> None:
        """Release the encoder of a stream cut short."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # a stream cut before any frame may not close cleanly; nothing is sent any more
                pass
            self._container = None
