"""Notices for a principal rather than a conversation: every connected client of that principal hears them.

A dialect subscribes each authenticated session (`subscribe(principal, tell)` returns the
unsubscribe callable) and drops it when the session leaves. The core calls `notify(principal,
event)`, for example when a reminder falls due; nobody else's sessions hear it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from assistant.events import Event
from assistant.types import Tell

log = logging.getLogger("assistant.notices")


class Notices:
    """Per-principal registry of connected clients' `tell` callables."""

    def __init__(self, on_subscribe: Callable[[str], None] | None = None) -> None:
        self._listeners: dict[str, dict[int, Tell]] = {}
        self._next = 0
        self.on_subscribe = on_subscribe  # called with the principal after each subscribe (the reminder clock looks again)

    def subscribe(self, principal: str, tell: Tell) -> Callable[[], None]:
        """Let `tell` hear `principal`'s notices until the returned callable is called (calling it twice is harmless)."""
        self._next += 1
        key = self._next
        self._listeners.setdefault(principal, {})[key] = tell
        if self.on_subscribe is not None:
            self.on_subscribe(principal)

        def unsubscribe() -> None:
            listeners = self._listeners.get(principal)
            if listeners is not None:
                listeners.pop(key, None)
                if not listeners:
                    del self._listeners[principal]

        return unsubscribe

    def principals(self) -> list[str]:
        """Every principal with a client subscribed now."""
        return list(self._listeners)

    def listeners(self, principal: str) -> int:
        """How many clients of `principal` are subscribed now."""
        return len(self._listeners.get(principal, {}))

    async def notify(self, principal: str, event: Event) -> int:
        """Send `event` to every subscribed client of `principal`; returns how many it reached.

        A client whose `tell` fails is logged and skipped: one broken connection never keeps the others from hearing.
        """
        reached = 0
        for tell in list(self._listeners.get(principal, {}).values()):
            try:
                await tell(event)
                reached += 1
            except Exception:
                log.exception("a notice for %s could not be delivered", principal)
        return reached
