"""Per-principal limits: turns per minute and sessions at once (`[limits]`)."""

from __future__ import annotations

import time
from collections import Counter, deque


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
    """Connections in a session per principal."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def enter(self, principal: str) -> bool:
        """Count a session for `principal`; False (not counted) when it already has `limit`."""
        if self._open[principal] >= self.limit:
            return False
        self._open[principal] += 1
        return True

    def leave(self, principal: str) -> None:
        """A session of `principal` ended."""
        self._open[principal] -= 1
        if self._open[principal] <= 0:
            del self._open[principal]

    def __getitem__(self, principal: str) -> int:
        return self._open.get(principal, 0)
