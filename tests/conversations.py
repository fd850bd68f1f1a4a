"""A harness for driving the turn core with no socket: an Emit that records events, and waiting helpers."""

from __future__ import annotations

import asyncio

from assistant import events
from assistant.conversation import Conversation


class Recorder:
    """An `Emit` that numbers events and keeps them in seq order, as a channel delivers them, and a `Tell` that keeps errors."""

    def __init__(self) -> None:
        self.numbered: list[tuple[int, events.Event]] = []
        self.told: list[events.Event] = []
        self.seq = 0

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def reserve(self) -> int:
        return self._next()

    async def __call__(self, event: events.Event, seq: int | None = None) -> None:
        self.numbered.append((self._next() if seq is None else seq, event))

    @property
    def events(self) -> list[events.Event]:
        return [event for _, event in sorted(self.numbered, key=lambda pair: pair[0])]

    async def tell(self, event: events.Event) -> None:
        self.told.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 30) -> list:
        """The first `count` events of `kind`, waiting for them."""
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.005)
        return self.of(kind)[:count]


async def settle(conversation: Conversation, timeout: float = 30) -> None:
    """Wait until the conversation has no turn or image job left."""
    async with asyncio.timeout(timeout):
        while conversation.busy():
            await asyncio.sleep(0.005)


def kinds(recorder: Recorder) -> list[str]:
    """The names of the recorded events' types, in seq order."""
    return [type(e).__name__ for e in recorder.events]
