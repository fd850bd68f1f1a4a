"""Conversation channels: a conversation's events, numbered without gaps, sent to every connection that
follows it, and kept in a bounded buffer so a client that reconnects gets what it missed.

A conversation event (a domain event from `assistant.events`) takes the next
`seq` of its conversation. A seq may be reserved before its event exists (a reply's `response.done`
is numbered before the reply is stored, so the store knows the conversation's last seq); events are
delivered strictly in seq order, a later one waiting for a reserved one. Events in flight keep being
published after their client has gone: they are buffered and reach whoever follows the conversation
next. A channel nobody follows is dropped `ttl_s` after its last follower left, its last seq kept in
the store.

Seqs only ever rise, across restarts and crashes: with a store (`reserve_seqs`), no event is handed
to a follower past the conversation's durably reserved seq; the channel raises that reservation by
SEQ_BLOCK before it gets there, and after a crash numbering resumes past it. A reply's events a
client saw can therefore never be numbered again, and a replay after a restart says it is not
complete unless the client saw the last reserved seq.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from assistant.events import Event

log = logging.getLogger("assistant.channels")

SEQ_BLOCK = 100
"""Seqs reserved in the store at a time: one store write per this many events."""

STALL_S = 10.0
"""A reserved seq not published within this long is skipped (a bug elsewhere), so delivery never stalls for good."""


class Follower(Protocol):
    """A connection following a conversation."""

    async def deliver(self, seq: int, event: Event) -> None:
        """Send one numbered event to the client in its wire's form (ignoring a closed connection)."""


class Channel:
    """One conversation's numbering, buffer and followers."""

    def __init__(self, conversation_id: str, last_seq: int, capacity: int) -> None:
        self.conversation_id = conversation_id
        self.last_reserved = last_seq
        self.last_delivered = last_seq
        self.buffer: deque[tuple[int, Event]] = deque(maxlen=capacity)
        self.pending: dict[int, tuple[Event, float]] = {}
        self.followers: set[Follower] = set()
        self.left_at: float | None = time.monotonic()
        self.durable = last_seq  # seqs up to this one are reserved in the store: deliverable
        self.reserving = asyncio.Lock()

    def reserve(self) -> int:
        """The next seq, to be published later."""
        self.last_reserved += 1
        return self.last_reserved

    def since(self, last_seq: int) -> tuple[list[tuple[int, Event]], bool]:
        """Buffered events after `last_seq`, and whether they are all the client missed."""
        events = [(seq, event) for seq, event in self.buffer if seq > last_seq]
        oldest = self.buffer[0][0] if self.buffer else self.last_delivered + 1
        complete = oldest - 1 <= last_seq <= self.last_delivered
        return events, complete

    def ready(self) -> list[tuple[int, Event]]:
        """Events now deliverable in order, moved from pending to the buffer."""
        out = []
        if self.pending and (self.last_delivered + 1) not in self.pending:
            oldest_wait = min(at for _, at in self.pending.values())
            if time.monotonic() - oldest_wait > STALL_S:
                skip_to = min(self.pending) - 1
                log.error("conversation %s: seq %d..%d never published; skipped", self.conversation_id, self.last_delivered + 1, skip_to)
                self.last_delivered = skip_to
        while (self.last_delivered + 1) in self.pending:
            self.last_delivered += 1
            event, _ = self.pending.pop(self.last_delivered)
            self.buffer.append((self.last_delivered, event))
            out.append((self.last_delivered, event))
        return out


class Channels:
    """Every live conversation channel of the process."""

    def __init__(
        self, capacity: int, ttl_s: float, persist_last_seq: Callable[[str, int], Awaitable[None]] | None = None,
        reserve_seqs: Callable[[str, int], Awaitable[None]] | None = None,
        settle_seqs: Callable[[str, int, int], Awaitable[None]] | None = None,
    ) -> None:
        """`persist_last_seq(id, seq)` records a dropped channel's last seq; with a store, `reserve_seqs(id, until)`
        durably reserves seqs up to `until` (never lowering it) and `settle_seqs(id, delivered, reserved)` records a
        dropped channel's last seq and gives back its unused reservation if it is still `reserved`."""
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.persist_last_seq = persist_last_seq
        self.reserve_seqs = reserve_seqs
        self.settle_seqs = settle_seqs
        self._channels: dict[str, Channel] = {}

    def __len__(self) -> int:
        return len(self._channels)

    def live(self) -> list[Channel]:
        """Every channel held now."""
        return list(self._channels.values())

    def get(self, conversation_id: str, stored_last_seq: int = 0) -> Channel:
        """The conversation's channel, created (counting on from `stored_last_seq`) if it is not live."""
        channel = self._channels.get(conversation_id)
        if channel is None:
            self.sweep()
            channel = self._channels[conversation_id] = Channel(conversation_id, stored_last_seq, self.capacity)
        return channel

    async def open(self, conversation_id: str, stored_last_seq: int = 0) -> Channel:
        """The conversation's channel, ready to `follow` and replay from (across nodes it is loaded first)."""
        return self.get(conversation_id, stored_last_seq)

    def reserve(self, conversation_id: str) -> int:
        """Reserve the conversation's next seq; the caller must publish an event with it."""
        return self.get(conversation_id).reserve()

    async def reserve_next(self, conversation_id: str) -> int:
        """`reserve`, as `Emit.reserve` calls it (across nodes the seq comes from Redis)."""
        return self.get(conversation_id).reserve()

    def last_seq(self, conversation_id: str) -> int:
        """The seq of the conversation's last delivered event (0 if the channel is not live)."""
        channel = self._channels.get(conversation_id)
        return channel.last_delivered if channel is not None else 0

    async def publish(self, conversation_id: str, event: Event, seq: int | None = None) -> int:
        """Number an event (or use its reserved `seq`), buffer it and deliver it in order; returns its seq.

        Delivery to each follower is awaited in turn; each follower renders it for its own wire.
        """
        channel = self.get(conversation_id)
        if seq is None:
            seq = channel.reserve()
        if self.reserve_seqs is not None and seq > channel.durable:
            async with channel.reserving:
                if seq > channel.durable:  # reserved in the store before anyone may see it
                    until = max(seq, channel.last_reserved) + SEQ_BLOCK
                    await self.reserve_seqs(conversation_id, until)
                    channel.durable = until
        channel.pending[seq] = (event, time.monotonic())
        for ready_seq, ready in channel.ready():
            for follower in list(channel.followers):
                await follower.deliver(ready_seq, ready)
        return seq

    def follow(self, conversation_id: str, follower: Follower, stored_last_seq: int = 0) -> Channel:
        """Start delivering the conversation's events to `follower`."""
        channel = self.get(conversation_id, stored_last_seq)
        channel.followers.add(follower)
        channel.left_at = None
        return channel

    def unfollow(self, conversation_id: str, follower: Follower) -> None:
        """Stop delivering to `follower`; the channel lingers `ttl_s` for a reconnect."""
        channel = self._channels.get(conversation_id)
        if channel is not None:
            channel.followers.discard(follower)
            if not channel.followers:
                channel.left_at = time.monotonic()
        self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Drop channels nobody has followed for `ttl_s` and with nothing pending; returns how many."""
        now = time.monotonic() if now is None else now
        dropped = [
            channel for channel in self._channels.values()
            if not channel.followers and not channel.pending and channel.last_reserved == channel.last_delivered
            and channel.left_at is not None and now - channel.left_at >= self.ttl_s
        ]
        for channel in dropped:
            del self._channels[channel.conversation_id]
            if (self.persist_last_seq is not None or self.settle_seqs is not None) and channel.last_delivered:
                self._persist(channel)
        return len(dropped)

    def settle(self, channel: Channel) -> Awaitable[None] | None:
        """Record the channel's last seq in the store, giving back its unused reservation (for a channel with nothing in flight)."""
        if self.settle_seqs is not None:
            return self.settle_seqs(channel.conversation_id, channel.last_delivered, channel.durable)
        if self.persist_last_seq is not None:
            return self.persist_last_seq(channel.conversation_id, channel.last_delivered)
        return None

    def _persist(self, channel: Channel) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutting down): the store's value may lag; resumed seqs still increase past it
            return
        settling = self.settle(channel)
        if settling is not None:
            task = loop.create_task(_awaited(settling))
            task.add_done_callback(_log_failure)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("storing last seq failed", exc_info=task.exception())


class ChannelEmit:
    """The `Emit` of one conversation: publishes its events on the conversation's channel."""

    __slots__ = ("channels", "conversation_id")

    def __init__(self, channels: Channels, conversation_id: str) -> None:
        self.channels = channels
        self.conversation_id = conversation_id

    async def reserve(self) -> int:
        """Reserve the conversation's next seq."""
        return await self.channels.reserve_next(self.conversation_id)

    async def __call__(self, event: Event, seq: int | None = None) -> None:
        """Publish `event` to every follower of the conversation."""
        await self.channels.publish(self.conversation_id, event, seq)
