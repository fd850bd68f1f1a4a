"""Speech out: a reply's text, sentence by sentence, through the speech synthesizer, as audio events.

A client that asks for audio (the native dialect: `output_modalities` in `session.start`) gets a
`SpeechOut` on its conversation. While the reply's text streams, each finished sentence (or clause,
past `MAX_CLAUSE_CHARS`) goes to the synthesizer at once, so speech starts before the text is done;
its audio is published as `AudioDelta` events in order, then one `AudioDone`. A synthesizer that fails
or hangs fails only the audio: the text reply is delivered and stored as usual. Cancelling the reply
stops its speech at the next chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from assistant import events
from assistant.engines import EngineError, SpeechSynthesizer
from assistant.errors import AssistantError, error_code
from assistant.events import EndStatus, ErrorInfo
from assistant.scheduler import NoProgress, Relay
from assistant.types import SpeechOut, Tell

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.speech")

SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*(?:\s+|$)|\n+")
CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
MAX_CLAUSE_CHARS = 120
"""A sentence longer than this is spoken clause by clause, so the first audio does not wait for its end."""


def speech_out(app: App, voice: str | None, ref: str | None) -> SpeechOut:
    """The spoken-reply setting for a client asking for audio in `voice` (None: the default).

    unavailable without a speech synthesizer; bad_request for a voice it does not offer (naming those it does).
    """
    engine = app.engines.get("speech_synthesizer")
    if not isinstance(engine, SpeechSynthesizer):
        raise AssistantError("unavailable", "spoken replies need a speech synthesizer ([engines] speech_synthesizer)", ref)
    voices = engine.voices()
    if not voices:
        raise AssistantError("unavailable", f"the speech synthesizer {engine.id} offers no voice", ref)
    if voice is None:
        return SpeechOut(engine, voices[0])
    for offered in voices:
        if offered.name == voice:
            return SpeechOut(engine, offered)
    raise AssistantError("bad_request", f"unknown voice {voice!r}; available: {', '.join(v.name for v in voices)}", ref)


def split_speakable(text: str, final: bool = False) -> tuple[list[str], str]:
    """The sentences (or, in a long sentence, clauses) finished at the front of `text`, and the rest.

    With `final`, the rest is spoken too. Pieces with nothing to say (only spaces or symbols) are dropped.
    """
    pieces: list[str] = []
    rest = text
    while True:
        match = SENTENCE_END.search(rest)
        if match is None and len(rest) > MAX_CLAUSE_CHARS:
            match = CLAUSE_END.search(rest, MAX_CLAUSE_CHARS // 2)
        if match is None:
            break
        pieces.append(rest[: match.start()])
        rest = rest[match.end():]
    if final:
        pieces.append(rest)
        rest = ""
    return [piece.strip() for piece in pieces if any(ch.isalnum() for ch in piece)], rest


class Speaker:
    """Speaks one reply: takes its text as it streams, synthesizes it sentence by sentence, publishes the audio."""

    def __init__(
        self, app: App, publish: Tell, speech: SpeechOut, response_id: str, cancelled: threading.Event, spoken_until: float | None = None,
        store_heard: bool = True,
    ) -> None:
        self.app = app
        self.store_heard = store_heard  # a cut reply's heard text goes to the store (False: a reply that is not stored)
        self.started = time.perf_counter()
        self.spoken_until = spoken_until  # when the utterance this reply answers ended (voice-to-voice latency)
        self.first_audio_at: float | None = None
        self.played_ms: int | None = None  # what the client says it played, once it says so
        self.publish = publish  # the conversation's: audio events go to every follower
        self.speech = speech
        self.response_id = response_id
        self.cancelled = cancelled  # the reply's: cancelling the reply stops its speech too
        self._stop = threading.Event()  # the synthesizer's: set by a reply cancel, or when a hung call is given up
        self._pending = ""
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.segments: list[tuple[int, int, str, bool]] = []  # (first sample, end sample, sentence, all of it sent)
        self._task = asyncio.create_task(self._speak())

    @property
    def talking(self) -> bool:
        """True until the speech has ended and `AudioDone` is published."""
        return not self._task.done()

    def heard(self, played_ms: int | None = None) -> str:
        """The text the user heard: the sentences whose audio was sent (or, given `played_ms`, played),
        and of a sentence cut in the middle its words in proportion to the audio heard of it (a sentence
        whose synthesis was cut is estimated at the pace of the whole ones, or 0.4 s a word)."""
        rate = self.speech.voice.sample_rate
        sent = self.segments[-1][1] if self.segments else 0
        played = sent if played_ms is None else min(sent, played_ms * rate // 1000)
        whole = [(end - start, len(sentence.split())) for start, end, sentence, complete in self.segments if complete]
        per_word = sum(s for s, _ in whole) / max(1, sum(w for _, w in whole)) if whole else 0.4 * rate
        said = []
        for start, end, sentence, complete in self.segments:
            words = sentence.split()
            length = end - start if complete else max(end - start, round(len(words) * per_word))
            if start + length <= played:
                said.append(sentence)
                continue
            if start < played:
                said.append(" ".join(words[: len(words) * (played - start) // length]))
            break
        return " ".join(piece for piece in said if piece)

    def add(self, delta: str) -> None:
        """More of the reply's text; each sentence it finishes is queued for speech at once."""
        self._pending += delta
        sentences, self._pending = split_speakable(self._pending)
        for sentence in sentences:
            self._sentences.put_nowait(sentence)

    async def finish(self) -> None:
        """The text is complete: speak the rest, and return once the speech has ended and `AudioDone` is published."""
        sentences, self._pending = split_speakable(self._pending, final=True)
        for sentence in sentences:
            self._sentences.put_nowait(sentence)
        self._sentences.put_nowait(None)
        await asyncio.shield(self._task)

    def _first_audio(self) -> None:
        self.first_audio_at = now = time.perf_counter()
        self.app.metrics.speech_first_audio.observe(now - self.started)
        if self.spoken_until is not None:
            self.app.metrics.voice_to_voice.observe(now - self.spoken_until)

    async def _speak(self) -> None:
        app = self.app
        engine = self.speech.engine
        timeout = app.config.limits.engine_timeout_s
        samples = 0
        status: EndStatus = "completed"
        store = app.store
        error: ErrorInfo | None = None
        try:
            while (sentence := await self._sentences.get()) is not None:
                if self.cancelled.is_set():
                    break
                chunks: Relay[bytes] = Relay()
                first = samples
                began = time.perf_counter()
                future = app.scheduler.submit(engine, engine.synthesize, sentence, self.speech.voice.name, chunks.push, self._stop)
                try:
                    async for chunk in chunks.until(future, timeout):
                        if self.cancelled.is_set():
                            self._stop.set()  # the synthesizer stops at its next chunk; what it already made is dropped
                            continue
                        if not isinstance(chunk, bytes | bytearray) or len(chunk) % 2:
                            raise TypeError(f"the speech synthesizer gave {type(chunk).__name__} instead of PCM16 bytes")
                        samples += len(chunk) // 2
                        if self.first_audio_at is None:
                            self._first_audio()
                        await self.publish(events.AudioDelta(self.response_id, bytes(chunk), self.speech.voice.sample_rate))
                except (NoProgress, TypeError) as exc:
                    why = f"the speech synthesizer made no progress for {timeout:g} s" if isinstance(exc, NoProgress) else str(exc)
                    await app.scheduler.give_up(engine, future, self._stop.set)
                    raise EngineError(why) from None
                future.result()  # the synthesizer's own exception, if it raised
                if samples > first:
                    self.segments.append((first, samples, sentence, not self._stop.is_set()))
                    said_s = (samples - first) / self.speech.voice.sample_rate
                    app.metrics.speech_real_time_factor.observe((time.perf_counter() - began) / said_s)
        except Exception as exc:
            code = error_code(exc.code) if isinstance(exc, EngineError) else "internal"
            log.warning("speech of reply %s failed (speech synthesizer %s, code %s): %s", self.response_id, engine.id, code, exc)
            status, error = "failed", ErrorInfo(code, f"speech failed: {exc}")
        if status == "completed" and self.cancelled.is_set():
            status = "cancelled"
            if store is not None and self.store_heard:  # cut short: what the client says it played, else what was sent, was heard
                try:
                    await store.set_heard(self.response_id, self.heard(self.played_ms))
                except Exception:
                    log.exception("storing what was heard of reply %s failed", self.response_id)
        duration_ms = round(samples * 1000 / self.speech.voice.sample_rate)
        await self.publish(events.AudioDone(self.response_id, status, duration_ms, error))
