"""One reply: stream the dialogue engine's text as events, then store and announce how it ended.

`ReplyStream` is one reply from ReplyStarted to ReplyDone; it may span several engine rounds (the
tool-call loop in `assistant.tool_loop`). `stream_reply` is the plain one-round reply.

`announce_end` is the persist-then-announce step shared by replies and image jobs: the end event is
numbered before the store write (so the store knows the conversation's last seq) and is always
published, even when the write fails, or the conversation's later events would wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from assistant import events
from assistant.dialogue_call import DialogueCall, Outcome
from assistant.engines import DialogueEngine, DialogueRequest
from assistant.events import ErrorInfo
from assistant.speech import Speaker
from assistant.store import PartRecord

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.scope import ConversationScope

log = logging.getLogger("assistant.reply")

RECENT_SPEAKERS = 8
"""Spoken replies per client whose played time the client may still report (`response.audio.played`)."""

T = TypeVar("T")


@dataclass(eq=False)
class Reply:
    """A reply in flight: what a cancel and shutdown act on."""

    response_id: str
    conversation_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)  # set with `cancelled`, for waits on the event loop
    confirmations: dict[str, asyncio.Future[bool]] = field(default_factory=dict)  # tool calls waiting for the user, by call id

    def cancel(self) -> None:
        """Ask the engine to stop at its next token, and a tool call running or waiting to stop now. Call on the event loop."""
        self.cancelled.set()
        self.stopped.set()


async def announce_end(
    conversation: ConversationScope, what: str, store_end: Callable[[int | None], Awaitable[T]],
    end_event: Callable[[T | None, bool], events.Event],
) -> None:
    """Store how a reply or job ended (`store_end(seq)`), then publish `end_event(stored, ok)` under that seq.

    `ok` is False when the store write failed (logged); the event is published whatever happened.
    """
    seq: int | None = None
    try:
        seq = await conversation.emit.reserve()
    except Exception:  # the channel cannot number it (several nodes, Redis down): the end is stored all the same
        log.exception("numbering the end of %s failed", what)
    stored: T | None = None
    ok = True
    try:
        stored = await asyncio.shield(store_end(seq))
    except Exception:
        log.exception("storing %s failed", what)
        ok = False
    finally:
        await conversation.publish(end_event(stored, ok), seq=seq)


class ReplyStream:
    """One reply on the wire and in the store: started once, text from one or more engine rounds, ended once.

    `start` publishes TurnCreated (optionally) and ReplyStarted; each `round` streams one engine call's
    deltas as TextDelta (the tool-call loop runs several in one reply); `say` adds text that is not the
    engine's (a route's confirmation, a note); `end` stores the reply with its text, status and `parts`
    (tool calls and results), then publishes ReplyDone. Call `end` whatever happened (in a `finally`).
    """

    def __init__(self, conversation: ConversationScope, reply: Reply, turn_id: str, spoken_until: float | None = None) -> None:
        self.conversation = conversation
        self.reply = reply
        self.turn_id = turn_id
        self.spoken_until = spoken_until
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.pieces: list[str] = []
        self.parts: list[PartRecord] = []  # stored with the reply before its text (tool_call, tool_result)
        self.usage: dict[str, int] | None = None  # summed over rounds
        # how the reply ends: set by each round, or by the caller; this if nothing ever ran
        self.status: events.EndStatus = "failed"
        self.error: ErrorInfo | None = ErrorInfo("internal", "the reply could not be started")
        self.finish_reason: str | None = None  # the last engine round's ("stop", "length", ...), None when none returned
        self.speaker: Speaker | None = None

    @property
    def response_id(self) -> str:
        """The reply's id (its stored turn and its wire response)."""
        return self.reply.response_id

    @property
    def text(self) -> str:
        """Everything the reply has said so far."""
        return "".join(self.pieces)

    async def start(self, announce_turn: bool = True) -> None:
        """Publish the user turn (unless already announced) and the reply's start; set up speech when asked for."""
        conversation = self.conversation
        if announce_turn:
            await conversation.publish(events.TurnCreated(turn_id=self.turn_id))
        await conversation.publish(events.ReplyStarted(response_id=self.response_id, turn_id=self.turn_id))
        if conversation.speech is not None:
            self.speaker = conversation.speaker = conversation.speakers[self.response_id] = Speaker(
                conversation.app, conversation.publish, conversation.speech, self.response_id, self.reply.cancelled, self.spoken_until,
            )

    async def say(self, text: str) -> None:
        """Add text to the reply that the engine did not produce (published, spoken and stored like its own)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.pieces.append(text)
        await self.conversation.publish(events.TextDelta(response_id=self.response_id, delta=text))
        if self.speaker is not None:
            self.speaker.add(text)

    async def round(self, engine: DialogueEngine, request: DialogueRequest) -> Outcome:
        """One engine call: stream its deltas into the reply; returns how it ended (also kept as the reply's status)."""
        call = DialogueCall(self.conversation.app, engine, request, self.reply.cancelled)
        try:
            async with aclosing(call.deltas()) as deltas:  # leaving early (cancelled task) stops the engine first
                async for item in deltas:
                    await self.say(item)
        finally:
            outcome = call.outcome()
            self.status, self.error = outcome.status, outcome.error
            self.finish_reason = outcome.result.finish_reason if outcome.result is not None else None
            if outcome.usage:
                total = self.usage or {"prompt_tokens": 0, "completion_tokens": 0}
                self.usage = {key: total[key] + outcome.usage.get(key, 0) for key in total}
        return outcome

    async def end(self) -> None:
        """Store the reply (text, parts, status), then publish its ReplyDone; finish its speech after that."""
        conversation = self.conversation
        app = conversation.app
        assert app.store is not None
        store = app.store
        text, status, error, usage, parts = self.text, self.status, self.error, self.usage, list(self.parts)
        finish_reason = self.finish_reason if status != "failed" else None
        response_id = self.response_id
        elapsed = time.perf_counter() - self.started
        timings = {"total_ms": round(elapsed * 1000, 3)}
        if self.first_token_at is not None:
            timings["time_to_first_token_ms"] = round((self.first_token_at - self.started) * 1000, 3)
        if usage and usage.get("completion_tokens") and elapsed > 0:
            timings["tokens_per_s"] = round(usage["completion_tokens"] / elapsed, 3)
        _record_reply(app, status, usage, timings)

        def end_event(_: str | None, stored: bool) -> events.Event:
            if not stored:
                return events.ReplyDone(response_id, "failed", text, usage, timings, ErrorInfo("internal", "the reply could not be stored"))
            return events.ReplyDone(response_id, status, text, usage, timings, error, finish_reason)

        await announce_end(
            conversation, f"reply {response_id}",
            lambda seq: store.finish_reply(
                response_id, text=text, status=status, error=error.message if error else None, usage=usage, last_seq=seq, parts=parts,
            ),
            end_event,
        )
        speaker = self.speaker
        if speaker is not None:  # the text is done and stored; its speech may still be talking
            while len(conversation.speakers) > RECENT_SPEAKERS:  # a client reports what it played of its last few replies
                del conversation.speakers[next(iter(conversation.speakers))]
            await speaker.finish()


async def stream_reply(
    conversation: ConversationScope, engine: DialogueEngine, request: DialogueRequest, reply: Reply, turn_id: str,
    announce_turn: bool = True, spoken_until: float | None = None,
) -> None:
    """Run the engine once, publish its deltas, then store and announce how the reply ended, whatever happened.

    `spoken_until` is when the user's utterance ended, for the voice-to-voice latency of a spoken reply."""
    stream = ReplyStream(conversation, reply, turn_id, spoken_until)
    try:
        await stream.start(announce_turn)
        await stream.round(engine, request)
    finally:
        await stream.end()


def _record_reply(app: App, status: str, usage: dict[str, int] | None, timings: dict[str, float]) -> None:
    """Metrics of an ended reply."""
    metrics = app.metrics
    metrics.replies.labels(status).inc()
    if usage:
        metrics.tokens.inc(usage.get("completion_tokens", 0))
    if "tokens_per_s" in timings:
        metrics.tokens_per_second.observe(timings["tokens_per_s"])
    if "time_to_first_token_ms" in timings:
        metrics.time_to_first_token.observe(timings["time_to_first_token_ms"] / 1000)
