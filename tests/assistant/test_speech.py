"""Speech turns over the websocket: audio parts, transcripts, storage and bad audio."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

SPEECH = REPO / "tests" / "data" / "speech"
CAPITAL = (SPEECH / "what_is_the_capital_of_france.wav").read_bytes()


def audio_part(data: bytes, fmt: str = "wav", **extra) -> dict:
    return {"type": "audio", "data": base64.b64encode(data).decode(), "format": fmt, **extra}


def silence_wav(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.zeros(int(16000 * seconds), dtype="<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture
async def speech_server(start_server, tmp_path):
    config = make_config(tmp_path, engines={"asr": "faster_whisper"})
    return await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))


async def test_a_wav_part_is_transcribed_stored_and_answered(speech_server, connect_client):
    """A WAV part gives turn.created, transcript.done, then a reply to the transcript; history keeps audio and transcript."""
    async with connect_client(speech_server) as client:
        started = await client.start()
        assert started["capabilities"]["asr"] == "faster-whisper:tiny.en"
        events = await client.say_parts([audio_part(CAPITAL)])
        types = [e["type"] for e in events]
        assert types[:3] == ["turn.created", "transcript.done", "response.created"]
        transcript = events[1]
        assert transcript["turn_id"] == events[0]["turn_id"] and transcript["language"] == "en"
        assert "capital" in transcript["text"].lower() and "france" in transcript["text"].lower()
        assert transcript["duration_s"] == pytest.approx(1.776, abs=0.01)
        assert events[-1]["text"] == f"You said: {transcript['text']}"
        await client.send({"type": "conversation.get"})
        user = (await client.recv_until("conversation.history"))[-1]["turns"][0]
        kinds = [p["type"] for p in user["content"]]
        assert kinds == ["audio", "transcript"] and user["content"][0]["mime"] == "audio/wav"
        assert user["content"][1]["text"] == transcript["text"]


async def test_text_and_audio_parts_reach_the_dialogue_together(speech_server, connect_client):
    """A turn with text and audio gives the engine the text and the transcript in one user message."""
    async with connect_client(speech_server) as client:
        await client.start()
        events = await client.say_parts([{"type": "text", "text": "Listen:"}, audio_part(CAPITAL)])
        assert events[-1]["text"].startswith("You said: Listen:\nWhat is the capital of France")


async def test_silence_gives_an_empty_transcript_and_no_reply(speech_server, connect_client):
    """Pure silence is transcribed as empty text; no reply follows and the connection goes on."""
    async with connect_client(speech_server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [audio_part(silence_wav())]})
        events = [await client.recv(), await client.recv()]
        assert [e["type"] for e in events] == ["turn.created", "transcript.done"] and events[1]["text"] == ""
        assert (await client.say("still there?"))[-1]["status"] == "completed"


@pytest.mark.parametrize(
    ("part", "code", "needle"),
    [
        (audio_part(b"not a wav file at all" * 10), "bad_request", "cannot decode"),
        (audio_part(CAPITAL[:40]), "bad_request", "cannot decode"),
        ({"type": "audio", "data": "", "format": "wav"}, "bad_request", "empty"),
        (audio_part(b"\x00\x00" * 800, "pcm16", sample_rate=1), "bad_request", "sample rate"),
        ({"type": "audio", "data": "!!!not base64!!!", "format": "wav"}, "bad_request", "base64"),
        ({"type": "audio", "data": "AAAA", "format": "aiff"}, "bad_request", "format"),
        (audio_part(CAPITAL, "mp3"), "bad_request", "not mp3"),
    ],
)
async def test_bad_audio_answers_an_error_and_stores_nothing(speech_server, connect_client, part, code, needle):
    """Not-WAV bytes, truncated headers, empty data, absurd rates, bad base64 and wrong format names answer an error."""
    async with connect_client(speech_server) as client:
        await client.start()
        await client.send({"type": "turn.create", "event_id": "a", "content": [part]})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code and needle in error["message"] and error["ref"] == "a"
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []


async def test_audio_longer_than_the_limit_is_too_large(start_server, connect_client, tmp_path):
    """Audio past [speech] max_seconds answers too_large."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, speech={"max_seconds": 1.0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [audio_part(CAPITAL)]})
        error = await client.recv()
        assert error["code"] == "too_large" and "1 s" in error["message"]


async def test_store_audio_off_keeps_the_transcript_only(start_server, connect_client, tmp_path):
    """With [speech] store_audio = false the audio part is kept as a marker without bytes."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, speech={"store_audio": False})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([audio_part(CAPITAL)])
        await client.send({"type": "conversation.get"})
        user = (await client.recv_until("conversation.history"))[-1]["turns"][0]
        assert user["content"][0] == {"type": "audio"} and user["content"][1]["type"] == "transcript"


async def test_audio_without_an_asr_engine_is_unavailable(server, connect_client):
    """With no ASR engine configured, an audio part answers unavailable."""
    async with connect_client(server) as client:
        assert (await client.start())["capabilities"]["asr"] is None
        await client.send({"type": "turn.create", "content": [audio_part(CAPITAL)]})
        error = await client.recv()
        assert error["code"] == "unavailable" and "[engines] asr" in error["message"]


@pytest.mark.offline_model
async def test_spoken_capital_question_is_answered_with_paris(start_server, connect_client, tmp_path):
    """With offline tiny.en and SmolLM2, the spoken question gives a transcript with capital and France and a reply with Paris."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper", "dialogue": "transformers"},
                         plugins={"transformers_dialogue": {"max_new_tokens": 40}})
    server = await start_server(config)
    async with connect_client(server) as client:
        await client.start()
        events = await client.say_parts([audio_part(CAPITAL)])
        transcript = next(e for e in events if e["type"] == "transcript.done")
        assert "capital" in transcript["text"].lower() and "france" in transcript["text"].lower()
        assert events[-1]["status"] == "completed" and "Paris" in events[-1]["text"]
