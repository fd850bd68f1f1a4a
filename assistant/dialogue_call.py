"""One call of the dialogue engine, driven from the event loop: its text deltas, then how it ended.

Every path that asks the dialogue engine for text goes through `DialogueCall`: a conversation's reply
(`assistant.reply`), each round of the tool-call loop, and the stateless requests of the HTTP dialects
(`complete`). It runs the blocking `generate` on the engine's worker thread through the scheduler
(or awaits an engine's `generate_async` on the event loop, see `assistant.async_calls`), relays the
deltas in order, pauses for higher latency classes between tokens, gives up on an engine that stops
making progress, and turns every way a call can end into one outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.async_calls import async_variant
from assistant.engines import DialogueEngine, DialogueRequest, DialogueResult, EngineError, Usage
from assistant.errors import AssistantError, error_code
from assistant.events import EndStatus, ErrorInfo
from assistant.scheduler import NoProgress, Relay

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.dialogue")


@dataclass(frozen=True)
class Outcome:
    """How a dialogue call ended: its status, the error if it failed, and the engine's result if it returned one."""

    status: EndStatus
    error: ErrorInfo | None
    result: DialogueResult | None

    @property
    def usage(self) -> dict[str, int] | None:
        """Token counts as stored and sent on the wire, or None when the engine returned none."""
        if self.result is None or self.status == "failed":
            return None
        return {"prompt_tokens": self.result.usage.prompt_tokens, "completion_tokens": self.result.usage.completion_tokens}


class DialogueCall:
    """One `generate` call: iterate `deltas()` for its text, then read `outcome()`.

    `cancelled` is the engine's stop flag: setting it stops the engine at its next token. Cancelling
    the task that iterates also stops the engine, and waits for it, before the cancellation goes on.
    """

    def __init__(self, app: App, engine: DialogueEngine, request: DialogueRequest, cancelled: threading.Event | None = None) -> None:
        self.app = app
        self.engine = engine
        self.request = request
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self.future: asyncio.Future[DialogueResult] | None = None
        self.broken: str | None = None  # why the call was given up on (hung, or emitted something that is not text)

    async def deltas(self) -> AsyncGenerator[str]:
        """The engine's text deltas, in order, as they are produced; ends when the call has ended. Deltas the engine
        produced while the consumer was busy (sending the last one) come joined into one: the same text, fewer frames."""
        scheduler = self.app.scheduler
        relay: Relay[str] = Relay()
        gate = scheduler.gate
        cancelled = self.cancelled
        timeout = self.app.config.limits.engine_timeout_s
        on_loop = async_variant(self.engine, self.engine.generate) is not None  # never block the event loop

        def on_delta(delta: str) -> None:  # on the engine's thread (or the loop), after each piece of text
            if not on_loop:
                gate.pause_for_higher("dialogue", cancelled)
            relay.push(delta)

        self.future = future = scheduler.submit(self.engine, self.engine.generate, self.request, on_delta, cancelled)
        try:
            async for batch in relay.batches(future, timeout):  # deltas that piled up while we were busy go out as one
                for item in batch:
                    if not isinstance(item, str):
                        raise TypeError(f"the dialogue engine emitted {type(item).__name__} instead of text")
                yield batch[0] if len(batch) == 1 else "".join(batch)
        except (asyncio.CancelledError, GeneratorExit):
            # The consumer is gone: stop the engine at its next token (an async one now) and let it return before going on.
            cancelled.set()
            scheduler.stop(future)
            await asyncio.wait([future])
            raise
        except (NoProgress, TypeError) as exc:
            self.broken = f"the dialogue engine made no progress for {timeout:g} s" if isinstance(exc, NoProgress) else str(exc)
            log.error("dialogue call on %s: %s", self.engine.id, self.broken)
            await scheduler.give_up(self.engine, future, cancelled.set)

    def outcome(self) -> Outcome:
        """Final status, error and result of a finished, abandoned or never started call."""
        if self.broken is not None:
            return Outcome("failed", ErrorInfo("internal", self.broken), None)
        future = self.future
        if future is None:
            return Outcome("failed", ErrorInfo("internal", "the reply could not be started"), None)
        if not future.done() or future.cancelled():
            return Outcome("cancelled", None, None)
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, EngineError):
                log.warning("dialogue engine %s refused a request (%s): %s", self.engine.id, exc.code, exc)
                return Outcome("failed", ErrorInfo(error_code(exc.code), str(exc)), None)
            log.error("dialogue engine failed", exc_info=exc)
            return Outcome("failed", ErrorInfo("internal", f"the dialogue engine failed: {type(exc).__name__}: {exc}"), None)
        result = future.result()
        if not isinstance(result, DialogueResult):
            return Outcome("failed", ErrorInfo("internal", f"the dialogue engine returned {type(result).__name__} instead of a DialogueResult"), None)
        cancelled = result.finish_reason == "cancelled" or self.cancelled.is_set()
        return Outcome("cancelled" if cancelled else "completed", None, result)


async def complete(
    app: App, request: DialogueRequest, on_delta: Callable[[str], Awaitable[None]] | None = None,
    cancelled: threading.Event | None = None, ref: str | None = None,
) -> DialogueResult:
    """Ask the configured dialogue engine for one reply outside any conversation (the stateless HTTP wires).

    Deltas go to `on_delta` as they come. Returns the engine's result (finish_reason `cancelled` when
    `cancelled` was set); raises AssistantError when no engine is configured, its queue is full
    (`rate_limited`), the request asks for tools it cannot take (`unsupported`), or the call failed.
    """
    engine = app.engines.get("dialogue")
    if not isinstance(engine, DialogueEngine):
        raise AssistantError("unavailable", "no dialogue engine is configured ([engines] dialogue)", ref)
    if request.tools and request.tool_choice != "none" and not engine.capabilities.accepts_tools:
        raise AssistantError("unsupported", f"the dialogue engine {engine.id} cannot call tools", ref)
    app.scheduler.admit(engine, ref)
    call = DialogueCall(app, engine, request, cancelled)
    try:
        async with aclosing(call.deltas()) as deltas:  # leaving early (cancelled task) stops the engine first
            async for delta in deltas:
                if on_delta is not None:
                    await on_delta(delta)
    finally:
        app.scheduler.release_admissions()
    outcome = call.outcome()
    if outcome.error is not None:
        raise AssistantError(outcome.error.code, outcome.error.message, ref)
    if outcome.result is None:  # cancelled before the engine started
        return DialogueResult("", Usage(0, 0), "cancelled")
    return outcome.result
