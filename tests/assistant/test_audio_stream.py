"""Streamed speech over the websocket: audio.append and binary frames, server VAD, partial transcripts."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from assistant import audio
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

CAPITAL = audio.decode((REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav").read_bytes(), "wav")


def pcm16(samples: np.ndarray, rate: int = 16000) -> bytes:
    if rate != 16000:
        index = np.arange(0, samples.size, 16000 / rate).astype(int)
        samples = samples[index]
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def utterance(lead_s: float = 0.5, tail_s: float = 1.2) -> np.ndarray:
    silence = np.zeros(int(16000 * lead_s), dtype=np.float32)
    return np.concatenate([silence, CAPITAL, np.zeros(int(16000 * tail_s), dtype=np.float32)])


@pytest.fixture
async def speech_server(start_server, tmp_path):
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, speech={"partial_interval_s": 0.8})
    return await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))


async def test_streamed_speech_with_vad_commits_itself(speech_server, connect_client):
    """100 ms chunks at microphone pace give speech.started, a transcript.delta, speech.stopped, transcript.done and a reply, with no audio.commit."""
    async with connect_client(speech_server) as client:
        await client.start()
        data = pcm16(utterance())
        chunk = 3200  # 100 ms of 16 kHz PCM16
        for start in range(0, len(data), chunk):
            await client.send({"type": "audio.append", "data": base64.b64encode(data[start:start + chunk]).decode()})
            await asyncio.sleep(0.1)
        events = await client.recv_until("response.done")
    types = [e["type"] for e in events]
    assert types.index("speech.started") < types.index("speech.stopped") < types.index("transcript.done")
    deltas = [e for e in events if e["type"] == "transcript.delta"]
    assert deltas and types.index("transcript.delta") < types.index("speech.stopped")
    started = next(e for e in events if e["type"] == "speech.started")
    stopped = next(e for e in events if e["type"] == "speech.stopped")
    assert 300 <= started["audio_start_ms"] <= 600 and 2100 <= stopped["audio_end_ms"] <= 2600
    done = next(e for e in events if e["type"] == "transcript.done")
    assert all(d["turn_id"] == done["turn_id"] for d in deltas)
    assert "capital" in done["text"].lower() and "france" in done["text"].lower()
    assert events[-1]["text"] == f"You said: {done['text']}"


async def test_binary_frames_at_the_session_rate_with_manual_commit(speech_server, connect_client):
    """With VAD off and an 8 kHz session, binary PCM16 frames then audio.commit make a transcribed turn."""
    async with connect_client(speech_server) as client:
        await client.send({"type": "session.start", "vad": False, "sample_rate": 8000})
        await client.recv_until("session.started")
        data = pcm16(CAPITAL, rate=8000)
        for start in range(0, len(data), 1600):
            await client.send(data[start:start + 1600])
        await client.send({"type": "audio.commit", "event_id": "c"})
        events = await client.recv_until("response.done")
    assert not any(e["type"].startswith("speech.") for e in events)
    done = next(e for e in events if e["type"] == "transcript.done")
    assert "capital" in done["text"].lower() and done["duration_s"] == pytest.approx(1.776, abs=0.05)


async def test_audio_clear_drops_the_buffer(speech_server, connect_client):
    """audio.clear forgets what was appended: a commit right after has nothing to commit."""
    async with connect_client(speech_server) as client:
        await client.send({"type": "session.start", "vad": False})
        await client.recv_until("session.started")
        await client.send(pcm16(CAPITAL))
        await client.send({"type": "audio.clear"})
        await client.send({"type": "audio.commit", "event_id": "c"})
        error = await client.recv()
        assert error["code"] == "bad_request" and "no audio to commit" in error["message"] and error["ref"] == "c"


async def test_buffer_and_length_limits_answer_too_large(start_server, connect_client, tmp_path):
    """Past max_buffer_bytes (or max_seconds) streamed audio answers too_large and the buffer is cleared."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, speech={"max_buffer_bytes": 8000, "max_seconds": 1.0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "vad": False})
        await client.recv_until("session.started")
        await client.send(b"\x00\x01" * 3000)
        await client.send({"type": "audio.append", "event_id": "big", "data": base64.b64encode(b"\x00\x01" * 3000).decode()})
        error = await client.recv()
        assert error["code"] == "too_large" and error["ref"] == "big"
        await client.send(b"\x00\x01" * 5)
        await client.send(b"\x00\x01\x02")
        error = await client.recv()
        assert error["code"] == "bad_request" and "even number" in error["message"]


async def test_streaming_before_session_start_is_refused(speech_server, connect_client):
    """Audio before session.start answers bad_request."""
    async with connect_client(speech_server) as client:
        await client.send({"type": "audio.append", "event_id": "a", "data": "AAAA"})
        error = await client.recv()
        assert error["code"] == "bad_request" and "session.start" in error["message"]


async def test_loading_speech_models_leaves_torch_threads_alone(start_server, tmp_path):
    """Starting ASR and VAD does not change PyTorch's thread count (importing silero_vad would set it to 1)."""
    import torch

    before = torch.get_num_threads()
    server = await start_server(make_config(tmp_path, engines={"asr": "faster_whisper"}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert server.app.vad is not None and torch.get_num_threads() == before
