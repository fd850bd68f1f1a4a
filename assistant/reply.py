"""One reply: stream the dialogue engine's text as events, then store and announce how it ended.

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
from assistant.dialogue_call import DialogueCall
from assistant.engines import DialogueEngine, DialogueRequest
from assistant.events import ErrorInfo
from assistant.speech import Speaker

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

    def cancel(self) -> None:
        """Ask the engine to stop at its next token."""
        self.cancelled.set()


async def announce_end(
    conversation: ConversationScope, what: str, store_end: Callable[[int], Awaitable[T]],
    end_event: Callable[[T | None, bool], events.Event],
) -> None:
    """Store how a reply or job ended (`store_end(seq)`), then publish `end_event(stored, ok)` under that seq.

    `ok` is False when the store write failed (logged); the event is published whatever happened.
    """
    seq = conversation.emit.reserve()
    stored: T | None = None
    ok = True
    try:
        stored = await asyncio.shield(store_end(seq))
    except Exception:
        log.exception("storing %s failed", what)
        ok = False
    finally:
        await conversation.publish(end_event(stored, ok), seq=seq)


async def stream_reply(
    conversation: ConversationScope, engine: DialogueEngine, request: DialogueRequest, reply: Reply, turn_id: str,
    announce_turn: bool = True, spoken_until: float | None = None,
) -> None:
    """Run the engine, publish its deltas, then store and announce how the reply ended, whatever happened.

    `spoken_until` is when the user's utterance ended, for the voice-to-voice latency of a spoken reply."""
    app = conversation.app
    assert app.store is not None
    store = app.store
    started = time.perf_counter()
    first_token_at: float | None = None
    pieces: list[str] = []
    call = DialogueCall(app, engine, request, reply.cancelled)
    response_id = reply.response_id
    speaker: Speaker | None = None
    try:
        if announce_turn:
            await conversation.publish(events.TurnCreated(turn_id=turn_id))
        await conversation.publish(events.ReplyStarted(response_id=response_id, turn_id=turn_id))
        if conversation.speech is not None:
            speaker = conversation.speaker = conversation.speakers[response_id] = Speaker(
                app, conversation.publish, conversation.speech, response_id, reply.cancelled, spoken_until,
            )
        async with aclosing(call.deltas()) as deltas:  # leaving early (cancelled task) stops the engine first
            async for item in deltas:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                pieces.append(item)
                await conversation.publish(events.TextDelta(response_id=response_id, delta=item))
                if speaker is not None:
                    speaker.add(item)
    finally:
        text = "".join(pieces)
        outcome = call.outcome()
        status, error, usage = outcome.status, outcome.error, outcome.usage
        elapsed = time.perf_counter() - started
        timings = {"total_ms": round(elapsed * 1000, 3)}
        if first_token_at is not None:
            timings["time_to_first_token_ms"] = round((first_token_at - started) * 1000, 3)
        if usage and usage.get("completion_tokens") and elapsed > 0:
            timings["tokens_per_s"] = round(usage["completion_tokens"] / elapsed, 3)
        _record_reply(app, status, usage, timings)

        def end_event(_: str | None, stored: bool) -> events.Event:
            if not stored:
                return events.ReplyDone(response_id, "failed", text, usage, timings, ErrorInfo("internal", "the reply could not be stored"))
            finish_reason = outcome.result.finish_reason if outcome.result is not None else None
            return events.ReplyDone(response_id, status, text, usage, timings, error, finish_reason)

        await announce_end(
            conversation, f"reply {response_id}",
            lambda seq: store.finish_reply(
                response_id, text=text, status=status, error=error.message if error else None, usage=usage, last_seq=seq,
            ),
            end_event,
        )
        if speaker is not None:  # the text is done and stored; its speech may still be talking
            while len(conversation.speakers) > RECENT_SPEAKERS:  # a client reports what it played of its last few replies
                del conversation.speakers[next(iter(conversation.speakers))]
            await speaker.finish()


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
