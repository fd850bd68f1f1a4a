"""Wyoming with the real offline engines (Whisper tiny.en, the Piper voice, SmolLM2), driven as Home Assistant drives it."""

from __future__ import annotations

import asyncio
import re
import wave

import jiwer
import pytest
import pytest_asyncio
from wyoming.asr import Transcribe, Transcript
from wyoming.client import AsyncTcpClient
from wyoming.handle import Handled
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from assistant import audio
from assistant.server import serve_app
from tests.assistant.dialects.wyoming.conftest import WYOMING, Heard, read_until, send_audio, wyoming_port
from tests.conftest import REPO, make_config

pytestmark = [pytest.mark.offline_model, pytest.mark.asyncio(loop_scope="module")]

CAPITAL = REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav"
REPLY = ["The meeting has been ", "moved to Thursday afternoon. ", "Your package should arrive ", "by the end of the week."]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def speech_server(tmp_path_factory):
    """One server for the module: the offline defaults (Whisper tiny.en, the Piper voice, SmolLM2) and the Wyoming listener on port 0."""
    config = make_config(
        tmp_path_factory.mktemp("wyoming"), engines={"asr": "faster_whisper", "speech_synthesizer": "piper", "dialogue": "transformers"},
        plugins={"transformers_dialogue": {"max_new_tokens": 40}}, wyoming=WYOMING,
    )
    server = await serve_app(config)
    yield server
    await server.shutdown(grace_s=0)


async def hear(server, heard: Heard) -> str:
    """What Whisper (the server's own ASR engine) hears in synthesized audio."""
    samples = audio.decode(heard.pcm, "pcm16", heard.start.rate)
    return (await asyncio.to_thread(server.app.engines["asr"].transcribe, samples)).text


async def test_a_spoken_question_is_transcribed_at_16_khz_and_at_the_rate_it_was_recorded(speech_server):
    """'What is the capital of France?' sent as Home Assistant sends the microphone (16 kHz, 16-bit mono, in chunks) and at the
    recording's own 22.05 kHz: both transcripts say it."""
    with wave.open(str(CAPITAL)) as recording:
        rate, pcm = recording.getframerate(), recording.readframes(recording.getnframes())
    at_16k = (audio.decode(pcm, "pcm16", rate) * 32767).astype("<i2").tobytes()
    for data, data_rate in ((at_16k, 16000), (pcm, rate)):
        async with AsyncTcpClient("127.0.0.1", wyoming_port(speech_server)) as client:
            await client.write_event(Transcribe(language="en").event())
            await send_audio(client, data, rate=data_rate)
            events = await read_until(client, "transcript-stop")
        assert [e.type for e in events] == ["transcript-start", "transcript-chunk", "transcript", "transcript-stop"]
        text = Transcript.from_event(events[2]).text
        print(f"{data_rate} Hz -> {text!r}")
        assert words(text) == "what is the capital of france"


async def test_synthesize_speaks_text_that_whisper_hears_back(speech_server):
    """A one-shot synthesize: audio-start with the voice's rate, 16-bit mono audio that Whisper transcribes to the same words."""
    async with AsyncTcpClient("127.0.0.1", wyoming_port(speech_server)) as client:
        await client.write_event(Synthesize(text="".join(REPLY)).event())
        heard = Heard(await read_until(client, "audio-stop"))
    voice = speech_server.app.engines["speech_synthesizer"].voices()[0]
    assert (heard.start.rate, heard.start.width, heard.start.channels) == (voice.sample_rate, 2, 1)
    said = await hear(speech_server, heard)
    print(f"one-shot -> {said!r}")
    assert jiwer.wer(words("".join(REPLY)), words(said)) <= 0.25


async def test_streamed_synthesis_speaks_each_sentence_once(speech_server):
    """A streamed synthesis as Home Assistant sends it (chunks, then the whole text again, then stop): the audio starts
    before the text is complete, and Whisper hears the reply once, not twice."""
    async with AsyncTcpClient("127.0.0.1", wyoming_port(speech_server)) as client:
        await client.write_event(SynthesizeStart().event())
        for piece in REPLY[:2]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        early = await read_until(client, "audio-chunk")
        for piece in REPLY[2:]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text="".join(REPLY)).event())
        await client.write_event(SynthesizeStop().event())
        heard = Heard(early + await read_until(client, "synthesize-stopped"))
    assert heard.types[:2] == ["audio-start", "audio-chunk"] and heard.types[-2:] == ["audio-stop", "synthesize-stopped"]
    said = await hear(speech_server, heard)
    print(f"streamed -> {said!r}")
    assert words(said).count("thursday") == 1 and jiwer.wer(words("".join(REPLY)), words(said)) <= 0.25


async def test_a_voice_pipeline_as_home_assistant_runs_it_answers_paris(speech_server):
    """Speech to text, the conversation agent, then text to speech, each on its own connection as Home Assistant's pipeline
    makes them: the spoken capital question is heard, SmolLM2 answers with Paris, and Whisper hears Paris in the spoken answer."""
    with wave.open(str(CAPITAL)) as recording:
        rate, pcm = recording.getframerate(), recording.readframes(recording.getnframes())
    port = wyoming_port(speech_server)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, pcm, rate=rate)
        question = Transcript.from_event((await read_until(client, "transcript"))[-1]).text
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text=question, context={"conversation_id": "01JPIPELINE"}, language="en").event())
        answer = Handled.from_event((await read_until(client, "handled"))[-1]).text
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=answer).event())
        heard = Heard(await read_until(client, "audio-stop"))
    said = await hear(speech_server, heard)
    print(f"{question!r} -> {answer!r} -> {said!r}")
    assert "Paris" in answer and "paris" in words(said)
