"""The video example package under examples/: installed with pip, a generated clip's frames and speech reach the model.

The clip is made here with PyAV: two large signs drawn with Pillow, over a real recording of speech
(tests/data/speech). The server runs the real image path (RapidOCR and the ImageNet labels) and the
real Whisper tiny.en ASR, so the fused description is checked for what they actually read and heard.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from assistant import audio
from tests.conftest import REPO, make_config
from tests.examples.installing import install_example, load_helper, run_package_tests
from tests.fakes import FakeEnginesPlugin

SPEECH = REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, source copy) of examples/video-parts installed by pip."""
    return install_example("video-parts", "assistant_video_parts", tmp_path_factory)


@pytest.fixture(scope="module")
def clip(installed) -> bytes:
    """A 2 s MP4: a HELLO sign, then a yellow OPEN sign, over "What is the capital of France?" (padded with silence)."""
    samples = load_helper(installed[1], "video_samples")
    speech = audio.decode(SPEECH.read_bytes(), "wav")
    sound = np.concatenate([speech, np.zeros(max(0, 32_000 - speech.size), dtype=np.float32)])[:32_000]
    return samples.make_video([samples.sign_frame("HELLO"), samples.sign_frame("OPEN", "yellow")], 1.0, sound)


def test_the_package_passes_its_own_tests_and_the_conformance_suite(installed):
    """The package's tests, the backend's part-type conformance suite among them, pass against the installed package."""
    result = run_package_tests(*installed)
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("registers_one_valid_part_type", "samples_decode_within_the_limits", "garbage_is_a_part_error", "a_part_past_max_bytes_is_too_large"):
        assert f"TestVideoConformance::test_{check} PASSED" in result.stdout


@pytest.mark.offline_model
async def test_a_videos_frames_and_speech_reach_the_model_and_the_stored_turn(installed, clip, monkeypatch, start_server, connect_client, tmp_path, engine):
    """OCR of the kept frames and Whisper's transcript of the sound track are fused, with timestamps, into the context and history."""
    monkeypatch.syspath_prepend(str(installed[0]))
    config = make_config(
        tmp_path, engines={"asr": "faster_whisper"},
        plugins={"deny": ["clip_image"], "video_parts": {"frames": 2}},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    assert {p.name: p.plugin for p in server.app.registrations.part_types} == {"video": "video_parts"}
    assert {m.name for m in server.app.modalities} == {"ocr", "labels"}
    async with connect_client(server) as client:
        await client.start()
        part = {"type": "video", "data": base64.b64encode(clip).decode(), "mime": "video/mp4", "language": "en"}
        events = await client.say_parts([part, {"type": "text", "text": "What happens in it?"}])
        assert events[-1]["status"] == "completed"
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
    content = engine.requests[-1].messages[-1].content
    line, words = content.rsplit("\n", 1)
    assert words == "What happens in it?" and line.startswith("[Video 1: a 2.0 s video, 480x240; at 0.5 s: text read in it: ")
    first, second, speech = line.split("; at ")[1], line.split("; at ")[2], line.rsplit("; ", 1)[1]
    assert "HELLO" in first.upper() and second.startswith("1.5 s:") and "OPEN" in second.upper()
    assert speech.startswith('speech 0.0-2.0 s: "') and "capital of france" in speech.lower()
    assert [p["type"] for p in turn["content"]] == ["video", "text", "video_text"]
    assert turn["content"][2]["text"] == line[len("[Video 1: ") : -1]
    assert await server.app.store.attachment(turn["content"][0]["sha256"]) == ("video/mp4", clip)
    assert server.app.media.used == 0
