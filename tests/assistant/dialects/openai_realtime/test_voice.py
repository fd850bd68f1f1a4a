"""Voice over the Realtime API: spoken phrases in at 24 kHz, server VAD, Whisper transcripts, spoken answers, barge-in."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from assistant import audio
from tests.assistant.dialects.openai_realtime.realtime import check_lifecycle, open_realtime, pcm24k
from tests.assistant.dialects.openai_realtime.test_realtime import sdk, until
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToneVoice

SPEECH = REPO / "tests" / "data" / "speech"
PHRASES = json.loads((SPEECH / "phrases.json").read_text())
CHUNK = 4800  # bytes: 100 ms of PCM16 at 24 kHz


def spoken(name: str, lead_s: float = 0.3, tail_s: float = 1.2) -> bytes:
    """A phrase from tests/data/speech as 24 kHz PCM16, with silence before and after (so the VAD hears it end)."""
    def silence(seconds: float) -> bytes:
        return bytes(2 * int(24000 * seconds))

    return silence(lead_s) + pcm24k((SPEECH / name).read_bytes()) + silence(tail_s)


def words(text: str) -> list[str]:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split()


@pytest.mark.offline_model
async def test_a_voice_turn_through_the_sdk(start_server, tmp_path):
    """The SDK streams a spoken question at 24 kHz; server VAD commits it, Whisper transcribes it, the answer comes as text and
    Piper speech at 24 kHz, and Whisper hears the spoken answer say what its transcript says."""
    import jiwer

    config = make_config(tmp_path, engines={"asr": "faster_whisper", "speech_synthesizer": "piper"}, speech={"partial_interval_s": 0.8})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    seen: list[dict[str, Any]] = []
    data = spoken("what_is_the_capital_of_france.wav")
    async with sdk(server.port) as connection:
        created = await until(connection, "session.created", seen)
        session = created["session"]
        assert session["output_modalities"] == ["audio"] and session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        await connection.session.update(session={
            "type": "realtime", "output_modalities": ["audio"], "instructions": "Answer briefly.",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad"}},
                      "output": {"voice": "alloy"}},
        })
        updated = await until(connection, "session.updated", seen)
        assert updated["session"]["audio"]["output"]["voice"] == "en_US-joe-medium"
        for start in range(0, len(data), CHUNK):
            await connection.input_audio_buffer.append(audio=base64.b64encode(data[start:start + CHUNK]).decode())
        transcribed = await until(connection, "conversation.item.input_audio_transcription.completed", seen)
        done = await until(connection, "response.done", seen)
    check_lifecycle(seen)
    kinds = [e["type"] for e in seen]
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
             "conversation.item.input_audio_transcription.completed", "response.created", "response.output_audio.delta", "response.done"]
    assert [kinds.index(kind) for kind in order] == sorted(kinds.index(kind) for kind in order)
    item_id = transcribed["item_id"]
    assert all(e["item_id"] == item_id for e in seen if e["type"].startswith("input_audio_buffer.") and "item_id" in e)
    assert words(transcribed["transcript"]) == words(PHRASES["what_is_the_capital_of_france.wav"])
    deltas = [e for e in seen if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert deltas and all(e["item_id"] == item_id for e in deltas), "partial transcripts while the phrase was spoken"
    answer = done["response"]["output"][0]["content"][0]
    assert done["response"]["status"] == "completed" and answer["type"] == "output_audio"
    assert answer["transcript"] == f"You said: {transcribed['transcript']}"
    pcm = b"".join(base64.b64decode(e["delta"]) for e in seen if e["type"] == "response.output_audio.delta")
    asr = server.app.engines["asr"]
    heard = await asyncio.to_thread(asr.transcribe, audio.decode(pcm, "pcm16", 24000), "en")
    error = jiwer.wer(" ".join(words(answer["transcript"])), " ".join(words(heard.text)))
    print(f"\nspoken answer {answer['transcript']!r} heard as {heard.text!r}: WER {error:.2f}")
    assert error <= 0.25


async def test_talking_over_a_spoken_response_cuts_it_to_what_was_played(start_server, tmp_path):
    """Speech starting while a response speaks cancels it (turn_detected), its item keeps what was heard, truncate narrows that to
    what was played, and the utterance is answered."""
    voice = ToneVoice(pace_s=0.1)
    story = [f" Sentence number {i} is here." for i in range(1, 30)]
    engine = ScriptedDialogue(script=lambda request: story if "story" in request.messages[-1].content else [" Paris."])
    config = make_config(tmp_path, engines={"asr": "faster_whisper", "speech_synthesizer": "fake"}, speech={"partial_interval_s": 0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, voice=voice),))
    data = spoken("what_is_the_capital_of_france.wav", lead_s=1.0)  # a sentence of the story is said before the user talks
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me a story"}]}})
        await client.send({"type": "response.create"})
        await client.recv_until("response.output_audio.delta")
        for start in range(0, len(data), CHUNK):
            await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data[start:start + CHUNK]).decode()})
            await asyncio.sleep(0.1)  # a microphone's pace
        cut = None
        while cut is None or client.events[-1]["type"] != "response.done" or client.events[-1]["response"]["id"] == cut["id"]:
            event = await client.recv()
            if event["type"] == "response.done" and cut is None:
                cut = event["response"]
        answer = client.events[-1]["response"]
        assert cut["status"] == "cancelled" and cut["status_details"]["reason"] == "turn_detected"
        story_item = cut["output"][0]
        heard = story_item["content"][0]["transcript"]
        assert story_item["status"] == "incomplete" and heard.startswith("Sentence number 1") and len(heard.split()) < 5 * 29
        transcript = next(e for e in client.events if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert "capital" in transcript["transcript"].lower() and answer["output"][0]["content"][0]["transcript"] == " Paris."
        await client.send({"type": "conversation.item.truncate", "item_id": story_item["id"], "content_index": 0, "audio_end_ms": 300})
        truncated = (await client.recv_until("conversation.item.truncated"))[-1]
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (story_item["id"], 300)
        await client.send({"type": "conversation.item.retrieve", "item_id": story_item["id"]})
        item = (await client.recv_until("conversation.item.retrieved"))[-1]["item"]
        assert item["content"][0]["transcript"] == "Sentence number 1"  # 3 of the first sentence's 5 words (100 ms each)
        await client.send({"type": "conversation.item.truncate", "item_id": story_item["id"], "content_index": 0, "audio_end_ms": 10**7})
        assert (await client.error())["param"] == "audio_end_ms"
    check_lifecycle(client.events)
    from tests.assistant.test_metrics import scrape

    metrics = await asyncio.to_thread(scrape, server.port)
    assert metrics[("assistant_voice_to_voice_seconds_count", ())] == 1, "the spoken answer to the utterance was timed"
    last_context = engine.requests[-1].messages
    assert [m.role for m in last_context][-3:] == ["user", "assistant", "user"] and last_context[-2].content == heard


async def test_manual_commit_and_clear_without_turn_detection(start_server, tmp_path):
    """With turn_detection null: appended audio waits for commit (then is transcribed, with no response), clear empties the buffer."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, speech={"partial_interval_s": 0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    data = spoken("turn_on_the_lights_in_the_kitchen.wav")
    async with open_realtime(server.port) as client:
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        assert (await client.recv_until("session.updated"))[-1]["session"]["audio"]["input"]["turn_detection"] is None
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data[:CHUNK]).decode()})
        await client.send({"type": "input_audio_buffer.clear"})
        await client.recv_until("input_audio_buffer.cleared")
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.error())["code"] == "input_audio_buffer_commit_empty"
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()})
        await client.send({"type": "input_audio_buffer.commit"})
        committed = (await client.recv_until("input_audio_buffer.committed"))[-1]
        done = (await client.recv_until("conversation.item.input_audio_transcription.completed"))[-1]
        assert done["item_id"] == committed["item_id"] and "kitchen" in done["transcript"].lower()
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        reply = (await client.recv_until("response.done"))[-1]["response"]
        assert reply["output"][0]["content"][0]["text"] == f"You said: {done['transcript']}"
        assert "input_audio_buffer.speech_started" not in [e["type"] for e in client.events]
    check_lifecycle(client.events)


async def test_an_audio_item_is_transcribed_when_created(start_server, tmp_path):
    """conversation.item.create with input_audio (base64 PCM16 24 kHz) gets its transcript; a response answers it."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    pcm = pcm24k((SPEECH / "what_is_the_weather_like_tomorrow.wav").read_bytes())
    async with open_realtime(server.port) as client:
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": base64.b64encode(pcm).decode()}]}})
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        seen = await client.recv_until("response.done")
        transcript = next(e for e in seen if e["type"] == "conversation.item.input_audio_transcription.completed")["transcript"]
        assert words(transcript) == words(PHRASES["what_is_the_weather_like_tomorrow.wav"])
        assert seen[-1]["response"]["output"][0]["content"][0]["text"] == f"You said: {transcript}"
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": base64.b64encode(b"\0").decode()}]}})
        assert (await client.error())["param"] == "item.content.0.audio"
    check_lifecycle(client.events)
