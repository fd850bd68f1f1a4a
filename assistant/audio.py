"""Audio in: bytes of any supported format -> 16 kHz mono float32 samples, with clear errors.

Decoding and resampling go through PyAV (FFmpeg's libraries, shipped in the `av` wheel): WAV at any
common rate, depth and channel count, and the formats browsers record (Ogg/Opus, WebM, MP3), plus
FLAC. Raw PCM16 needs its sample rate. No I/O beyond the bytes given; callers run it off the loop.
"""

from __future__ import annotations

import io
from typing import Any, Literal

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
    """True when the clip's peak is below the silence threshold (NaN counts as silence, never as speech)."""
    return samples.size == 0 or not float(np.nanmax(np.abs(samples), initial=0.0)) >= SILENCE_PEAK


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
    """Decode and resample frame by frame: no decoded frame outlives its resampling (a 384 kHz
    multichannel file would otherwise hold every decoded frame at once)."""
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
            resampler = _Resampler()
            decoded = 0.0
            for frame in container.decode(stream):
                decoded += frame.samples / (frame.sample_rate or 1)
                if max_seconds is not None and decoded > max_seconds + 1:
                    raise AudioError(f"the audio lasts more than {max_seconds:g} s", code="too_large")
                resampler.push(frame)
                del frame
            return resampler.finish()
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise AudioError(f"cannot decode the {audio_format} audio: {exc}") from None


class _Resampler:
    """Frames in, 16 kHz mono float32 chunks kept; only the output (at most max_seconds of 16 kHz) accumulates."""

    def __init__(self) -> None:
        import av

        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []

    def push(self, frame: Any) -> None:
        for out in self._resampler.resample(frame):
            self._chunks.append(out.to_ndarray().reshape(-1).copy())

    def finish(self) -> np.ndarray:
        self.push(None)
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        samples = np.concatenate(self._chunks).astype(np.float32, copy=False)
        self._chunks = []
        # NaN or infinite samples (a float WAV can hold them) would pass the silence check and feed
        # the recognizer garbage: NaN becomes silence, infinities full scale.
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(samples, -1.0, 1.0, out=samples)


def _resample(frames: list) -> np.ndarray:
    resampler = _Resampler()
    for frame in frames:
        resampler.push(frame)
    return resampler.finish()


class StreamResampler:
    """Resamples a stream of PCM16 mono chunks to float32 at `target_rate` (16 kHz unless told), keeping filter state between chunks."""

    def __init__(self, sample_rate: int, target_rate: int = SAMPLE_RATE) -> None:
        import av

        self.sample_rate = _check_rate(sample_rate)
        self._resampler = None if sample_rate == target_rate else av.AudioResampler(format="flt", layout="mono", rate=target_rate)

    def push(self, pcm: bytes) -> np.ndarray:
        """Samples at the target rate for one chunk of little-endian PCM16 (an even number of bytes)."""
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
