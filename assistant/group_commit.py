"""Group commit: one writer thread drains every pending store call into one transaction per flush.

A database pays its durable commit (an fsync for SQLite in WAL with synchronous=FULL) per
transaction, not per row. Calls that arrive while a flush is being written wait in the queue and go
out together in the next one, so N connections storing turns at once pay one commit, not N in a row.
Every caller is answered only after the commit that holds its work: a turn announced as created is
durable. When anything in a batch fails, the batch is rolled back and each call is run again in a
transaction of its own, so one bad call fails alone and the others still commit.

`GroupCommitter` knows nothing of the schema: `run_batch(calls)` (the store's) runs calls inside one
transaction; a call submitted with `batch=False` runs alone, between batches, in order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("assistant.store")

T = TypeVar("T")

MAX_BATCH = 256
"""Calls written in one transaction at most; more wait for the next flush."""

Outcome = tuple[bool, Any]
"""(True, result) or (False, the exception raised)."""


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    batch: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(answers: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    """On the event loop: hand each caller its result (callers that gave up are skipped)."""
    for future, (ok, value) in answers:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitter:
    """The store's one writer thread and its queue of calls."""

    def __init__(self, run_batch: Callable[[Sequence[Callable[[], Any]]], list[Outcome]], name: str = "store") -> None:
        """`run_batch(calls)` runs the calls in one transaction and returns one outcome per call, in order."""
        self._run_batch = run_batch
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._closed = False
        self.flushes = 0  # transactions written, for tests and metrics
        self.calls_written = 0  # calls run by the writer, batched or alone
        self.busy_seconds = 0.0  # wall time spent running calls: near all of it means the writer is the bottleneck
        self._thread.start()

    async def submit(self, fn: Callable[[], T], batch: bool = True) -> T:
        """Run `fn()` on the writer thread (in the next flush's transaction when `batch`) and await its result."""
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, batch, loop, future))
        return await future

    def close(self) -> None:
        """Finish every call queued so far, then stop the thread (blocking: call it off the event loop)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            stop = False
            while len(calls) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                calls.append(more)
            self._flush(calls)
            if stop:
                return

    def _flush(self, calls: list[_Call]) -> None:
        """Run the calls in order: each run of batchable calls in one transaction, the others alone."""
        began = time.perf_counter()
        outcomes: list[Outcome] = []
        run: list[_Call] = []
        for call in calls:
            if call.batch:
                run.append(call)
                continue
            outcomes += self._batch(run)
            run = []
            outcomes.append(self._alone(call))
        outcomes += self._batch(run)
        self.calls_written += len(calls)
        self.busy_seconds += time.perf_counter() - began
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
        for call, outcome in zip(calls, outcomes, strict=True):
            by_loop.setdefault(call.loop, []).append((call.future, outcome))
        for loop, answers in by_loop.items():  # one wake-up per loop per flush, not one per call
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    def _batch(self, run: list[_Call]) -> list[Outcome]:
        if not run:
            return []
        self.flushes += 1
        try:
            return self._run_batch([call.fn for call in run])
        except BaseException as exc:  # run_batch answers failures itself; this is a bug in it
            log.exception("a store batch failed")
            return [(False, exc)] * len(run)

    def _alone(self, call: _Call) -> Outcome:
        try:
            return True, call.fn()
        except Exception as exc:
            return False, exc
