"""An example part-type plugin: `{"type": "video", "data": <base64>, "mime": "video/mp4"}`.

Installed as its own package, it is found through its `assistant` entry point and adds the `video`
part type. Decoding (PyAV, on the core's media worker) keeps a few frames spread over the clip and
its sound track as 16 kHz mono samples, within `[plugins.video_parts]` limits (`max_seconds`,
`frames`, `max_frame_pixels`). Describing reuses the backend's own paths rather than its own models:
the frames go through the image path (`tools.describe_images`: OCR, labels, whatever image modalities
are loaded, with the image encoder's features) and the sound through the ASR engine
(`tools.transcribe`), fused into one description with timestamps, e.g.

    [Video 1: a 3.0 s video, 320x240; at 0.5 s: text read in it: "SALE"; at 2.5 s: a photo of a cat;
     speech 0.0-3.0 s: "what is the capital of France"]
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assistant import DecodedPart, EngineError, PartError, PartLimits, PartTools, PartType, hookimpl

PLUGIN_NAME = "video_parts"  # the entry-point name in pyproject.toml, hence the `[plugins.video_parts]` table
SAMPLE_RATE = 16_000
FRAME_SIDE = 768  # kept frames are scaled to fit this square (what OCR and labels need, no more)
MIMES = ("video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/ogg")


class VideoSettings(BaseModel):
    """`[plugins.video_parts]`: the limits of a video part. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest file accepted")
    max_seconds: float = Field(60.0, gt=0, description="longer videos are refused as too_large")
    frames: int = Field(4, ge=1, le=16, description="frames kept, spread over the clip, that go through the image path")
    max_frame_pixels: int = Field(1920 * 1088, ge=1, description="width x height of the video at most this")


class VideoFields(BaseModel):
    """The part's own wire fields besides type, data and mime."""

    model_config = ConfigDict(extra="forbid", strict=True)

    language: str | None = Field(None, max_length=16, description="the spoken language; unset: configured or detected")


@dataclass(frozen=True)
class Frame:
    """A kept frame: when it is shown (seconds) and the picture (RGB PIL image, at most FRAME_SIDE a side)."""

    time_s: float
    image: Any


@dataclass(frozen=True)
class Clip:
    """A decoded video: its size and length, the kept frames and the sound (None: no sound track)."""

    width: int
    height: int
    duration_s: float
    frames: list[Frame]
    samples: np.ndarray | None
    language: str | None = None


class VideoPart(PartType):
    """Short videos: a few frames through the image path, the sound through ASR."""

    name = "video"
    label = "Video"
    mimes = MIMES
    fields = VideoFields

    def __init__(self) -> None:
        self.settings = VideoSettings()
        self.max_bytes = self.settings.max_bytes

    def load(self, app) -> bool:
        """Take the validated `[plugins.video_parts]` settings; there is nothing to load."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        self.max_bytes = self.settings.max_bytes
        return True

    def decode_cost(self, size: int) -> int:
        """The file, a few decoded full frames (YUV and RGB), the kept frames, and the sound as float32."""
        s = self.settings
        return 2 * size + 4 * s.max_frame_pixels * 3 + s.frames * FRAME_SIDE * FRAME_SIDE * 3 + int(s.max_seconds * SAMPLE_RATE * 4 * 2)

    def decode(self, data: bytes, mime: str | None, options: BaseModel | None, limits: PartLimits) -> DecodedPart:
        """Keep `frames` frames spread over the clip and its sound at 16 kHz mono, within the limits."""
        import av

        if len(data) > limits.max_bytes:
            raise PartError(f"the video is {len(data)} bytes; at most {limits.max_bytes} are accepted", "too_large")
        if not data:
            raise PartError("the video is empty")
        try:
            clip = self._decode(av, data, limits)
        except PartError:
            raise
        except Exception as exc:  # FFmpeg's many errors on a broken file all mean "not a readable video"
            raise PartError(f"cannot decode the video ({type(exc).__name__}: {exc})"[:300]) from None
        if isinstance(options, VideoFields):
            clip = Clip(clip.width, clip.height, clip.duration_s, clip.frames, clip.samples, options.language)
        nbytes = sum(f.image.width * f.image.height * 3 for f in clip.frames) + (clip.samples.nbytes if clip.samples is not None else 0)
        return DecodedPart(value=clip, nbytes=min(nbytes, limits.max_decoded_bytes), mime=mime)

    def _decode(self, av: Any, data: bytes, limits: PartLimits) -> Clip:
        max_seconds = self.settings.max_seconds
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise PartError("the data holds no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                raise PartError("the video stream has no frame size")
            max_pixels = min(limits.max_pixels, self.settings.max_frame_pixels)
            if width * height > max_pixels:
                raise PartError(f"the video is {width}x{height}; at most {max_pixels} pixels a frame are accepted", "too_large")
            declared = container.duration / 1_000_000 if container.duration else None
            if declared is not None and declared > max_seconds:
                raise PartError(f"the video lasts {declared:.1f} s; at most {max_seconds:g} s are accepted", "too_large")
            span = declared or max_seconds
            targets = [span * (i + 0.5) / self.settings.frames for i in range(self.settings.frames)]
            frames: list[Frame] = []
            last, latest, wanted = 0.0, None, 0
            for frame in container.decode(stream):
                when = float(frame.time or 0.0)
                if when > max_seconds + 1:
                    raise PartError(f"the video lasts more than {max_seconds:g} s", "too_large")
                last, latest = max(last, when), frame
                if wanted < len(targets) and when >= targets[wanted]:  # the first frame shown at or after each target time
                    frames.append(_keep(frame, when))
                    while wanted < len(targets) and targets[wanted] <= when:
                        wanted += 1
            if not frames and latest is not None:  # a clip shorter than the first target: its last frame
                frames.append(_keep(latest, last))
            if not frames:
                raise PartError("the video holds no frames")
        duration = declared or last
        samples = self._sound(av, data, min(max_seconds, limits.max_audio_seconds))
        return Clip(width, height, round(duration, 2), frames, samples)

    def _sound(self, av: Any, data: bytes, max_seconds: float) -> np.ndarray | None:
        """The first sound track as 16 kHz mono float32 (at most `max_seconds`), or None without one."""
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []
            kept = 0
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1).copy())
                    kept += chunks[-1].size
                if kept >= max_seconds * SAMPLE_RATE:
                    break
            else:
                chunks += [out.to_ndarray().reshape(-1).copy() for out in resampler.resample(None)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        samples = np.concatenate(chunks)[: int(max_seconds * SAMPLE_RATE)].astype(np.float32, copy=False)
        return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)

    async def describe(self, part: DecodedPart, tools: PartTools) -> str | None:
        """The clip's size and length, what the image path says about each kept frame, and what was said in it."""
        clip: Clip = part.value
        lines = [f"a {clip.duration_s:.1f} s video, {clip.width}x{clip.height}"]
        seen = await tools.describe_images([frame.image for frame in clip.frames])
        for frame, text in zip(clip.frames, seen, strict=False):
            lines.append(f"at {frame.time_s:.1f} s: {text or 'nothing recognized'}")
        if clip.samples is None:
            lines.append("no sound track")
        else:
            heard = clip.samples.size / SAMPLE_RATE
            try:
                transcript = await tools.transcribe(clip.samples, clip.language)
            except EngineError as exc:
                lines.append(f"speech could not be transcribed ({exc})")
            else:
                if transcript is None:
                    lines.append("its sound was not transcribed (no speech recognizer)")
                elif transcript.text.strip():
                    lines.append(f'speech 0.0-{heard:.1f} s: "{transcript.text.strip()}"')
                else:
                    lines.append("no speech")
        return "; ".join(lines)


def _keep(frame: Any, when: float) -> Frame:
    """A decoded frame as a kept RGB picture, scaled to fit FRAME_SIDE."""
    image = frame.to_image()
    image.thumbnail((FRAME_SIDE, FRAME_SIDE))
    return Frame(round(when, 2), image.convert("RGB"))


@hookimpl
def register_part_types(register):
    """Register the `video` part type and its settings model."""
    register(VideoPart(), settings=VideoSettings)


__all__ = ["Clip", "Frame", "VideoFields", "VideoPart", "VideoSettings"]
