"""Speech for the Wyoming wire: audio received between `audio-start` and `audio-stop`, its transcription, and
the synthesis of text sentence by sentence. Engines run through the app's scheduler, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart

from assistant import audio
from assistant.engines import AsrEngine, EngineError, Transcript
from assistant.errors import AssistantError, error_code
from assistant.scheduler import NoProgress, Relay
from assistant.turns import take_media
from assistant.types import SpeechOut

if TYPE_CHECKING:
    from assistant.app import App

MIN_RATE, MAX_RATE = 8000, 96000


class Recording:
    """The audio of one `audio-start` ... `audio-stop`, kept as 16-bit mono PCM at the rate `audio-start` stated.

    Chunks in another width, channel count or rate are converted (the `wyoming` package's AudioChunkConverter).
    Bounded: more than `max_seconds` of audio is `too_large`.
    """

    def __init__(self, start: AudioStart, max_seconds: float) -> None:
        if not MIN_RATE <= start.rate <= MAX_RATE:
            raise AssistantError("bad_request", f"audio-start: rate {start.rate} Hz is not supported ({MIN_RATE} to {MAX_RATE})")
        if start.width not in (1, 2, 3, 4) or not 1 <= start.channels <= 8:
            raise AssistantError("bad_request", f"audio-start: width {start.width} and channels {start.channels} are not supported")
        self.rate = start.rate
        self.max_bytes = int(max_seconds * start.rate) * 2
        self.max_seconds = max_seconds
        self.converter = AudioChunkConverter(rate=start.rate, width=2, channels=1)
        self.pcm = bytearray()

    def add(self, chunk: AudioChunk) -> None:
        """Append a chunk, converted to the recording's format."""
        if not MIN_RATE <= chunk.rate <= MAX_RATE or chunk.width not in (1, 2, 3, 4) or not 1 <= chunk.channels <= 8:
            raise AssistantError("bad_request", f"audio-chunk: rate {chunk.rate}, width {chunk.width}, channels {chunk.channels} are not supported")
        if len(chunk.audio) % (chunk.width * chunk.channels):
            raise AssistantError("bad_request", "audio-chunk: the audio is not a whole number of samples")
        # a 16-bit mono chunk at the recording's rate is used as is; a wider or multi-channel one shrinks when converted
        if chunk.rate == self.rate and len(self.pcm) + len(chunk.audio) * 2 // (chunk.width * chunk.channels) > self.max_bytes:
            raise AssistantError("too_large", f"the audio lasts more than {self.max_seconds:g} s ([wyoming] max_audio_seconds)")
        self.pcm += self.converter.convert(chunk).audio
        if len(self.pcm) > self.max_bytes:
            raise AssistantError("too_large", f"the audio lasts more than {self.max_seconds:g} s ([wyoming] max_audio_seconds)")


async def transcribe(app: App, recording: Recording, language: str | None) -> Transcript:
    """The recording's transcript from the ASR engine (silence: an empty one); AssistantError when it cannot be had."""
    engine = app.engines.get("asr")
    if not isinstance(engine, AsrEngine):
        raise AssistantError("unavailable", "speech to text needs an ASR engine ([engines] asr)")
    data = bytes(recording.pcm)
    taken = await take_media(app, int(recording.max_seconds * audio.SAMPLE_RATE * 4 * 2) + len(data), "audio", None)
    try:
        try:
            samples = await app.scheduler.submit_named("media-decode", audio.decode, data, "pcm16", recording.rate, recording.max_seconds)
        except audio.AudioError as exc:
            raise AssistantError(error_code(exc.code), f"audio: {exc}") from None
        if audio.is_silent(samples):
            return Transcript("", language, audio.duration_s(samples))
        timeout = app.config.limits.engine_timeout_s
        try:
            return await app.scheduler.call(engine, timeout, engine.transcribe, samples, language or app.config.speech.language)
        except TimeoutError:
            raise AssistantError("internal", f"the ASR engine did not answer within {timeout:g} s") from None
        except EngineError as exc:
            raise AssistantError(error_code(exc.code), f"transcription failed: {exc}") from None
    finally:
        app.media.release(taken)


async def synthesize(app: App, speech: SpeechOut, text: str, on_audio: Callable[[bytes], Awaitable[None]]) -> None:
    """Speak one sentence: `on_audio` gets its PCM16 chunks as the synthesizer makes them; cancelling stops the synthesizer."""
    engine = speech.engine
    timeout = app.config.limits.engine_timeout_s
    stop = threading.Event()
    chunks: Relay[bytes] = Relay()
    future = app.scheduler.submit(engine, engine.synthesize, text, speech.voice.name, chunks.push, stop)
    try:
        async for chunk in chunks.until(future, timeout):
            if not isinstance(chunk, bytes | bytearray) or len(chunk) % 2:
                raise AssistantError("internal", f"the speech synthesizer gave {type(chunk).__name__} instead of PCM16 bytes")
            await on_audio(bytes(chunk))
    except NoProgress:
        await app.scheduler.give_up(engine, future, stop.set)
        raise AssistantError("internal", f"the speech synthesizer made no progress for {timeout:g} s") from None
    except BaseException:
        stop.set()  # the client is gone, or the chunk was bad: the synthesizer stops at its next chunk
        await asyncio.wait([future])
        raise
    exc = future.exception()
    if isinstance(exc, EngineError):
        raise AssistantError(error_code(exc.code), f"speech failed: {exc}")
    if exc is not None:
        raise AssistantError("internal", f"speech failed: {type(exc).__name__}: {exc}")
