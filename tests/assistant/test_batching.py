"""The coalescer that turns concurrent engine calls into batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from assistant.batching import Coalescer


def test_concurrent_calls_share_batches_and_get_their_own_results():
    """Eight threads at once: batches of at most 4, every caller its own result, in one or two runs."""
    start = threading.Barrier(8)
    coalescer: Coalescer[int, int] = Coalescer(lambda items: [i * 10 for i in items], max_batch=4, window_s=0.05)

    def call(i):
        start.wait()
        return coalescer.submit(i)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(8))) == [i * 10 for i in range(8)]
    assert sum(coalescer.batch_sizes) == 8 and max(coalescer.batch_sizes) <= 4 and len(coalescer.batch_sizes) <= 4


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_works():
    """An exception reaches every caller of that batch; later calls run normally."""
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise ValueError("model broke")
        return items

    coalescer: Coalescer[str, str] = Coalescer(run, max_batch=4, window_s=0.0)
    with pytest.raises(ValueError, match="model broke"):
        coalescer.submit("a")
    assert coalescer.submit("b") == "b"
