"""Engines whose calls are awaited on the event loop instead of run on a worker thread.

An engine whose work happens elsewhere (a remote inference server reached over HTTP) would only hold
a thread while it waits. Such an engine defines, next to a blocking method of its role (`generate`,
`transcribe`, ...), a coroutine method of the same name with `_async` appended and the same
arguments. `Scheduler.submit` then awaits that coroutine as a task on the event loop, under the same
queue bound (`[scheduler] max_queued`) and at most `Capabilities.max_batch` at once per engine, with
no thread per call. The blocking method stays: scripts and the conformance kit call it directly.

Cancelling the task (a client that went away, a call given up on) raises CancelledError at the
coroutine's current await, so an HTTP stream it holds in `async with` is closed there. A call's stop
flag (the `cancelled` threading.Event of `generate`) is a thread primitive nothing can await:
`stop_on(cancelled)` watches it and interrupts the block it guards, raising `CallStopped`, so the
engine can end the way its role says (finish_reason `cancelled`, GenerationCancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

ASYNC_SUFFIX = "_async"
"""`generate` -> `generate_async`: the name of a blocking method's awaitable twin."""

STOP_POLL_S = 0.05
"""How often `stop_on` looks at its flag (the latency gate waits in the same steps)."""


def async_variant(engine: object, fn: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]] | None:
    """The coroutine method to await instead of `fn`, when `fn` is a bound method of `engine` that has an `_async` twin."""
    if getattr(fn, "__self__", None) is not engine:
        return None
    twin = getattr(engine, getattr(fn, "__name__", "") + ASYNC_SUFFIX, None)
    return twin if twin is not None and inspect.iscoroutinefunction(twin) else None


class CallStopped(Exception):
    """Raised by `stop_on` when the stop flag it watches was set while its block ran."""


@contextlib.asynccontextmanager
async def stop_on(flag: threading.Event, poll_s: float = STOP_POLL_S) -> AsyncIterator[None]:
    """Run the block until it ends or `flag` is set; once set, the block is interrupted at its current await
    (as a cancellation would) and CallStopped is raised instead. A cancellation from outside passes through."""
    if flag.is_set():
        raise CallStopped()
    task = asyncio.current_task()
    assert task is not None, "stop_on runs inside a task"
    fired = False

    async def watch() -> None:
        nonlocal fired
        while not flag.is_set():
            await asyncio.sleep(poll_s)
        fired = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    counted = False  # our cancel request was taken back already
    try:
        yield
    except asyncio.CancelledError:
        if fired:
            counted = True
            if task.uncancel() == 0:  # our own cancel, and nobody else's: a stop, not a cancellation
                raise CallStopped() from None
        raise
    finally:
        watcher.cancel()
        if fired and not counted:  # the block swallowed our cancel: take the request back all the same
            task.uncancel()
