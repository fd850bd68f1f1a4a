"""Audio in: bytes of any supported format -> 16 kHz mono float32 samples, with clear errors.

Decoding and resampling go through PyAV (FFmpeg's libraries, shipped in the `av` wheel): WAV at any
common rate, depth and channel count, and the formats browsers record (Ogg/Opus, WebM, MP3), plus
FLAC. Raw PCM16 needs its sample rate. No I/O beyond the bytes given; callers run it off the loop.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000
MIN_SOURCE_RATE = 4000
MAX_SOURCE_RATE = 384000
SILENCE_PEAK = 1e-3  # below this peak amplitude a clip holds no speech worth transcribing

AudioFormat = Literal["wav", "pcm16", "ogg", "webm", "mp3", "flac"]
AUDIO_FORMATS: tuple[str, ...] = ("wav", "pcm16", "ogg", "webm", "mp3", "flac")
CONTAINER_NAMES: dict[str, set[str]] = {
    "wav": {"wav"},
    "ogg": {"ogg"},
    "webm": {"matroska,webm", "webm", "matroska"},
    "mp3": {"mp3"},
    "flac": {"flac"},
}
MIME_TYPES = {"wav": "audio/wav", "pcm16": "audio/L16", "ogg": "audio/ogg", "webm": "audio/webm", "mp3": "audio/mpeg", "flac": "audio/flac"}


class AudioError(ValueError):
    """Audio that cannot be used; `code` is the protocol error code (bad_request or too_large)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def decode(data: bytes, audio_format: str, sample_rate: int | None = None, max_seconds: float | None = None) -> np.ndarray:
    """Samples at 16 kHz, mono, float32 in [-1, 1]; raises AudioError naming the problem."""
    if audio_format not in AUDIO_FORMATS:
        raise AudioError(f"unknown audio format {audio_format!r}; use one of {', '.join(AUDIO_FORMATS)}")
    if not data:
        raise AudioError("the audio is empty (zero bytes)")
    if audio_format == "pcm16":
        samples = _decode_pcm16(data, sample_rate)
    else:
        samples = _decode_container(data, audio_format, max_seconds)
    if samples.size == 0:
        raise AudioError("the audio holds no samples")
    if max_seconds is not None and samples.size > max_seconds * SAMPLE_RATE:
        raise AudioError(f"the audio lasts {samples.size / SAMPLE_RATE:.1f} s; at most {max_seconds:g} s", code="too_large")
    return samples


def duration_s(samples: np.ndarray) -> float:
    """Length of 16 kHz samples in seconds."""
    return samples.size / SAMPLE_RATE


def is_silent(samples: np.ndarray) -> bool:
    """True when the clip's peak is below the silence threshold."""
    return samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


def _check_rate(rate: int | None) -> int:
    if rate is None or not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise AudioError(f"sample rate {rate} Hz is out of range ({MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz)")
    return rate


def _decode_pcm16(data: bytes, sample_rate: int | None) -> np.ndarray:
    import av

    rate = _check_rate(sample_rate)
    if len(data) % 2:
        raise AudioError("PCM16 audio must have an even number of bytes (2 per sample)")
    pcm = np.frombuffer(data, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = rate
    return _resample([frame])


def _decode_container(data: bytes, audio_format: str, max_seconds: float | None) -> np.ndarray:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if container.format.name not in CONTAINER_NAMES[audio_format] and not (
                set(container.format.name.split(",")) & CONTAINER_NAMES[audio_format]
            ):
                raise AudioError(f"the data is {container.format.name!r} audio, not {audio_format}")
            if not container.streams.audio:
                raise AudioError("the data holds no audio stream")
            stream = container.streams.audio[0]
            _check_rate(stream.rate or stream.codec_context.sample_rate)
            frames = []
            decoded = 0.0
            for frame in container.decode(stream):
                frames.append(frame)
                decoded += frame.samples / (frame.sample_rate or 1)
                if max_seconds is not None and decoded > max_seconds + 1:
                    raise AudioError(f"the audio lasts more than {max_seconds:g} s", code="too_large")
            return _resample(frames)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise AudioError(f"cannot decode the {audio_format} audio: {exc}") from None


def _resample(frames: list) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    for frame in [*frames, None]:
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.clip(np.concatenate(chunks).astype(np.float32, copy=False), -1.0, 1.0)


class StreamResampler:
    """Resamples a stream of PCM16 mono chunks to 16 kHz float32, keeping filter state between chunks."""

    def __init__(self, sample_rate: int) -> None:
        import av

        self.sample_rate = _check_rate(sample_rate)
        self._resampler = None if sample_rate == SAMPLE_RATE else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def push(self, pcm: bytes) -> np.ndarray:
        """16 kHz samples for one chunk of little-endian PCM16 (an even number of bytes)."""
        import av

        if len(pcm) % 2:
            raise AudioError("PCM16 audio must have an even number of bytes (2 per sample)")
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is None:
            return samples.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz float samples as a 16-bit mono WAV file (how streamed audio is stored)."""
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    """Hex sha256 of bytes: the name an attachment is stored under."""
    import hashlib

    return hashlib.sha256(data).hexdigest()
