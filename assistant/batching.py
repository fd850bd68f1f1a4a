"""Coalescing concurrent blocking calls into batches, for engines whose model takes a batch at once.

Threads call `submit(item)`; the first caller of a batch becomes its leader, waits `window_s` (or
until `max_batch` items are queued), runs `run_batch(items)` once for all of them and hands each
caller its own result (or the exception). Callers therefore block about as long as the batch takes;
the core gives a batching engine `max_batch` worker threads so that concurrent calls reach it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Pending(Generic[Item]):
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Coalescer(Generic[Item, Result]):
    """Turns concurrent `submit` calls into `run_batch` calls of up to `max_batch` items."""

    def __init__(self, run_batch: Callable[[list[Item]], list[Result]], max_batch: int, window_s: float = 0.01) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.batch_sizes: list[int] = []  # every batch run (tests, metrics)
        self._lock = threading.Condition()
        self._queue: list[_Pending[Item]] = []
        self._leading = False

    def submit(self, item: Item) -> Result:
        """Run `item` in the next batch and return its result (blocking)."""
        pending = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            self._lock.notify_all()
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> None:
        """Collect for the window, run batches until the queue is empty, then give up the lead."""
        deadline = time.monotonic() + self.window_s
        with self._lock:
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
        while True:
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if not batch:
                    self._leading = False
                    return
            self.batch_sizes.append(len(batch))
            try:
                results = self.run_batch([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
                for p, result in zip(batch, results):
                    p.result = result
            except BaseException as exc:
                for p in batch:
                    p.error = exc
            for p in batch:
                p.done.set()
