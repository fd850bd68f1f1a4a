"""Where engine work runs: off the event loop, one worker queue per engine.

Each engine gets its own single-thread executor, so one model never runs two requests at once on
its weights while different engines (and the event loop) run in parallel. Batching across
sessions and priorities between roles build on this queue.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from assistant.engines import Engine

T = TypeVar("T")


class Scheduler:
    """Runs blocking engine calls on per-engine worker threads."""

    def __init__(self) -> None:
        self._workers: dict[int, ThreadPoolExecutor] = {}

    def _worker(self, engine: Engine) -> ThreadPoolExecutor:
        key = id(engine)
        if key not in self._workers:
            self._workers[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{engine.role}")
        return self._workers[key]

    def submit(self, engine: Engine, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)` on the engine's worker; returns an awaitable future."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._worker(engine), functools.partial(fn, *args))

    def close(self) -> None:
        """Wait for queued work to end and stop the workers."""
        for worker in self._workers.values():
            worker.shutdown(wait=True)
        self._workers.clear()
