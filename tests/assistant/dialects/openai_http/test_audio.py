"""Transcriptions and speech over the OpenAI dialect: the offline Whisper and Piper voice, with the `openai` SDK as the client."""

from __future__ import annotations

import base64
import io
import json
import re

import jiwer
import numpy as np
import openai
import pytest
import pytest_asyncio

from assistant import audio
from assistant.server import serve_app
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue
from tests.plugins.test_piper_voice import normalized

pytestmark = [pytest.mark.offline_model, pytest.mark.asyncio(loop_scope="module")]

SPEECH = REPO / "tests" / "data" / "speech"
CAPITAL = (SPEECH / "what_is_the_capital_of_france.wav").read_bytes()
SAID = "The capital of France is Paris. Your package should arrive by the end of the week."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory):
    """One server for the module: Whisper tiny.en, the Piper voice, a fake dialogue engine."""
    config = make_config(tmp_path_factory.mktemp("openai-audio"), engines={"asr": "faster_whisper", "speech_synthesizer": "piper"})
    served = await serve_app(config, (FakeEnginesPlugin(ScriptedDialogue()),))
    yield served
    await served.shutdown(grace_s=0)


@pytest.fixture
def client(server):
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=120)


def heard(text: str) -> str:
    return normalized(text)


@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json", "srt", "vtt"])
async def test_a_spoken_phrase_is_transcribed_in_every_format(client, response_format):
    """A real recording comes back as its words in json, text, verbose_json (language, duration, timed segments), srt and vtt."""
    result = await client.audio.transcriptions.create(
        model="asr", file=("question.wav", CAPITAL), response_format=response_format, language="en", prompt="geography",
    )
    if response_format in ("json", "verbose_json"):
        assert heard(result.text) == "what is the capital of france"
    else:
        assert isinstance(result, str) and "capital of France" in result
    if response_format == "verbose_json":
        assert result.language == "en" and result.duration == pytest.approx(1.776, abs=0.01)
        assert result.segments and 0 <= result.segments[0].start < result.segments[-1].end <= 1.8
    if response_format == "srt":
        assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:0\d,\d{3}\nWhat is the capital of France\?\n", result)
    if response_format == "vtt":
        assert re.match(r"WEBVTT\n\n00:00:0\d\.\d{3} --> 00:00:0\d\.\d{3}\nWhat is the capital of France\?\n", result)


async def test_other_containers_are_transcribed(client, server):
    """The same phrase as Ogg/Opus, named by nothing but its bytes, is transcribed too."""
    samples = audio.decode(CAPITAL, "wav")
    from assistant.dialects.openai_http.audio_encoding import AudioEncoder

    encoder = AudioEncoder("opus", 16000)
    ogg = encoder.push((samples * 32767).astype("<i2").tobytes()) + encoder.finish()
    result = await client.audio.transcriptions.create(model="faster-whisper:tiny.en", file=("clip", ogg))
    assert heard(result.text) == "what is the capital of france"


async def test_a_chat_message_with_input_audio_is_transcribed_for_the_engine(client):
    """An `input_audio` part is transcribed by Whisper and reaches the dialogue engine as the user's words."""
    reply = await client.chat.completions.create(model="dialogue", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(CAPITAL).decode(), "format": "wav"}}]}])
    assert heard(reply.choices[0].message.content) == "you said what is the capital of france"


def decode(data: bytes, response_format: str) -> np.ndarray:
    """16 kHz samples of speech audio in any format /v1/audio/speech makes."""
    if response_format == "pcm":
        return audio.decode(data, "pcm16", 24000)
    if response_format in ("wav", "mp3", "flac"):
        return audio.decode(data, response_format)
    if response_format == "opus":
        return audio.decode(data, "ogg")
    import av

    with av.open(io.BytesIO(data)) as container:  # aac (ADTS) is not a format clients send us
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


@pytest.mark.parametrize("response_format", ["wav", "mp3", "opus", "aac", "flac", "pcm"])
async def test_speech_streams_audio_that_whisper_hears_back(client, server, response_format):
    """Two sentences spoken by the Piper voice, streamed in each format, are transcribed back by Whisper."""
    async with client.audio.speech.with_streaming_response.create(
        model="speech_synthesizer", voice="en_US-joe-medium", input=SAID, response_format=response_format,
    ) as response:
        assert response.headers["content-type"].startswith("audio/")
        chunks = [chunk async for chunk in response.iter_bytes()]
    samples = decode(b"".join(chunks), response_format)
    assert 3.0 < len(samples) / 16000 < 10.0
    transcript = server.app.engines["asr"].transcribe(samples).text
    assert jiwer.wer(heard(SAID), heard(transcript)) <= 0.25, transcript


@pytest.mark.parametrize("response_format", ["pcm", "mp3"])
async def test_speed_changes_the_pace_and_keeps_the_words(client, server, response_format):
    """speed 1.5 makes speech about two thirds as long (atempo keeps the pitch), and Whisper still hears the words."""
    lengths = {}
    for speed in (1.0, 1.5):
        spoken = await client.audio.speech.create(
            model="speech_synthesizer", voice="en_US-joe-medium", input=SAID, response_format=response_format, speed=speed,
        )
        samples = decode(spoken.content, response_format)
        lengths[speed] = len(samples)
        assert jiwer.wer(heard(SAID), heard(server.app.engines["asr"].transcribe(samples).text)) <= 0.25
    assert lengths[1.5] / lengths[1.0] == pytest.approx(1 / 1.5, abs=0.05)


async def test_speech_as_server_sent_events(client, server):
    """stream_format sse sends speech.audio.delta events with base64 audio, then speech.audio.done."""
    async with client.audio.speech.with_streaming_response.create(
        model="speech_synthesizer", voice={"id": "en_US-joe-medium"}, input="Hello there.", response_format="pcm", stream_format="sse",
    ) as response:
        events = [json.loads(line[len("data: "):]) async for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done" and {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert heard(server.app.engines["asr"].transcribe(audio.decode(pcm, "pcm16", 24000)).text) == "hello there"


def envelope(error: openai.APIStatusError) -> dict:
    body = error.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [({"voice": "alloy"}, 400, "voice"), ({"model": "tts-1"}, 404, "model"), ({"model": "asr"}, 400, "model"),
     ({"speed": 5.0}, 400, "speed"), ({"input": ""}, 400, "input"), ({"input": "🙂 🙂"}, 400, "input"),
     ({"response_format": "ogg"}, 400, "response_format"), ({"input": "x" * 5000}, 400, "input")],
)
async def test_bad_speech_requests_are_refused(client, kwargs, status, param):
    """Unknown voices and models, another role's model, a speed out of range, nothing to say, unknown formats: OpenAI-shaped errors."""
    with pytest.raises(openai.APIStatusError) as refused:
        await client.audio.speech.create(**{"model": "speech_synthesizer", "voice": "en_US-joe-medium", "input": "Hi.", **kwargs})
    assert refused.value.status_code == status and envelope(refused.value)["param"] == param


async def test_bad_uploads_are_refused_and_the_server_keeps_serving(client):
    """Not audio, an empty file, a missing file, an unknown model or format, broken multipart, a JSON body and a 50 MB upload:
    each its status in OpenAI's shape; then a transcription succeeds."""
    with pytest.raises(openai.BadRequestError) as refused:
        await client.audio.transcriptions.create(model="asr", file=("notes.txt", b"this is not audio at all"))
    assert envelope(refused.value)["param"] == "file"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.audio.transcriptions.create(model="asr", file=("broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk"))
    assert envelope(refused.value)["param"] == "file"
    with pytest.raises(openai.BadRequestError):
        await client.audio.transcriptions.create(model="asr", file=("empty.wav", b""))
    with pytest.raises(openai.NotFoundError):
        await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", CAPITAL))
    with pytest.raises(openai.BadRequestError) as refused:
        await client.audio.transcriptions.create(model="asr", file=("q.wav", CAPITAL), response_format="xml")  # type: ignore[arg-type]
    assert envelope(refused.value)["param"] == "response_format"
    no_file = await raw(client, b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nasr\r\n--b--\r\n", "multipart/form-data; boundary=b")
    assert no_file.status_code == 400 and envelope(no_file)["param"] == "file"
    broken = await raw(client, b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF", "multipart/form-data; boundary=b")
    assert broken.status_code == 400
    no_boundary = await raw(client, b"whatever", "multipart/form-data")
    assert no_boundary.status_code == 400 and envelope(no_boundary)["code"] == "invalid_multipart"
    as_json = await raw(client, b'{"model": "asr"}', "application/json")
    assert as_json.status_code == 415
    with pytest.raises(openai.APIStatusError) as huge:
        await client.audio.transcriptions.create(model="asr", file=("huge.wav", b"RIFF" + bytes(50 * 1024 * 1024)))
    assert huge.value.status_code == 413 and envelope(huge.value)["code"] == "request_too_large"
    result = await client.audio.transcriptions.create(model="asr", file=("question.wav", CAPITAL))
    assert heard(result.text) == "what is the capital of france"


async def raw(client: openai.AsyncOpenAI, body: bytes, content_type: str) -> openai.APIStatusError:
    """POST raw bytes to /v1/audio/transcriptions through the SDK's low-level client; the refusal it raises.

    The SDK rebuilds any body it sees as `multipart/form-data`; a media type is case-insensitive, so
    `Multipart/Form-Data` sends the bytes as they are and the server still reads them as a form.
    """
    content_type = content_type.replace("multipart/form-data", "Multipart/Form-Data")
    with pytest.raises(openai.APIStatusError) as refused:
        await client.post("/audio/transcriptions", cast_to=object, content=body, options={"headers": {"Content-Type": content_type}})
    return refused.value
