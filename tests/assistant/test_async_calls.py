"""Engines with `_async` twins: awaited on the event loop under the scheduler's bounds; `stop_on` turns a stop flag into CallStopped."""

from __future__ import annotations

import asyncio
import threading

import pytest

from assistant import AsrEngine, Capabilities, Transcript
from assistant.async_calls import CallStopped, async_variant, stop_on
from assistant.metrics import Metrics
from assistant.scheduler import QueueFull, Scheduler


class AsyncAsr(AsrEngine):
    """An ASR engine whose calls are coroutines: each waits on `release`, recording the thread it ran on and how many ran at once."""

    def __init__(self, max_batch: int = 2) -> None:
        self.id = "fake:async-asr"
        self.capabilities = Capabilities(max_batch=max_batch)
        self.release = asyncio.Event()
        self.threads: list[threading.Thread] = []
        self.running = 0
        self.most = 0
        self.cancelled = 0

    def transcribe(self, samples, language=None) -> Transcript:
        """The blocking form is never called by the core when the twin exists."""
        raise AssertionError("the blocking transcribe ran")

    async def transcribe_async(self, samples, language=None) -> Transcript:
        """Wait for `release`, then hear the samples' length."""
        self.threads.append(threading.current_thread())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return Transcript(str(len(samples)), "en", len(samples) / 16000)


def test_only_an_engine_method_with_a_coroutine_twin_is_awaited():
    """async_variant finds `<name>_async` of a bound engine method; a plain function or a foreign method has none."""
    engine = AsyncAsr()
    assert async_variant(engine, engine.transcribe) == engine.transcribe_async
    assert async_variant(engine, lambda samples: None) is None
    assert async_variant(AsyncAsr(), engine.transcribe) is None
    assert async_variant(engine, engine.close) is None


async def test_async_calls_run_on_the_loop_within_max_batch_and_the_queue_bound():
    """Calls run on the event loop's thread, at most max_batch at once; the queue bound refuses the call past max_queued."""
    engine = AsyncAsr(max_batch=2)
    metrics = Metrics()
    scheduler = Scheduler({"asr": 2}, metrics)
    scheduler.max_queued = 3
    futures = [scheduler.submit(engine, engine.transcribe, [0.0] * n) for n in (1, 2, 3)]
    with pytest.raises(QueueFull):
        scheduler.admit(engine)
    await asyncio.sleep(0.05)
    assert engine.running == 2 and scheduler.in_flight(engine) == 3
    depth = {"role": "asr"}
    assert metrics.registry.get_sample_value("assistant_engine_queue_depth", depth) == 3  # queued or running
    engine.release.set()
    assert [t.text for t in await asyncio.gather(*futures)] == ["1", "2", "3"]
    assert engine.most == 2 and set(engine.threads) == {threading.current_thread()}
    assert scheduler.in_flight(engine) == 0 and scheduler.stuck_threads() == 0
    assert metrics.registry.get_sample_value("assistant_engine_queue_depth", depth) == 0
    assert metrics.registry.get_sample_value("assistant_engine_batch_size_count", depth) == 3


async def test_a_timed_out_or_abandoned_async_call_is_cancelled_not_left_running():
    """scheduler.call past its timeout cancels the coroutine (no thread is left behind); so does a caller that goes away."""
    engine = AsyncAsr()
    scheduler = Scheduler()
    with pytest.raises(TimeoutError):
        await scheduler.call(engine, 0.05, engine.transcribe, [0.0])
    await asyncio.sleep(0)
    assert engine.cancelled == 1 and engine.running == 0
    caller = asyncio.create_task(scheduler.call(engine, 30, engine.transcribe, [0.0]))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.wait([caller])
    await asyncio.sleep(0)
    assert engine.cancelled == 2 and scheduler.in_flight(engine) == 0


async def test_stop_on_turns_the_flag_into_call_stopped_and_lets_a_cancellation_through():
    """Setting the flag interrupts the block with CallStopped and leaves the task uncancelled; a cancel from outside stays a cancel."""
    flag = threading.Event()

    async def guarded() -> str:
        try:
            async with stop_on(flag):
                await asyncio.sleep(30)
        except CallStopped:
            await asyncio.sleep(0)  # the task can still await: nothing is left pending
            return "stopped"
        return "ended"

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    threading.Thread(target=flag.set).start()  # set from another thread, as a worker or a cancel would
    assert await task == "stopped" and task.cancelling() == 0
    with pytest.raises(CallStopped):
        async with stop_on(flag):  # already set: the block does not start
            raise AssertionError("ran")
    flag.clear()
    outer = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
