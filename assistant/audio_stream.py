"""One client's streamed audio: PCM16 chunks in, speech events, partial transcripts, turns out.

Chunks arrive from the dialect (the native one: `audio.append` or binary frames) at the client's sample rate. They are
resampled to 16 kHz as they come. With server VAD on, Silero VAD marks where speech starts
(`SpeechStarted`) and ends (`SpeechStopped`), and the end commits the utterance as a turn by
itself; with it off, the client's commit does. While speech goes on, a `TranscriptDelta` with the
growing hypothesis is sent every `[speech] partial_interval_s` of new audio. A committed
utterance becomes an ordinary turn: stored (audio as WAV), transcribed, answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np

from assistant import audio, events
from assistant.engines import AsrEngine
from assistant.errors import AssistantError
from assistant.store import PartRecord, new_id
from assistant.turns import TurnInput

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.audio_stream")

PRE_ROLL_S = 0.5  # audio kept from before speech starts, so the first word is not clipped


class UtteranceSink(Protocol):
    """Where a stream's utterances go: a `Conversation` (the native wire), or a dialect's own session (Realtime)."""

    app: App

    def barge_in(self) -> bool:
        """The VAD heard the user start talking: cut a reply still speaking; whether one was cut."""

    async def publish(self, event: events.Event, seq: int | None = None) -> None:
        """Speech started and stopped, partial transcripts."""

    def submit_turn(self, turn: TurnInput, ref: str | None) -> None:
        """A committed utterance."""


class AudioStream:
    """Buffers one utterance at a time for a client; committed utterances become turns of its conversation.

    `threshold` and `min_silence_ms` override `[speech] vad_threshold` and `vad_min_silence_ms` for this stream."""

    def __init__(
        self, conversation: UtteranceSink, sample_rate: int, vad: bool, language: str | None,
        threshold: float | None = None, min_silence_ms: int | None = None,
    ) -> None:
        self.conversation = conversation
        app = conversation.app
        speech = app.config.speech
        self.resampler = audio.StreamResampler(sample_rate)
        self.vad = (
            app.vad.stream(threshold or speech.vad_threshold, min_silence_ms or speech.vad_min_silence_ms) if vad and app.vad else None
        )
        self.language = language or speech.language
        self._partial: asyncio.Task[None] | None = None
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._bytes = 0
        self._heard_speech = False
        self._partial_at = 0
        self.turn_id: str | None = None

    @property
    def buffered_s(self) -> float:
        """Seconds of audio waiting in the current utterance."""
        return self._samples / audio.SAMPLE_RATE

    async def append(self, pcm: bytes, ref: str | None) -> None:
        """Add a chunk; may emit speech events, start a partial transcript, or commit the utterance."""
        app = self.conversation.app
        if not isinstance(app.engines.get("asr"), AsrEngine):
            raise AssistantError("unavailable", "streamed audio needs an ASR engine ([engines] asr)", ref)
        speech = app.config.speech
        if self._bytes + len(pcm) > speech.max_buffer_bytes:
            self.clear()
            raise AssistantError("too_large", f"more than {speech.max_buffer_bytes} bytes of audio buffered; the buffer was cleared", ref)
        try:
            samples = self.resampler.push(pcm)
        except audio.AudioError as exc:
            raise AssistantError("bad_request", str(exc), ref) from None
        if self.turn_id is None:
            self.turn_id = new_id()
        self._chunks.append(samples)
        self._samples += samples.size
        self._bytes += len(pcm)
        if self.buffered_s > speech.max_seconds:
            self.clear()
            raise AssistantError("too_large", f"the utterance passed {speech.max_seconds:g} s; the buffer was cleared", ref)
        if self.vad is not None:
            for event in await app.scheduler.submit_named("vad", self.vad.feed, samples):
                if event.kind == "start":
                    self._heard_speech = True
                    self.conversation.barge_in()
                    await self.conversation.publish(events.SpeechStarted(audio_start_ms=event.ms))
                else:
                    await self.conversation.publish(events.SpeechStopped(audio_end_ms=event.ms))
                    await self.commit(ref)
                    return
            if not self._heard_speech:
                self._keep_pre_roll()
        self._maybe_partial()

    def _keep_pre_roll(self) -> None:
        keep = int(PRE_ROLL_S * audio.SAMPLE_RATE)
        if self._samples > 2 * keep:
            tail = np.concatenate(self._chunks)[-keep:]
            self._chunks, self._samples = [tail], tail.size

    def _maybe_partial(self) -> None:
        interval = self.conversation.app.config.speech.partial_interval_s
        speaking = self.vad.in_speech if self.vad is not None else True
        if interval <= 0 or not speaking or (self._partial is not None and not self._partial.done()):
            return
        if self._samples - self._partial_at >= interval * audio.SAMPLE_RATE:
            self._partial_at = self._samples
            self._partial = asyncio.create_task(self._transcribe_partial(np.concatenate(self._chunks), self.turn_id))

    async def _transcribe_partial(self, samples: np.ndarray, turn_id: str | None) -> None:
        engine = self.conversation.app.engines.get("asr")
        if not isinstance(engine, AsrEngine) or audio.is_silent(samples):
            return
        try:
            result = await self.conversation.app.scheduler.submit(engine, engine.transcribe, samples, self.language)
        except Exception:
            log.exception("partial transcript failed")
            return
        if turn_id is not None and turn_id == self.turn_id and result.text:
            await self.conversation.publish(events.TranscriptDelta(turn_id=turn_id, text=result.text))

    async def commit(self, ref: str | None) -> None:
        """Make the buffered utterance a turn (queued behind the client's other turns)."""
        if self._samples == 0:
            raise AssistantError("bad_request", "no audio to commit: send audio first", ref)
        samples, turn_id = np.concatenate(self._chunks), self.turn_id
        self._reset_utterance()
        store_audio = self.conversation.app.config.speech.store_audio
        data = audio.wav_bytes(samples)
        turn = TurnInput(
            parts=[PartRecord(kind="audio", attachment_sha256=audio.sha256(data) if store_audio else None)],
            attachments=[("audio/wav", data)] if store_audio else [],
            audio=[(samples, self.language)],
            turn_id=turn_id,
            spoken_until=time.perf_counter(),
        )
        self.conversation.submit_turn(turn, ref)

    def clear(self) -> None:
        """Drop the buffered utterance and the VAD's state."""
        self._reset_utterance()
        if self.vad is not None:
            self.vad.reset()
