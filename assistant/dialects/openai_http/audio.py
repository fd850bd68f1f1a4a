"""`POST /v1/audio/transcriptions` (a multipart upload, transcribed by the ASR engine) and `POST /v1/audio/speech`
(text spoken by the speech synthesizer, streamed as it is made). Neither stores anything.

An upload is bounded before it is parsed: the body is read up to `[limits] max_turn_bytes` plus room
for the form (413 past it), then parsed in memory. Audio is decoded with a turn's limits (length,
media budget) by `decode_turn`. Speech is synthesized sentence by sentence; a client that goes away
stops the synthesizer at its next chunk.
"""

from __future__ import annotations

import asyncio
import base64
import math
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from assistant import audio
from assistant.dialects.http import read_body, request_principal, request_slot
from assistant.dialects.openai_http.audio_encoding import MEDIA_TYPES, AudioEncoder
from assistant.dialects.openai_http.catalog import resolve_model
from assistant.dialects.openai_http.errors import OpenAIError, from_assistant_error
from assistant.dialects.openai_http.handling import SSE_HEADERS, StreamWithCleanup, hold_for_shutdown, json_body, parse, require_content_type, sse
from assistant.dialects.openai_http.models import SpeechRequest, TranscriptionForm
from assistant.engines import AsrEngine, EngineError, GenerationOptions, SpeechSynthesizer, Transcript, TranscriptSegment
from assistant.errors import AssistantError, error_code
from assistant.scheduler import NoProgress, Relay
from assistant.speech import speech_out, split_speakable
from assistant.turns import AudioIn, decode_turn, release_media

if TYPE_CHECKING:
    from assistant.dialects import ServerContext

FORM_ROOM = 64 * 1024
"""Bytes an upload may carry besides its file: the form's other fields and the multipart framing."""

MAGIC: list[tuple[bytes, int, str]] = [(b"RIFF", 0, "wav"), (b"OggS", 0, "ogg"), (b"fLaC", 0, "flac"), (b"\x1aE\xdf\xa3", 0, "webm"), (b"ID3", 0, "mp3")]
EXTENSIONS = {"wav": "wav", "mp3": "mp3", "mpga": "mp3", "mpeg": "mp3", "ogg": "ogg", "oga": "ogg", "opus": "ogg", "webm": "webm", "flac": "flac"}


def audio_format(data: bytes, filename: str | None) -> str:
    """The upload's audio format, from its first bytes (else its file name); a 400 for one we cannot decode."""
    for magic, offset, name in MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio frame without an ID3 tag
        return "mp3"
    suffix = PurePath(filename or "").suffix.lower().lstrip(".")
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    raise OpenAIError(400, "file: not audio this server decodes; send wav, mp3, ogg (opus or vorbis), webm or flac", param="file", code="invalid_file_format")


async def read_form(server: ServerContext, request: Request) -> FormData:
    """The multipart form, its body read whole but bounded first (413 past `[limits] max_turn_bytes` + FORM_ROOM)."""
    require_content_type(request, "multipart/form-data")
    limit = server.app.config.limits.max_turn_bytes + FORM_ROOM
    body = await read_body(request, limit)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=FORM_ROOM)
    except (MultiPartException, HTTPException) as exc:  # Starlette wraps the parser's errors in a 400 HTTPException
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise OpenAIError(400, f"the multipart form is malformed: {detail}", code="invalid_multipart") from None


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def segments_of(transcript: Transcript) -> tuple[TranscriptSegment, ...]:
    """The transcript's timed segments, within the clip; one spanning the whole clip when the engine gave none."""
    if transcript.segments:  # Whisper's timestamps come in 20 ms steps and may overshoot the clip's end
        end = transcript.duration_s
        return tuple(TranscriptSegment(min(s.start, end), min(s.end, end), s.text) for s in transcript.segments)
    return (TranscriptSegment(0.0, transcript.duration_s, transcript.text),) if transcript.text else ()


def render_transcript(transcript: Transcript, response_format: str) -> Response:
    """The transcript in the format asked for: json, text, verbose_json, srt or vtt."""
    text = transcript.text
    if response_format == "json":
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": math.ceil(transcript.duration_s)}})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    segments = segments_of(transcript)
    if response_format == "verbose_json":
        return JSONResponse({
            "task": "transcribe", "language": transcript.language, "duration": transcript.duration_s, "text": text,
            "segments": [{"id": i, "start": s.start, "end": s.end, "text": s.text} for i, s in enumerate(segments)],
            "usage": {"type": "duration", "seconds": math.ceil(transcript.duration_s)},
        })
    if response_format == "srt":
        cues = [f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n" for i, s in enumerate(segments, 1)]
        return PlainTextResponse("\n".join(cues) + "\n" if cues else "")
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in segments]
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(cues), media_type="text/vtt")


async def transcriptions(server: ServerContext, request: Request) -> Response:
    """`POST /v1/audio/transcriptions`."""
    app = server.app
    principal = await request_principal(server, request)
    async with request_slot(server, request, principal):
        form = await read_form(server, request)
        try:
            upload = form.get("file")
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            params = parse(TranscriptionForm, fields)
            engine = resolve_model(app, params.model, "asr")
            if not isinstance(upload, UploadFile):
                raise OpenAIError(400, "file: the form needs the audio as a file field named `file`", param="file", code="missing_required_parameter")
            data = await upload.read()
            filename = upload.filename
        finally:
            await form.close()
        assert isinstance(engine, AsrEngine)
        if not data:
            raise OpenAIError(400, "file: the file is empty", param="file", code="invalid_value")
        try:
            turn = await decode_turn(app, [AudioIn(data, audio_format(data, filename), language=params.language)], GenerationOptions(), None)
        except AssistantError as exc:
            raise from_assistant_error(exc, "file") from None
        try:
            samples, language = turn.audio[0]
            if audio.is_silent(samples):
                transcript = Transcript("", language, audio.duration_s(samples))
            else:
                app.scheduler.admit(engine)
                try:
                    transcript = await app.scheduler.call(engine, app.config.limits.engine_timeout_s, engine.transcribe, samples, language)
                except TimeoutError:
                    raise AssistantError("internal", "the ASR engine made no progress") from None
                except EngineError as exc:
                    raise AssistantError(error_code(exc.code), f"transcription failed: {exc}") from None
                finally:
                    app.scheduler.release_admissions()
        finally:
            release_media(app, turn)
        return render_transcript(transcript, params.response_format)


async def speech(server: ServerContext, request: Request) -> Response:
    """`POST /v1/audio/speech`: the audio streams as the synthesizer makes it (or as SSE events with `stream_format: sse`)."""
    app = server.app
    principal = await request_principal(server, request)
    cleanup = AsyncExitStack()
    try:
        await cleanup.enter_async_context(request_slot(server, request, principal))
        body = await json_body(server, request, SpeechRequest)
        engine = resolve_model(app, body.model, "speech_synthesizer")
        assert isinstance(engine, SpeechSynthesizer)
        try:
            voice = speech_out(app, body.voice_name, None).voice
        except AssistantError as exc:
            raise from_assistant_error(exc, "voice") from None
        sentences, _ = split_speakable(body.input, final=True)
        if not sentences:
            raise OpenAIError(400, "input: there is nothing to say (no letters or digits)", param="input", code="invalid_value")
        app.scheduler.admit(engine)  # refused here, with a status, when the synthesizer's queue is full
        cleanup.callback(app.scheduler.release_admissions)
        encoder = AudioEncoder(body.response_format, voice.sample_rate, body.speed)
        cleanup.callback(encoder.close)
        stream = spoken(server, engine, voice.name, sentences, encoder)
        if body.stream_format == "sse":
            response: Response = StreamWithCleanup(as_events(stream), cleanup, "text/event-stream", SSE_HEADERS)
        else:
            response = StreamWithCleanup(stream, cleanup, MEDIA_TYPES[body.response_format])
        cleanup = AsyncExitStack()  # the response closes the original one
        return response
    finally:
        await cleanup.aclose()


async def spoken(server: ServerContext, engine: SpeechSynthesizer, voice: str, sentences: list[str], encoder: AudioEncoder) -> AsyncIterator[bytes]:
    """The encoded audio of `sentences`, each synthesized on the engine's worker as the one before it is sent.

    Closing the iterator (the client went away) stops the synthesizer at its next chunk and waits for it.
    A synthesizer that fails or stalls ends the stream early (the status line has gone out already).
    """
    app = server.app
    stop = threading.Event()
    timeout = app.config.limits.engine_timeout_s
    future: asyncio.Future[None] | None = None
    release = hold_for_shutdown(app, stop.set)  # shutdown, past its grace period, stops the speech
    try:
        for sentence in sentences:
            if stop.is_set():
                return
            chunks: Relay[bytes] = Relay()
            future = app.scheduler.submit(engine, engine.synthesize, sentence, voice, chunks.push, stop)
            try:
                async for chunk in chunks.until(future, timeout):
                    if not isinstance(chunk, bytes | bytearray) or len(chunk) % 2:
                        raise EngineError(f"the speech synthesizer gave {type(chunk).__name__} instead of PCM16 bytes")
                    out = await asyncio.to_thread(encoder.push, bytes(chunk))
                    if out:
                        yield out
            except (NoProgress, EngineError):
                await app.scheduler.give_up(engine, future, stop.set)
                return
            if future.exception() is not None:
                return
        yield await asyncio.to_thread(encoder.finish)
    finally:
        release()
        if future is not None and not future.done():
            stop.set()
            await asyncio.wait([future])


async def as_events(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The audio as OpenAI's speech events: `speech.audio.delta` with base64 audio, then `speech.audio.done`."""
    try:
        async for chunk in stream:
            if chunk:
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
        yield sse({"type": "speech.audio.done"})
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
