"""The Wyoming dialect driven by the `wyoming` package's AsyncTcpClient as Home Assistant's integration drives it (fake engines)."""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import async_read_event
from wyoming.handle import Handled
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from assistant.dialects.wyoming import SERVICE_TYPE, service_info
from assistant.dialects.wyoming.conversation import stored_id
from assistant.dialects.wyoming.handler import asr_language
from tests.assistant.dialects.wyoming.conftest import WYOMING, Heard, describe, read_until, send_audio, wyoming_port
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, FixedAsr, ScriptedDialogue, ToneVoice

TONE_BYTES_PER_WORD = 3200  # ToneVoice: 100 ms of 16 kHz PCM16 per word


@pytest.fixture
async def fakes():
    """The fake engines the `wyoming_server` serves: (dialogue, asr, voice)."""
    return ScriptedDialogue(), FixedAsr("turn on the kitchen light"), ToneVoice()


@pytest.fixture
async def wyoming_server(start_server, tmp_path, fakes):
    """A server with fake dialogue, ASR and speech engines and the Wyoming listener on port 0."""
    dialogue, asr, voice = fakes
    config = make_config(tmp_path, engines={"asr": "fake", "speech_synthesizer": "fake"}, wyoming=WYOMING)
    return await start_server(config, plugins=(FakeEnginesPlugin(dialogue, asr=asr, voice=voice),))


async def raw_exchange(port: int, data: bytes, half_close: bool = True) -> list:
    """Send raw bytes on a new connection and read the events the server answers until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if half_close:
        writer.write_eof()
    answered = []
    while (event := await asyncio.wait_for(async_read_event(reader), 30)) is not None:
        answered.append(event)
    assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the server
    writer.close()
    return answered


async def test_describe_answers_info_built_from_the_loaded_engines_within_home_assistants_second(wyoming_server):
    """describe gets info at once: an ASR program with its model, a TTS program with the voices, a handle program, streaming flags."""
    info = await describe(wyoming_port(wyoming_server))
    (asr,), (tts,), (handle,) = info.asr, info.tts, info.handle
    assert asr.installed and asr.models[0].name == "fake:asr" and "en" in asr.models[0].languages and asr.supports_transcript_streaming
    assert [(v.name, v.languages) for v in tts.voices] == [("low", ["en-US"]), ("high", ["en-GB"])]
    assert tts.installed and tts.supports_synthesize_streaming
    assert handle.installed and handle.supports_handled_streaming and handle.models[0].name == "fake:scripted"
    assert handle.models[0].languages == []  # Home Assistant then offers the agent for every language
    assert info.wake == [] and info.intent == []


async def test_a_server_without_speech_engines_describes_only_the_conversation(start_server, tmp_path):
    """With no ASR engine and no synthesizer, info lists only the handle program; audio for transcription is refused clearly."""
    server = await start_server(make_config(tmp_path, wyoming=WYOMING), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    port = wyoming_port(server)
    info = await describe(port)
    assert info.asr == [] and info.tts == [] and len(info.handle) == 1
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, bytes(3200))
        (error,) = await read_until(client, "transcript")
    assert Error.from_event(error).code == "unavailable" and "ASR engine" in Error.from_event(error).text


async def test_speech_to_text_streams_the_transcript_and_converts_other_formats(wyoming_server, fakes):
    """transcribe + audio at 16 kHz answers transcript-start, -chunk, transcript, -stop; 48 kHz stereo is converted to 16 kHz mono first."""
    _, asr, _ = fakes
    port = wyoming_port(wyoming_server)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en-US").event())
        await send_audio(client, (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes())
        events = await read_until(client, "transcript-stop")
    assert [e.type for e in events] == ["transcript-start", "transcript-chunk", "transcript", "transcript-stop"]
    assert Transcript.from_event(events[2]).text == "turn on the kitchen light" and events[1].data["text"] == "turn on the kitchen light"
    stereo = np.repeat((np.sin(np.arange(48000) / 15) * 8000).astype("<i2"), 2).tobytes()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await send_audio(client, stereo, rate=48000, channels=2)
        events = await read_until(client, "transcript")
    assert events[-1].type == "transcript" and asr.heard[-1] == pytest.approx(16000, abs=16)


async def test_synthesize_speaks_the_text_once_with_the_voice_asked_for(wyoming_server, fakes):
    """synthesize answers audio-start (rate, width, channels), the audio, audio-stop; the named voice speaks every sentence once."""
    _, _, voice = fakes
    async with AsyncTcpClient("127.0.0.1", wyoming_port(wyoming_server)) as client:
        await client.write_event(Synthesize(text="Hello there. How are you today?", voice=SynthesizeVoice(name="high")).event())
        heard = Heard(await read_until(client, "audio-stop"))
    assert heard.types[0] == "audio-start" and heard.types[-1] == "audio-stop" and set(heard.types[1:-1]) == {"audio-chunk"}
    assert (heard.start.rate, heard.start.width, heard.start.channels) == (16000, 2, 1)
    assert voice.spoken == ["Hello there.", "How are you today?"] and len(heard.pcm) == 6 * TONE_BYTES_PER_WORD
    async with AsyncTcpClient("127.0.0.1", wyoming_port(wyoming_server)) as client:
        await client.write_event(Synthesize(text="Bonjour.", voice=SynthesizeVoice(language="en_GB")).event())
        await read_until(client, "audio-stop")
    assert voice.spoken[-1] == "Bonjour."


async def test_streamed_synthesis_speaks_as_text_arrives_and_never_repeats_the_final_synthesize(wyoming_server, fakes):
    """synthesize-start and chunks: audio of the first sentence comes before the text is complete; the whole-text synthesize
    Home Assistant sends before synthesize-stop is not spoken again; one audio-start, one audio-stop, then synthesize-stopped."""
    _, _, voice = fakes
    pieces = ["The bed ", "light is off. ", "The kitchen ", "lights are on", ". Anything else?"]
    async with AsyncTcpClient("127.0.0.1", wyoming_port(wyoming_server)) as client:
        await client.write_event(SynthesizeStart().event())
        for piece in pieces[:2]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        early = await read_until(client, "audio-chunk")  # the first sentence is spoken while the rest is still to come
        for piece in pieces[2:]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text="".join(pieces)).event())
        await client.write_event(SynthesizeStop().event())
        heard = Heard(early + await read_until(client, "synthesize-stopped"))
    assert [e.type for e in early] == ["audio-start", "audio-chunk"]
    assert voice.spoken == ["The bed light is off.", "The kitchen lights are on.", "Anything else?"]
    assert heard.types.count("audio-start") == 1 and heard.types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert len(heard.pcm) == 12 * TONE_BYTES_PER_WORD


async def test_a_conversation_is_answered_stored_and_continued_by_its_home_assistant_id(wyoming_server, fakes, connect_client):
    """transcript with context.conversation_id gets handled-start, chunks, handled, handled-stop; it is stored as one conversation
    owned by [wyoming] principal, a second transcript with the same id sees the first exchange in its context, and a native
    client of that principal reads the conversation."""
    dialogue, _, _ = fakes
    port = wyoming_port(wyoming_server)
    context = {"conversation_id": "01JHACONVERSATION", "device_id": "satellite-1"}
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text="what is the weather", context=context, language="en").event())
        first = await read_until(client, "handled-stop")
    assert first[0].type == "handled-start" and first[-2:][0].type == "handled" and first[-1].type == "handled-stop"
    assert "".join(e.data["text"] for e in first if e.type == "handled-chunk") == "You said: what is the weather"
    assert Handled.from_event(first[-2]).text == "You said: what is the weather" and first[-2].data["context"] == context
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text="and tomorrow?", context=context).event())
        second = await read_until(client, "handled")
    assert Handled.from_event(second[-1]).text == "You said: and tomorrow?"
    said = [(m.role, m.content) for m in dialogue.requests[-1].messages[1:]]
    assert said == [("user", "what is the weather"), ("assistant", "You said: what is the weather"), ("user", "and tomorrow?")]
    store = wyoming_server.app.store
    conversation_id = stored_id("local", "01JHACONVERSATION")
    turns = await store.history(conversation_id)
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"] and turns[-1].text == "You said: and tomorrow?"
    assert await store.conversation_last_seq(conversation_id, owner="local") is not None
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text="something new", context={"conversation_id": "another"}).event())
        await read_until(client, "handled")
    assert [m.content for m in dialogue.requests[-1].messages[1:]] == ["something new"]
    async with connect_client(wyoming_server) as native:  # the same conversation, read over the native protocol
        started = await native.start(conversation_id)
        assert started["resumed"]
        await native.send({"type": "conversation.get"})
        history = (await native.recv_until("conversation.history"))[-1]["turns"]
    assert [t["content"][0]["text"] for t in history] == [
        "what is the weather", "You said: what is the weather", "and tomorrow?", "You said: and tomorrow?"]


async def test_bad_byte_streams_get_an_error_event_then_the_connection_closes(wyoming_server):
    """Not Wyoming (HTTP, binary), a header promising 2 GB, a chunk without audio-start, bad fields: an error event each, the
    connection closes, and the server still answers describe."""
    port = wyoming_port(wyoming_server)
    cases = [
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "bad_request", "not JSON"),
        (bytes(range(256)) * 4, "bad_request", "not JSON"),
        (bytes(range(11, 256)) * 400, "too_large", "no header line"),
        (json.dumps({"type": "audio-chunk", "payload_length": 2 * 1024**3}).encode() + b"\n", "too_large", "payload_length"),
        (json.dumps({"type": "synthesize", "data_length": 2 * 1024**3}).encode() + b"\n", "too_large", "data_length"),
        (json.dumps({"type": "audio-chunk", "payload_length": -1}).encode() + b"\n", "bad_request", "non-negative"),
        (json.dumps({"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 4}).encode() + b"\n" + bytes(4),
         "bad_request", "audio-chunk without audio-start"),
        (json.dumps({"type": "audio-stop"}).encode() + b"\n", "bad_request", "audio-stop without audio-start"),
        (json.dumps({"type": "audio-start", "data": {"rate": "fast", "width": 2, "channels": 1}}).encode() + b"\n", "bad_request", "integer"),
        (json.dumps({"type": "audio-start", "data": {"rate": 1, "width": 2, "channels": 1}}).encode() + b"\n", "bad_request", "rate 1 Hz"),
        (json.dumps({"type": "synthesize", "data": {"text": "x" * 5000}}).encode() + b"\n", "too_large", "max_text_chars"),
        (json.dumps({"type": "synthesize", "data": {"text": "hi", "voice": {"name": "nobody"}}}).encode() + b"\n", "bad_request", "unknown voice"),
        (json.dumps({"type": "transcribe", "data": {"name": "whisper-large-v9"}}).encode() + b"\n", "bad_request", "unknown model"),
        (json.dumps({"type": "synthesize-chunk", "data": {"text": "hi"}}).encode() + b"\n", "bad_request", "without synthesize-start"),
        (json.dumps({"type": "transcript", "data": {"text": "hi", "context": {"conversation_id": 5}}}).encode() + b"\n", "bad_request",
         "conversation_id"),
    ]
    for data, code, needle in cases:
        answered = await raw_exchange(port, data, half_close=False)
        assert [e.type for e in answered] == ["error"], data[:80]
        error = Error.from_event(answered[0])
        assert error.code == code and needle in error.text, (data[:80], error)
    assert len((await describe(port)).handle) == 1


async def test_failing_engines_answer_error_events_and_the_next_request_works(start_server, tmp_path):
    """A synthesizer that raises (one-shot and streamed) and a dialogue engine that fails once: an error event each, then a
    conversation turn in the same Home Assistant conversation succeeds."""
    config = make_config(tmp_path, engines={"speech_synthesizer": "fake"}, wyoming=WYOMING)
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(fail_times=1), voice=ToneVoice(fail=True)),))
    port = wyoming_port(server)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text="Hello there.").event())
        events = await read_until(client, "audio-stop")
    assert events[-1].type == "error" and "speech failed" in Error.from_event(events[-1]).text
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="One sentence. ").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped")
    assert events[-1].type == "error" and "speech failed" in Error.from_event(events[-1]).text
    context = {"conversation_id": "flaky"}
    for expected in ("error", "handled"):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Transcript(text="hello", context=context).event())
            events = await read_until(client, "handled")
        assert events[-1].type == expected
    assert Handled.from_event(events[-1]).text == "You said: hello"


async def test_the_principals_turn_rate_applies_to_conversations(start_server, tmp_path):
    """With one turn a minute for the Wyoming principal, a second transcript answers a rate_limited error event."""
    config = make_config(tmp_path, wyoming=WYOMING, limits={"turns_per_minute": 1})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    answers = []
    for text in ("one", "two"):
        async with AsyncTcpClient("127.0.0.1", wyoming_port(server)) as client:
            await client.write_event(Transcript(text=text, context={"conversation_id": "rated"}).event())
            answers.append((await read_until(client, "handled"))[-1])
    assert answers[0].type == "handled" and Error.from_event(answers[1]).code == "rate_limited"


async def test_a_silent_connection_is_closed_with_an_error_event(start_server, tmp_path):
    """A connection that sends nothing for [limits] idle_timeout_s gets an idle-timeout error event, then the server closes it."""
    config = make_config(tmp_path, wyoming=WYOMING, limits={"idle_timeout_s": 0.5})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with AsyncTcpClient("127.0.0.1", wyoming_port(server)) as client:
        (error,) = await read_until(client, "never")
        assert Error.from_event(error).text.startswith("idle timeout") and await client.read_event() is None


async def test_too_much_audio_is_refused_before_it_is_kept(start_server, tmp_path):
    """Audio past [wyoming] max_audio_seconds ends with a too_large error event; the next request works."""
    config = make_config(tmp_path, engines={"asr": "fake"}, wyoming={**WYOMING, "max_audio_seconds": 1.0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(), asr=FixedAsr()),))
    port = wyoming_port(server)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await send_audio(client, bytes(16000 * 2 * 3))
        (error,) = await read_until(client, "transcript")
    assert Error.from_event(error).code == "too_large" and "max_audio_seconds" in Error.from_event(error).text
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await send_audio(client, (np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes())
        assert (await read_until(client, "transcript"))[-1].type == "transcript"


async def test_connections_hold_the_principals_session_places(start_server, tmp_path):
    """With one session place per principal, a second Wyoming connection from the same address gets rate_limited and closes."""
    config = make_config(tmp_path, wyoming=WYOMING, limits={"sessions_per_principal": 1})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    port = wyoming_port(server)
    async with AsyncTcpClient("127.0.0.1", port) as first:
        await first.write_event(Describe().event())
        assert (await read_until(first, "info"))[-1].type == "info"  # being served: it holds the place
        answered = await raw_exchange(port, b"", half_close=True)
        assert [Error.from_event(e).code for e in answered] == ["rate_limited"]
        await first.write_event(Describe().event())
        assert (await read_until(first, "info"))[-1].type == "info"  # the first one is still served


async def test_the_listener_is_off_by_default_and_closes_its_connections_at_shutdown(start_server, tmp_path, wyoming_server):
    """Without [wyoming] enabled no port is opened; at shutdown an open Wyoming connection is closed and the port released."""
    (tmp_path / "off").mkdir()
    plain = await start_server(make_config(tmp_path / "off"), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert next(d for d in plain.dialects if d.name == "wyoming").listener is None
    port = wyoming_port(wyoming_server)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe().event())
        await wyoming_server.shutdown(grace_s=0)
        assert await asyncio.wait_for(client.read_event(), 30) is None
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_the_zeroconf_record_is_what_home_assistant_discovers():
    """The announcement is a _wyoming._tcp.local. service named after us, at the listening address and port (no multicast sent)."""
    info = service_info("assistant-kitchen", "192.168.1.20", 10700)
    assert info.type == SERVICE_TYPE == "_wyoming._tcp.local."
    assert info.name == "assistant-kitchen._wyoming._tcp.local." and info.port == 10700
    assert info.addresses == [socket.inet_aton("192.168.1.20")]


def test_the_language_home_assistant_sends_is_reduced_to_whispers_code():
    """`en-US`, `pt_BR` and `EN` become `en`, `pt` and `en`; nothing stays nothing (the engine detects or uses its setting)."""
    assert [asr_language(x) for x in ("en-US", "pt_BR", "EN", "", None)] == ["en", "pt", "en", None, None]
