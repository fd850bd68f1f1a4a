"""The video part type: the conformance suite, and what it keeps of a clip at its limits."""

from __future__ import annotations

import asyncio

import assistant_video_parts
import pytest
from assistant_video_parts import VideoPart, VideoSettings
from video_samples import make_video, sign_frame, tone

from assistant import PartError, PartLimits
from assistant.testing.part_conformance import FailingTools, PartTypeConformance, Sample, WorkingTools

LIMITS = PartLimits(max_bytes=32 * 1024 * 1024, max_decoded_bytes=512 * 1024 * 1024, max_pixels=24_000_000, max_audio_seconds=120)


@pytest.fixture(scope="module")
def clip() -> bytes:
    """Two seconds: a white HELLO sign, then a yellow WORLD sign, over a tone."""
    return make_video([sign_frame("HELLO"), sign_frame("WORLD", "yellow")], 1.0, tone(2.0))


class TestVideoConformance(PartTypeConformance):
    """The suite every part type passes, run on `video`."""

    @pytest.fixture
    def plugin(self):
        return assistant_video_parts

    @pytest.fixture
    def samples(self, clip):
        silent = make_video([sign_frame("QUIET")], 0.5)
        return [Sample(clip, "video/mp4", {"language": "en"}, expect="2.0 s video"), Sample(silent, None, expect="no sound track")]

    @pytest.fixture
    def bad_samples(self):
        return [Sample(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4")]


def part(**settings) -> VideoPart:
    """A video part type with these `[plugins.video_parts]` settings."""
    video = VideoPart()
    video.settings = VideoSettings(**settings)
    return video


def test_frames_are_spread_over_the_clip(clip):
    """`frames` frames are kept, the first shown at or after each quarter's middle, with the sound at 16 kHz."""
    decoded = part(frames=4).decode(clip, "video/mp4", None, LIMITS)
    assert [f.time_s for f in decoded.value.frames] == [0.25, 0.75, 1.25, 1.75]
    assert decoded.value.frames[0].image.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=8)
    assert decoded.value.frames[-1].image.getpixel((5, 5)) == pytest.approx((255, 255, 0), abs=12)
    assert abs(decoded.value.samples.size - 32_000) < 2048 and decoded.nbytes > 0


def test_a_video_past_max_seconds_is_too_large(clip):
    """A clip longer than `max_seconds` is refused as too_large."""
    with pytest.raises(PartError, match="lasts") as raised:
        part(max_seconds=1.0).decode(clip, "video/mp4", None, LIMITS)
    assert raised.value.code == "too_large"


def test_frames_past_the_pixel_limit_are_too_large(clip):
    """A frame size past `max_frame_pixels` (or the core's max_pixels) is refused before any frame is decoded."""
    with pytest.raises(PartError, match="480x240") as raised:
        part(max_frame_pixels=480 * 240 - 1).decode(clip, "video/mp4", None, LIMITS)
    assert raised.value.code == "too_large"


def test_the_sound_is_cut_at_the_cores_audio_limit(clip):
    """No more sound is kept than `limits.max_audio_seconds`."""
    short = PartLimits(LIMITS.max_bytes, LIMITS.max_decoded_bytes, LIMITS.max_pixels, max_audio_seconds=0.5)
    assert part().decode(clip, "video/mp4", None, short).value.samples.size == 8000


def test_the_description_fuses_frames_and_speech_with_timestamps(clip):
    """What the image path says about each frame and what ASR heard come together, each with its time."""
    decoded = part(frames=2).decode(clip, "video/mp4", None, LIMITS)
    tools = WorkingTools()
    text = asyncio.run(part().describe(decoded, tools))
    assert text == 'a 2.0 s video, 480x240; at 0.5 s: a test picture; at 1.5 s: a test picture; speech 0.0-2.0 s: "words from the test ASR"'
    assert tools.images_seen == 2 and tools.sounds_heard == 1


def test_a_failing_recognizer_loses_only_the_speech(clip):
    """When ASR raises, the frames are still described and the description says the speech was lost."""
    decoded = part(frames=1).decode(clip, "video/mp4", None, LIMITS)
    text = asyncio.run(part().describe(decoded, FailingTools()))
    assert text.startswith("a 2.0 s video, 480x240; at 1.0 s: nothing recognized; speech could not be transcribed")
