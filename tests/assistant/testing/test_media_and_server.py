"""The kit's part helpers and its server helpers: parts a real server takes, a server on port 0 that stops when the block ends."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from assistant import audio
from assistant.testing import media
from assistant.testing.fakes import FakeEnginesPlugin, FixedAsr, ScriptedDialogue
from assistant.testing.server import connect, running_server


@pytest.mark.parametrize("fmt", ["wav", "pcm16"])
def test_audio_parts_decode_to_the_samples_they_carry(fmt):
    """audio_part's WAV and PCM16 carry the tone: the core's decoder gives back the same samples (to PCM16 precision)."""
    samples = media.tone(0.5, 440)
    part = media.audio_part(samples, fmt=fmt)
    assert part["type"] == "audio" and part["format"] == fmt and part["sample_rate"] == 16000
    decoded = audio.decode(base64.b64decode(part["data"]), fmt, 16000)
    assert decoded.shape == samples.shape and np.abs(decoded - samples).max() < 1e-3


def test_image_input_is_what_a_modality_gets():
    """image_input gives an RGB image with EXIF orientation applied, its sha256 and 1-based index."""
    data = media.solid_image("blue", (30, 20), "JPEG")
    given = media.image_input(data, "image/jpeg", index=2)
    assert given.index == 2 and given.mime == "image/jpeg" and given.image.mode == "RGB" and given.image.size == (30, 20)
    assert len(given.sha256) == 64 and given.data == data


async def test_running_server_serves_an_audio_and_an_image_turn_and_stops(tmp_path):
    """A spoken turn and an image turn built by the kit reach the fake engines through a real server, which stops after the block."""
    engine = ScriptedDialogue()
    async with running_server(tmp_path, [FakeEnginesPlugin(engine, asr=FixedAsr("hello there"))], engines={"dialogue": "fake", "asr": "fake"},
                              plugins={"deny": ["rapid_ocr", "imagenet_labels", "clip_image"]}) as server:
        async with connect(server) as client:
            await client.start()
            spoken = await client.say_parts([media.audio_part(media.tone(1.0))])
            pictured = await client.say_parts([media.image_part(media.solid_image("red")), {"type": "text", "text": "and this?"}])
    assert [e["text"] for e in spoken if e["type"] == "transcript.done"] == ["hello there"]
    assert spoken[-1]["text"] == "You said: hello there" and pictured[-1]["status"] == "completed"
    assert server.stopped
