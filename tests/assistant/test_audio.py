"""Audio decoding to 16 kHz mono: formats, resampling and every kind of bad input."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from assistant import audio
from tests.conftest import REPO

CAPITAL = (REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav").read_bytes()


def wav_bytes(samples: np.ndarray, rate: int, width: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize(("rate", "width", "channels"), [(8000, 2, 1), (22050, 2, 2), (44100, 1, 2), (48000, 4, 1), (16000, 2, 1)])
def test_wav_of_any_common_rate_depth_and_channel_count_becomes_16k_mono(rate, width, channels):
    """8/16/32-bit, mono or stereo, 8-48 kHz WAV decode to one second of 16 kHz mono float32."""
    wave_form = tone(rate)
    if width == 1:
        pcm = (wave_form * 100 + 128).astype(np.uint8)
    elif width == 2:
        pcm = (wave_form * 20000).astype("<i2")
    else:
        pcm = (wave_form * 2**30).astype("<i4")
    if channels == 2:
        pcm = np.stack([pcm, pcm], axis=1)
    samples = audio.decode(wav_bytes(pcm, rate, width, channels), "wav")
    assert samples.dtype == np.float32 and abs(samples.size - 16000) <= 32
    assert 0.3 < float(np.abs(samples).max()) <= 1.0


def test_pcm16_and_browser_formats():
    """Raw PCM16 at its stated rate, and Ogg/Opus, WebM/Opus and MP3 (encoded here with PyAV) decode."""
    pcm = (tone(24000) * 20000).astype("<i2").tobytes()
    assert abs(audio.decode(pcm, "pcm16", 24000).size - 16000) <= 32
    for container, codec in (("ogg", "libopus"), ("webm", "libopus"), ("mp3", "libmp3lame")):
        buffer = io.BytesIO()
        with av.open(buffer, "w", format=container) as out:
            stream = out.add_stream(codec, rate=48000)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray((tone(48000) * 20000).astype("<i2").reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48000
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        samples = audio.decode(buffer.getvalue(), container)
        assert abs(samples.size - 16000) < 1600, container


@pytest.mark.parametrize(
    ("data", "fmt", "rate", "code", "needle"),
    [
        (b"definitely not audio" * 20, "wav", None, "bad_request", "cannot decode"),
        (CAPITAL[:30], "wav", None, "bad_request", "cannot decode"),
        (CAPITAL[:44], "wav", None, "bad_request", "no samples"),
        (b"", "wav", None, "bad_request", "empty"),
        (b"\x00\x01" * 100, "pcm16", 10**9, "bad_request", "sample rate"),
        (b"\x00\x01" * 100, "pcm16", 1, "bad_request", "sample rate"),
        (b"\x00\x01\x02", "pcm16", 16000, "bad_request", "even number"),
        (CAPITAL, "mp9", None, "bad_request", "unknown audio format"),
        (CAPITAL, "mp3", None, "bad_request", "not mp3"),
    ],
)
def test_bad_audio_gets_a_clear_error(data, fmt, rate, code, needle):
    """Not-audio bytes, truncated headers, zero length, absurd rates and wrong format names raise AudioError."""
    with pytest.raises(audio.AudioError) as err:
        audio.decode(data, fmt, rate)
    assert err.value.code == code and needle in str(err.value)


def test_absurd_rate_in_a_wav_header_and_overlong_audio():
    """A WAV whose header claims 1 Hz is refused; audio past max_seconds is too_large."""
    header = bytearray(wav_bytes((tone(8000) * 2000).astype("<i2"), 8000, 2, 1))
    header[24:28] = (1).to_bytes(4, "little")
    with pytest.raises(audio.AudioError, match="sample rate|cannot decode"):
        audio.decode(bytes(header), "wav")
    with pytest.raises(audio.AudioError) as err:
        audio.decode(CAPITAL, "wav", max_seconds=1)
    assert err.value.code == "too_large"


def test_silence_is_recognised():
    """Digital silence and near-silence are silent; speech is not."""
    assert audio.is_silent(np.zeros(16000, dtype=np.float32))
    assert not audio.is_silent(audio.decode(CAPITAL, "wav"))
