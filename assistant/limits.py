"""Limits: turns per minute, sessions at once (`[limits]`), and the process's budget of media bytes in flight."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable


class TurnRate:
    """A sliding one-minute window of turn starts per principal."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._starts: dict[str, deque[float]] = {}

    def take(self, principal: str, now: float | None = None) -> float | None:
        """Count a turn for `principal`; None when allowed, else the seconds until one is allowed again."""
        now = time.monotonic() if now is None else now
        starts = self._starts.setdefault(principal, deque())
        while starts and now - starts[0] >= self.window_s:
            starts.popleft()
        if len(starts) >= self.per_minute:
            return self.window_s - (now - starts[0])
        starts.append(now)
        return None

    def forget_idle(self, now: float | None = None) -> None:
        """Drop principals with no turn in the window (bounded memory)."""
        now = time.monotonic() if now is None else now
        for principal in [p for p, starts in self._starts.items() if not starts or now - starts[-1] >= self.window_s]:
            del self._starts[principal]


class SessionCount:
    """Connections in a session per key (a principal, or a principal at a client address) and in all.

    The per-key limit stops one runaway client; the total (`max_total`, much higher) bounds the process.
    """

    def __init__(self, limit: int, max_total: int | None = None) -> None:
        self.limit = limit
        self.max_total = max_total
        self.total = 0
        self._open: Counter[str] = Counter()

    def enter(self, key: str) -> str | None:
        """Count a session for `key`; None when counted, else why not (the key's limit, or the total)."""
        if self._open[key] >= self.limit:
            return f"{key} already has {self.limit} sessions open"
        if self.max_total is not None and self.total >= self.max_total:
            return f"the server already has {self.max_total} sessions open"
        self._open[key] += 1
        self.total += 1
        return None

    def leave(self, key: str) -> None:
        """A session of `key` ended."""
        self._open[key] -= 1
        self.total -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def __getitem__(self, key: str) -> int:
        return self._open.get(key, 0)


class MediaBudget:
    """Bytes of decoded media in flight across every request of the process (`[limits] media_bytes_in_flight`).

    A request takes what its decoding may hold before decoding and gives it back when done; past the
    budget, a request waits for others to finish, up to a deadline. One item larger than the whole
    budget is let through alone (when nothing else is in flight), so it cannot wait forever.
    `on_change(used)` is told every change (the metrics gauge).
    """

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._on_change = on_change
        self._freed = asyncio.Event()

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.limit or self.used == 0

    async def acquire(self, size: int, wait_s: float) -> bool:
        """Take `size` bytes, waiting up to `wait_s` for room; False (nothing taken) when there was none."""
        deadline = time.monotonic() + wait_s
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._freed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._freed.wait()
            except TimeoutError:
                return False
        self._take(size)
        return True

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)
        if self._on_change is not None:
            self._on_change(self.used)

    def shrink(self, taken: int, kept: int) -> int:
        """Keep only `kept` of `taken` bytes (what decoding left behind); returns `kept`."""
        self.release(max(0, taken - kept))
        return min(kept, taken)

    def release(self, size: int) -> None:
        """Give back `size` bytes (from the event loop's thread)."""
        if size <= 0:
            return
        self.used = max(0, self.used - size)
        if self._on_change is not None:
            self._on_change(self.used)
        self._freed.set()
