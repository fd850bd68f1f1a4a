"""Protocols the core passes around. A leaf: imports nothing from the package but events."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from assistant.events import Event


class Emit(Protocol):
    """Where one conversation's events go: numbered, kept for replay and sent to every follower.

    `assistant.channels.ChannelEmit` is the real one; tests may collect events in a list instead.
    """

    def reserve(self) -> int:
        """Reserve the conversation's next seq for an event published later (a reply's end, numbered before it is stored)."""

    async def __call__(self, event: Event, seq: int | None = None) -> None:
        """Publish `event`, numbered next or with its reserved `seq`."""


Tell = Callable[[Event], Awaitable[None]]
"""Sends an event to one client only (an `Error` about its own request)."""
