"""Short videos made with PyAV: frames drawn with Pillow (large text, solid colours), an optional sound track."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FPS = 8


def sign_frame(text: str, colour: str = "white", size: tuple[int, int] = (480, 240)) -> Image.Image:
    """A frame with `text` in large black letters (Pillow's built-in font) on `colour`."""
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).text((30, size[1] // 3), text, fill="black", font=ImageFont.load_default(size=56))
    return image


def make_video(scenes: list[Image.Image], seconds_per_scene: float = 1.0, sound: np.ndarray | None = None, rate: int = 16_000) -> bytes:
    """An MP4 (H.264, with AAC sound when `sound`, float32 mono at `rate`, is given) showing each scene in turn."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        width, height = scenes[0].size
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(FPS)}
        audio = None
        if sound is not None:
            audio = container.add_stream("aac", rate=rate)
            audio.layout = "mono"
        index = 0
        for scene in scenes:
            for _ in range(round(seconds_per_scene * FPS)):
                frame = av.VideoFrame.from_image(scene)
                frame.pts, frame.time_base = index, Fraction(1, FPS)
                container.mux(video.encode(frame))
                index += 1
        container.mux(video.encode(None))
        if audio is not None and sound is not None:
            pcm = (np.clip(sound, -1, 1) * 32767).astype(np.int16)
            chunk = 1024
            for start in range(0, len(pcm), chunk):
                piece = pcm[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return out.getvalue()


def tone(seconds: float, hz: float = 440.0, rate: int = 16_000) -> np.ndarray:
    """A sine tone, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
