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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from assistant import events
from assistant.engines import DialogueEngine, DialogueRequest, DialogueResult, EngineError
from assistant.errors import error_code
from assistant.events import EndStatus, ErrorInfo
from assistant.scheduler import NoProgress, Relay
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
    deltas: Relay[str] = Relay()
    started = time.perf_counter()
    first_token_at: float | None = None
    pieces: list[str] = []
    future: asyncio.Future[DialogueResult] | None = None
    broken: str | None = None  # why the engine's call was given up on (hung, or emitted something that is not text)
    timeout = app.config.limits.engine_timeout_s
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
        gate = app.scheduler.gate

        def on_delta(delta: str) -> None:  # on the engine's thread, after each piece of text
            gate.pause_for_higher("dialogue", reply.cancelled)
            deltas.push(delta)

        future = app.scheduler.submit(engine, engine.generate, request, on_delta, reply.cancelled)
        async for item in deltas.until(future, timeout):
            if not isinstance(item, str):
                raise TypeError(f"the dialogue engine emitted {type(item).__name__} instead of text")
            if first_token_at is None:
                first_token_at = time.perf_counter()
            pieces.append(item)
            await conversation.publish(events.TextDelta(response_id=response_id, delta=item))
            if speaker is not None:
                speaker.add(item)
    except asyncio.CancelledError:
        # The task itself was cancelled: stop the engine at its next token, then store how it ended.
        reply.cancel()
        if future is not None:
            await asyncio.wait([future])
        raise
    except (NoProgress, TypeError) as exc:
        broken = f"the dialogue engine made no progress for {timeout:g} s" if isinstance(exc, NoProgress) else str(exc)
        log.error("reply %s: %s", response_id, broken)
        await app.scheduler.give_up(engine, future, reply.cancel)
    finally:
        text = "".join(pieces)
        status: EndStatus
        error: ErrorInfo | None
        usage: dict[str, int] | None
        if broken is not None:
            status, error, usage = "failed", ErrorInfo("internal", broken), None
        else:
            status, error, usage = _outcome(future, reply, engine.id)
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
            return events.ReplyDone(response_id, status, text, usage, timings, error, _finish_reason(future))

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


def _finish_reason(future: asyncio.Future[DialogueResult] | None) -> str | None:
    """How the engine said the reply ended (`stop`, `length`, `cancelled`), or None when it gave no DialogueResult."""
    if future is None or not future.done() or future.cancelled() or future.exception() is not None:
        return None
    result = future.result()
    return result.finish_reason if isinstance(result, DialogueResult) else None


def _outcome(
    future: asyncio.Future[DialogueResult] | None, reply: Reply, engine_id: str
) -> tuple[EndStatus, ErrorInfo | None, dict[str, int] | None]:
    """Final status, error and usage of a finished, abandoned or never started engine call."""
    if future is None:
        return "failed", ErrorInfo("internal", "the reply could not be started"), None
    if not future.done() or future.cancelled():
        return "cancelled", None, None
    exc = future.exception()
    if exc is not None:
        if isinstance(exc, EngineError):
            log.warning("dialogue engine %s refused reply %s: code %s: %s", engine_id, reply.response_id, exc.code, exc)
            return "failed", ErrorInfo(error_code(exc.code), str(exc)), None
        log.error("dialogue engine failed", exc_info=exc)
        return "failed", ErrorInfo("internal", f"the dialogue engine failed: {type(exc).__name__}: {exc}"), None
    result = future.result()
    if not isinstance(result, DialogueResult):
        return "failed", ErrorInfo("internal", f"the dialogue engine returned {type(result).__name__} instead of a DialogueResult"), None
    usage = {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}
    status: EndStatus = "cancelled" if result.finish_reason == "cancelled" or reply.cancelled.is_set() else "completed"
    return status, None, usage
