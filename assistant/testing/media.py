"""Image and audio parts for turns, and the bytes inside them, made on the spot (no files, no downloads)."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any


def encode_image(image: Any, fmt: str = "PNG", **options: Any) -> bytes:
    """A `PIL.Image.Image` saved in `fmt` (PNG, JPEG, WEBP...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid_image(color: str | tuple[int, int, int] = "red", size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """The bytes of a one-colour image."""
    from PIL import Image

    return encode_image(Image.new("RGB", size, color), fmt)


def image_part(data: bytes, mime: str | None = "image/png") -> dict[str, Any]:
    """A native-protocol `image` part carrying `data` (pass mime=None to leave the field out)."""
    part: dict[str, Any] = {"type": "image", "data": base64.b64encode(data).decode()}
    if mime is not None:
        part["mime"] = mime
    return part


def tone(seconds: float = 1.0, hz: float = 220.0, sample_rate: int = 16000, amplitude: float = 0.3) -> Any:
    """A sine tone as mono float32 samples in [-1, 1] (what ASR engines receive)."""
    import numpy as np

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def pcm16(samples: Any) -> bytes:
    """Float samples in [-1, 1] as PCM16 mono little-endian bytes."""
    import numpy as np

    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_bytes(samples: Any, sample_rate: int = 16000) -> bytes:
    """Float samples in [-1, 1] as a mono 16-bit WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16(samples))
    return buffer.getvalue()


def audio_part(samples: Any, sample_rate: int = 16000, fmt: str = "wav") -> dict[str, Any]:
    """A native-protocol `audio` part: `fmt` "wav" (a WAV file) or "pcm16" (raw PCM16 at `sample_rate`)."""
    if fmt not in ("wav", "pcm16"):
        raise ValueError(f"fmt must be 'wav' or 'pcm16', got {fmt!r}")
    data = wav_bytes(samples, sample_rate) if fmt == "wav" else pcm16(samples)
    return {"type": "audio", "data": base64.b64encode(data).decode(), "format": fmt, "sample_rate": sample_rate}


def image_input(data: bytes, mime: str = "image/png", index: int = 1, features: Any = None, encoder_id: str | None = None) -> Any:
    """An `assistant.ImageInput` for image bytes, as the core hands it to a modality (RGB, EXIF orientation applied)."""
    import hashlib

    from PIL import Image, ImageOps

    from assistant.modalities import ImageInput

    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return ImageInput(index, hashlib.sha256(data).hexdigest(), mime, data, image, features, encoder_id)
