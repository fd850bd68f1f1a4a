"""Where engine work runs: off the event loop, one worker queue per engine.

Each engine gets its own executor, one thread by default, so one model never runs two requests at
once unless its role is given more workers (an image generator whose jobs each use their own
scheduler state), while different engines, and the event loop, run in parallel: a long image job
never holds up a dialogue reply. Batching across sessions and priorities between roles build on
this queue.

An engine method with an `_async` twin (see `assistant.async_calls`: remote engines) is awaited as a
task on the event loop instead, under the same queue bound, at most `max_batch` at once per engine;
it takes no thread and no part in the latency gate (its work runs on another machine).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from assistant.async_calls import async_variant
from assistant.engines import Engine
from assistant.errors import AssistantError

T = TypeVar("T")

_END = object()


class LatencyGate:
    """Latency classes between roles: work of a lower class (a larger number) pauses between its steps
    (tokens, denoising steps) while work of a higher class is running, so speech is transcribed before
    replies stream and replies stream before pictures paint. Roles in one class never wait for each other."""

    def __init__(self, classes: dict[str, int]) -> None:
        self.classes = dict(classes)
        self._running: dict[str, int] = {}
        self._changed = threading.Condition()
        self._highest: int | None = None  # the highest class (smallest number) running now, read without the lock

    def running(self, role: str) -> None:
        """A call of `role` started."""
        with self._changed:
            self._running[role] = self._running.get(role, 0) + 1
            self._update_highest()

    def finished(self, role: str) -> None:
        """A call of `role` ended."""
        with self._changed:
            self._running[role] -= 1
            self._update_highest()
            self._changed.notify_all()

    def _update_highest(self) -> None:
        classes = [self.classes[role] for role, count in self._running.items() if count > 0 and role in self.classes]
        self._highest = min(classes) if classes else None

    def pause_for_higher(self, role: str, cancelled: threading.Event | None = None) -> None:
        """Block (on the worker thread) while a higher class runs; returns at once when cancelled."""
        mine = self.classes.get(role)
        highest = self._highest  # a step between tokens costs no lock while nothing of a higher class runs
        if mine is None or highest is None or highest >= mine:
            return
        with self._changed:
            while not (cancelled is not None and cancelled.is_set()) and any(
                count > 0 and self.classes.get(other, mine) < mine for other, count in self._running.items()
            ):
                self._changed.wait(0.05)


class QueueFull(AssistantError):
    """An engine already has as many calls waiting or running as the scheduler allows (rate_limited)."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__("rate_limited", message, ref)


class NoProgress(Exception):
    """An engine call pushed nothing for longer than its idle timeout."""


class Relay(Generic[T]):
    """Carries items an engine pushes from its worker thread to the event loop, in order.

    Hand `push` to the engine as its callback (text deltas, progress steps), then iterate
    `until(future)` (one item at a time) or `batches(future)` (everything that piled up since the last
    look, for a consumer that can merge items: text deltas while the socket was busy go out as one):
    every item pushed before the engine call returned arrives, then iteration stops. The loop is woken
    once per burst of pushes, not once per item.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[T] = deque()  # append (worker) and popleft (loop) are atomic
        self._waiter: asyncio.Future[None] | None = None  # the consumer waiting for items, if it is
        self._waiting_since = 0.0
        self._woken = False  # a wake-up is on its way to the loop: later pushes need not send another
        self._ended = False
        self._timer: asyncio.TimerHandle | None = None

    def push(self, item: T) -> None:
        """Queue an item for the event loop; safe to call from any thread."""
        self._items.append(item)
        if not self._woken:
            self._woken = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, _future: asyncio.Future[Any]) -> None:
        self._ended = True
        self._wake()

    def _watch(self, idle_timeout_s: float) -> None:
        """The idle timer (one per call, not one per wait): fails a wait that has lasted `idle_timeout_s`, else looks again
        when the current wait would reach it."""
        loop, waiter = self._loop, self._waiter
        if waiter is None or waiter.done():  # the consumer is busy (or done): nothing to time yet
            if not self._ended:
                self._timer = loop.call_at(loop.time() + idle_timeout_s, self._watch, idle_timeout_s)
        elif loop.time() - self._waiting_since >= idle_timeout_s:
            waiter.set_exception(NoProgress(f"no progress for {idle_timeout_s} s"))
        else:
            self._timer = loop.call_at(self._waiting_since + idle_timeout_s, self._watch, idle_timeout_s)

    async def batches(self, future: asyncio.Future[Any], idle_timeout_s: float | None = None) -> AsyncIterator[list[T]]:
        """Lists of the items pushed since the last one (never empty), in order, until `future` (the engine call) is done.

        Raises NoProgress when nothing arrives for `idle_timeout_s` of waiting (a hung engine).
        """
        # The future completes through call_soon_threadsafe after the worker's last push, so once it is
        # done every item is already queued.
        future.add_done_callback(self._end)
        items = self._items
        loop = self._loop
        if idle_timeout_s is not None:
            self._timer = loop.call_at(loop.time() + idle_timeout_s, self._watch, idle_timeout_s)
        try:
            while True:
                self._woken = False  # before taking: a push after this point sends a wake-up of its own
                if items:
                    taken = [items.popleft() for _ in range(len(items))]
                    yield taken
                    continue
                if self._ended:
                    return
                self._waiting_since = loop.time()
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def until(self, future: asyncio.Future[Any], idle_timeout_s: float | None = None) -> AsyncIterator[T]:
        """The pushed items one at a time, in order, until `future` (the engine call) is done (see `batches`)."""
        async for batch in self.batches(future, idle_timeout_s):
            for item in batch:
                yield item


@dataclass(eq=False)
class Admission:
    """A place in an engine's queue, taken by `Scheduler.admit` before the call exists (the turn is still
    being stored); the engine's next `submit` from the same task (or a task it starts) turns it into the call."""

    key: int
    released: bool = False


_admissions: ContextVar[list[Admission] | None] = ContextVar("admissions", default=None)


class Scheduler:
    """Runs blocking engine calls on per-engine worker threads."""

    def __init__(self, workers_per_role: dict[str, int] | None = None, metrics: Any = None) -> None:
        self.workers_per_role = dict(workers_per_role or {})
        self.metrics = metrics  # assistant.metrics.Metrics, or None
        self._metrics_by_role: dict[str, Any] = {}  # role -> its batch size histogram
        self.max_queued: int | None = None
        self.gate = LatencyGate({})
        self._running_calls: dict[int, set[object]] = {}  # engine -> its calls running now (for the gate)
        self._calls_lock = threading.Lock()
        self._in_flight: dict[int, int] = {}
        self._in_flight_by_role: dict[str, int] = {}  # what the queue depth gauge shows
        self._admitted: dict[int, int] = {}  # places taken by admit() whose call is not submitted yet
        self._workers: dict[int, ThreadPoolExecutor] = {}
        self._slots: dict[int, asyncio.Semaphore] = {}  # per engine with async calls: how many run at once
        self._named: dict[str, ThreadPoolExecutor] = {}
        self._abandoned: list[ThreadPoolExecutor] = []

    def _worker(self, engine: Engine) -> ThreadPoolExecutor:
        key = id(engine)
        if key not in self._workers:
            count = self.workers_per_role.get(engine.role, 1)
            self._workers[key] = ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"engine-{engine.role}")
        return self._workers[key]

    def submit(self, engine: Engine, fn: Callable[..., T], *args: Any, batch: int = 1) -> asyncio.Future[T]:
        """Queue `fn(*args)` on the engine's worker; returns an awaitable future. `batch`: requests it serves (metrics).

        When `fn` is an engine method with an `_async` twin, the twin is awaited instead: the future is
        then an `asyncio.Task`, and cancelling it stops the call at once (`stop`)."""
        loop = asyncio.get_running_loop()
        twin = async_variant(engine, fn)
        future: asyncio.Future[T]
        if twin is not None:
            future = loop.create_task(self._awaited(engine, twin, args))
        else:
            future = loop.run_in_executor(self._worker(engine), self._marked, engine, functools.partial(fn, *args))
        key = id(engine)
        for admission in _admissions.get() or ():
            if admission.key == key and not admission.released:
                self._release_admission(admission)  # the call takes its place, with no moment between
                break
        role = engine.role
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._in_flight_by_role[role] = self._in_flight_by_role.get(role, 0) + 1
        future.add_done_callback(lambda _future: self._done(key, role))
        if self.metrics is not None:
            self._batch_sizes(role).observe(batch)
        return future

    def _batch_sizes(self, role: str) -> Any:
        """The role's batch size histogram, looked up once per role; the first look also hands the role's queue depth
        gauge its count, read when /metrics is scraped (nothing to update per call)."""
        found = self._metrics_by_role.get(role)
        if found is None:
            self.metrics.queue_depth.labels(role).set_function(lambda: self._in_flight_by_role.get(role, 0))
            found = self._metrics_by_role[role] = self.metrics.batch_size.labels(role)
        return found

    async def _awaited(self, engine: Engine, twin: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Await an engine's async call once one of its `max_batch` places is free."""
        key = id(engine)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.workers_per_role.get(engine.role, 1))
        async with slots:
            return await twin(*args)

    @staticmethod
    def stop(future: asyncio.Future[Any]) -> None:
        """Stop an async engine call now (its task is cancelled: an HTTP stream it holds is closed). A call on a
        worker thread cannot be stopped this way: set its stop flag instead."""
        if isinstance(future, asyncio.Task):
            future.cancel()

    def _marked(self, engine: Engine, call: Callable[[], T]) -> T:
        """Run an engine call, known to the latency gate while it runs (until it ends or is abandoned)."""
        token = object()
        with self._calls_lock:
            self._running_calls.setdefault(id(engine), set()).add(token)
        self.gate.running(engine.role)
        try:
            return call()
        finally:
            self._release(engine, token)

    def _release(self, engine: Engine, token: object) -> None:
        with self._calls_lock:
            calls = self._running_calls.get(id(engine), set())
            if token not in calls:
                return  # abandoned: already released
            calls.discard(token)
        self.gate.finished(engine.role)

    def _done(self, key: int, role: str) -> None:
        self._in_flight[key] -= 1
        if not self._in_flight[key]:
            del self._in_flight[key]
        self._in_flight_by_role[role] -= 1

    def in_flight(self, engine: Engine) -> int:
        """Calls of this engine waiting or running, and places admitted for calls about to be submitted."""
        key = id(engine)
        return self._in_flight.get(key, 0) + self._admitted.get(key, 0)

    def admit(self, engine: Engine, ref: str | None = None) -> Admission:
        """Take a place in the engine's queue, or raise QueueFull (about client event `ref`) when it already
        has `max_queued` calls waiting, running or admitted.

        Checked before a turn is stored, so a refused turn leaves nothing behind; bounded queues keep
        memory flat under overload instead of growing without end. The place is taken here, in the same
        step as the check, so turns admitted together can never overshoot the bound while they are
        being stored; the engine's next `submit` in this task uses it, and `release_admissions` gives
        back any left unused when the turn ends.
        """
        if self.max_queued is not None and self.in_flight(engine) >= self.max_queued:
            raise QueueFull(f"the {engine.role} engine already has {self.max_queued} requests waiting or running; try again shortly", ref)
        admission = Admission(id(engine))
        self._admitted[admission.key] = self._admitted.get(admission.key, 0) + 1
        held = _admissions.get()
        if held is None:
            held = []
            _admissions.set(held)
        held.append(admission)
        return admission

    def _release_admission(self, admission: Admission) -> None:
        if admission.released:
            return
        admission.released = True
        self._admitted[admission.key] -= 1
        if not self._admitted[admission.key]:
            del self._admitted[admission.key]

    def release_admissions(self) -> None:
        """Give back the places this task admitted and never used (its turn ended or failed before the call)."""
        held = _admissions.get()
        if held:
            for admission in held:
                self._release_admission(admission)
            held.clear()

    def submit_named(self, key: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)` on a single worker thread named `key` (for small shared models such as VAD)."""
        if key not in self._named:
            self._named[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=key)
        return asyncio.get_running_loop().run_in_executor(self._named[key], functools.partial(fn, *args))

    def abandon(self, engine: Engine | None = None, key: str | None = None) -> None:
        """Give up on a hung worker: later calls get a fresh one; the stuck thread is left to finish (or not).

        Python cannot stop a thread; this keeps one engine call that never returns from holding up
        every later call to that engine.
        """
        if engine is not None:  # a hung call must not hold lower latency classes back forever
            with self._calls_lock:
                stuck = self._running_calls.pop(id(engine), set())
            for _ in stuck:
                self.gate.finished(engine.role)
        worker = self._workers.pop(id(engine), None) if engine is not None else self._named.pop(key or "", None)
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=False)
            self._abandoned.append(worker)

    async def give_up(self, engine: Engine, future: asyncio.Future[Any] | None, cancel: Callable[[], None]) -> None:
        """Stop a broken engine call: `cancel()`, and if it has not returned within a second, abandon its worker."""
        cancel()
        if future is not None:
            self.stop(future)
            await asyncio.wait([future], timeout=1.0)
            if not future.done():
                self.abandon(engine)

    def stuck_threads(self) -> int:
        """Threads of abandoned workers still running an engine call."""
        return sum(1 for worker in self._abandoned for thread in getattr(worker, "_threads", ()) if thread.is_alive())

    async def call(self, engine: Engine, timeout_s: float, fn: Callable[..., T], *args: Any, batch: int = 1) -> T:
        """`submit` and await the result; TimeoutError (and the worker abandoned, or the async call stopped) past `timeout_s`."""
        future = self.submit(engine, fn, *args, batch=batch)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if isinstance(future, asyncio.Task):
                future.cancel()
            else:
                self.abandon(engine)
            raise
        except asyncio.CancelledError:  # the caller is gone: an async call stops with it (a thread cannot)
            self.stop(future)
            raise

    def close(self) -> None:
        """Wait for queued work to end and stop the workers (abandoned ones are not waited for)."""
        for worker in [*self._workers.values(), *self._named.values()]:
            worker.shutdown(wait=True)
        self._workers.clear()
        self._named.clear()
