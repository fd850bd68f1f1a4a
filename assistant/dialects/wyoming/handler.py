"""One Wyoming connection: events in, the core's work, events out (the `wyoming` package's AsyncEventHandler).

Served, as Home Assistant's Wyoming integration sends them:
- `describe` -> `info`;
- `transcribe`? `audio-start` `audio-chunk`* `audio-stop` -> `transcript-start` `transcript-chunk` `transcript`
  `transcript-stop` (a client that knows no streaming reads up to `transcript`);
- `synthesize` -> `audio-start` `audio-chunk`* `audio-stop`;
- `synthesize-start` `synthesize-chunk`* `synthesize` `synthesize-stop` -> audio as each sentence is finished,
  then `audio-stop` and `synthesize-stopped` (the whole-text `synthesize` of the stream is not spoken again);
- `transcript` (a user's words, `context.conversation_id`) -> `handled-start` `handled-chunk`* `handled`
  `handled-stop`, the reply of the dialogue engine in that conversation;
- `ping` -> `pong`. Other events are ignored, as Wyoming servers do.
A bad or oversized event, a request that fails, or silence past `[limits] idle_timeout_s` is answered with an
`error` event and the connection closes; the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from assistant.dialects.wyoming import speech
from assistant.dialects.wyoming.info import ASR_PROGRAM, build_info
from assistant.dialects.wyoming.reader import ProtocolError, read_event
from assistant.engines import SpeechSynthesizer
from assistant.errors import AssistantError
from assistant.speech import speech_out, split_speakable
from assistant.types import SpeechOut

if TYPE_CHECKING:
    from assistant.dialects import ServerContext
    from assistant.dialects.wyoming.conversation import Conversations

log = logging.getLogger("assistant.dialects.wyoming")

WIDTH, CHANNELS = 2, 1  # of the audio we send: 16-bit mono
LINGER_S = 2.0
LINGER_BYTES = 16 * 1024 * 1024
"""After an error, what the peer still sends is dropped for at most this long and this much before the connection closes."""


class WyomingHandler(AsyncEventHandler):
    """Serves one connection until the peer closes it, an error closes it, or it idles out."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ServerContext, conversations: Conversations,
    ) -> None:
        super().__init__(reader, writer)
        self.server = server
        self.app = server.app
        self.config = server.app.config.wyoming
        self.conversations = conversations
        self.language: str | None = None  # from `transcribe`
        self.recording: speech.Recording | None = None
        self.stream: _SpeechStream | None = None  # a synthesize-start ... synthesize-stop in progress
        self._write = asyncio.Lock()

    async def run(self) -> None:
        """Read events (bounded, see `reader`) and handle each in turn; close on an error, an idle timeout or at the peer's end.

        The connection holds one of the principal's session places (per client address with auth off) while it is open."""
        peer = self.writer.get_extra_info("peername")
        key = self.app.session_key(self.config.principal, peer[0] if isinstance(peer, tuple) else None)
        refused = self.app.sessions.enter(key)
        try:
            if refused is not None:
                await self.fail(AssistantError("rate_limited", refused))
                return
            await self._serve()
        except (ConnectionError, OSError):
            pass  # the peer went away while we wrote
        finally:
            if refused is None:
                self.app.sessions.leave(key)
            if self.stream is not None:
                await self.stream.cancel()
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    async def _serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.app.config.limits.idle_timeout_s):
                    event = await read_event(self.reader, self.config.max_payload_bytes)
            except TimeoutError:
                await self.fail(AssistantError("bad_request", "idle timeout: no event for too long"))
                return
            except ProtocolError as exc:
                log.warning("wyoming: refused %s", exc)
                await self.fail(AssistantError(exc.code, str(exc)))  # type: ignore[arg-type]
                return
            if event is None:
                return
            try:
                if not await self.handle_event(event):
                    return
            except AssistantError as exc:
                await self.fail(exc)
                return
            except (ConnectionError, OSError):
                raise
            except Exception as exc:
                log.exception("wyoming: %s failed", event.type)
                await self.fail(AssistantError("internal", f"{event.type} failed: {type(exc).__name__}"))
                return

    async def write_event(self, event: Event) -> None:
        """Send one event (writes of the read loop and of a speech stream never interleave)."""
        async with self._write:
            await super().write_event(event)

    async def fail(self, error: AssistantError) -> None:
        """Tell the peer what went wrong with an `error` event, then end the connection gently.

        Our side stops sending, and what the peer still sends (audio it was streaming, say) is read and dropped for
        up to LINGER_S: closing with unread data would reset the connection before the peer had read the error."""
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await self.write_event(Error(text=error.message, code=error.code).event())
            if self.writer.can_write_eof():
                self.writer.write_eof()
            dropped = 0
            async with asyncio.timeout(LINGER_S):
                while dropped < LINGER_BYTES and (data := await self.reader.read(64 * 1024)):
                    dropped += len(data)

    async def handle_event(self, event: Event) -> bool:
        """Dispatch one event; False ends the connection."""
        if Describe.is_type(event.type):
            await self.write_event(build_info(self.app).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(event.type):
            request = Transcribe.from_event(event)
            asr = self.app.engines.get("asr")
            if request.name is not None and (asr is None or request.name not in (asr.id, ASR_PROGRAM)):
                raise AssistantError("bad_request", f"transcribe: unknown model {request.name!r}; available: {asr.id if asr else 'none'}")
            self.language = asr_language(request.language)
        elif AudioStart.is_type(event.type):
            self.recording = speech.Recording(AudioStart.from_event(_fields(event, "rate", "width", "channels")), self.config.max_audio_seconds)
        elif AudioChunk.is_type(event.type):
            if self.recording is None:
                raise AssistantError("bad_request", "audio-chunk without audio-start")
            self.recording.add(AudioChunk.from_event(_fields(event, "rate", "width", "channels")))
        elif AudioStop.is_type(event.type):
            await self._transcribe()
        elif SynthesizeStart.is_type(event.type):
            if self.stream is not None:
                raise AssistantError("bad_request", "synthesize-start while a synthesis stream is open")
            self.stream = _SpeechStream(self, self._speech(SynthesizeStart.from_event(_fields(event)).voice), self.config.max_text_chars)
        elif SynthesizeChunk.is_type(event.type):
            if self.stream is None:
                raise AssistantError("bad_request", "synthesize-chunk without synthesize-start")
            self.stream.add(_text(_fields(event, "text"), self.config.max_text_chars))
        elif SynthesizeStop.is_type(event.type):
            if self.stream is None:
                raise AssistantError("bad_request", "synthesize-stop without synthesize-start")
            stream, self.stream = self.stream, None
            await stream.finish()
        elif Synthesize.is_type(event.type):
            if self.stream is None:  # inside a stream it repeats the whole text for older servers: already spoken
                await self._synthesize(Synthesize.from_event(_fields(event, "text")))
        elif Transcript.is_type(event.type):
            await self._converse(Transcript.from_event(_fields(event, "text")))
        return True

    def _speech(self, voice: SynthesizeVoice | None) -> SpeechOut:
        """The synthesizer and the voice asked for by name (or by language), else the default voice."""
        name = voice.name if voice is not None else None
        if name is None and voice is not None and voice.language:
            engine = self.app.engines.get("speech_synthesizer")
            offered = engine.voices() if isinstance(engine, SpeechSynthesizer) else []
            wanted = voice.language.replace("_", "-").lower()
            name = next((v.name for v in offered if v.language.lower() == wanted), None)
            name = name or next((v.name for v in offered if v.language.lower().split("-")[0] == wanted.split("-")[0]), None)
        return speech_out(self.app, name, None)

    async def _transcribe(self) -> None:
        if self.recording is None:
            raise AssistantError("bad_request", "audio-stop without audio-start")
        recording, self.recording = self.recording, None
        transcript = await speech.transcribe(self.app, recording, self.language)
        text = transcript.text.strip()
        await self.write_event(TranscriptStart(language=transcript.language).event())
        if text:
            await self.write_event(TranscriptChunk(text=text).event())
        await self.write_event(Transcript(text=text, language=transcript.language).event())
        await self.write_event(TranscriptStop().event())

    async def _synthesize(self, request: Synthesize) -> None:
        said = _speech_text(request.text, self.config.max_text_chars)
        voice = self._speech(request.voice)
        rate = voice.voice.sample_rate
        await self.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())
        sentences, _ = split_speakable(said, final=True)
        for sentence in sentences:
            await speech.synthesize(self.app, voice, sentence, self._send_audio(rate))
        await self.write_event(AudioStop().event())

    def _send_audio(self, rate: int) -> Any:
        async def send(pcm: bytes) -> None:
            await self.write_event(AudioChunk(rate=rate, width=WIDTH, channels=CHANNELS, audio=pcm).event())

        return send

    async def _converse(self, request: Transcript) -> None:
        text = _speech_text(request.text, self.config.max_text_chars)
        context = request.context if isinstance(request.context, dict) else {}
        external = context.get("conversation_id")
        if external is not None and (not isinstance(external, str) or not 0 < len(external) <= 200):
            raise AssistantError("bad_request", "transcript: context.conversation_id must be a string of 1 to 200 characters")
        await self.write_event(HandledStart(context=context or None).event())

        async def chunk(delta: str) -> None:
            await self.write_event(HandledChunk(text=delta).event())

        _, reply = await self.conversations.answer(self.app, self.config.principal, external, text, chunk)
        await self.write_event(Handled(text=reply, context=context or None).event())
        await self.write_event(HandledStop().event())


class _SpeechStream:
    """A streamed synthesis: text chunks in, each finished sentence spoken at once (one at a time, in order),
    all of it between one `audio-start` and one `audio-stop`, then `synthesize-stopped`."""

    def __init__(self, handler: WyomingHandler, speech_: SpeechOut, max_chars: int) -> None:
        self.handler = handler
        self.speech = speech_
        self.max_chars = max_chars
        self.chars = 0
        self.pending = ""
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._speak())

    def add(self, text: str) -> None:
        """More text; every sentence it finishes is queued for speech. A speech that already failed raises its error now."""
        if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise AssistantError("too_large", f"the text to speak is over {self.max_chars} characters ([wyoming] max_text_chars)")
        sentences, self.pending = split_speakable(self.pending + text)
        for sentence in sentences:
            self.sentences.put_nowait(sentence)

    async def finish(self) -> None:
        """The text is complete: speak the rest, wait for the speech to end, then `audio-stop` and `synthesize-stopped`."""
        sentences, self.pending = split_speakable(self.pending, final=True)
        for sentence in sentences:
            self.sentences.put_nowait(sentence)
        self.sentences.put_nowait(None)
        await self.task  # raises what failed the speech
        await self.handler.write_event(AudioStop().event())
        await self.handler.write_event(SynthesizeStopped().event())

    async def cancel(self) -> None:
        """The connection ends: stop speaking."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # its error, if any, was the connection's end
            await self.task

    async def _speak(self) -> None:
        rate = self.speech.voice.sample_rate
        await self.handler.write_event(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS).event())
        send = self.handler._send_audio(rate)
        while (sentence := await self.sentences.get()) is not None:
            await speech.synthesize(self.handler.app, self.speech, sentence, send)


def asr_language(language: str | None) -> str | None:
    """The language to transcribe as Whisper names it: Home Assistant may send a region (`en-US`, `pt_BR`); its primary subtag."""
    if not language:
        return None
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0] or None


def _fields(event: Event, *keys: str) -> Event:
    """The event, once it has every field its `from_event` reads (bad_request naming the missing one)."""
    for key in keys:
        if key not in event.data:
            raise AssistantError("bad_request", f"{event.type}: missing \"{key}\"")
    numbers = [key for key in keys if key in ("rate", "width", "channels")]
    for key in numbers:
        value = event.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise AssistantError("bad_request", f"{event.type}: \"{key}\" must be an integer")
    if "text" in keys and not isinstance(event.data["text"], str):
        raise AssistantError("bad_request", f"{event.type}: \"text\" must be a string")
    if "voice" in event.data and not isinstance(event.data["voice"], dict):
        raise AssistantError("bad_request", f"{event.type}: \"voice\" must be an object")
    return event


def _text(event: Event, max_chars: int) -> str:
    text: str = event.data["text"]
    if len(text) > max_chars:
        raise AssistantError("too_large", f"{event.type}: the text is {len(text)} characters; at most {max_chars} ([wyoming] max_text_chars)")
    return text


def _speech_text(text: str, max_chars: int) -> str:
    if len(text) > max_chars:
        raise AssistantError("too_large", f"the text is {len(text)} characters; at most {max_chars} ([wyoming] max_text_chars)")
    if not text.strip():
        raise AssistantError("bad_request", "the text is empty")
    return text
