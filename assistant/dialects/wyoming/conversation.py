"""Home Assistant conversations on the Wyoming wire: each Home Assistant conversation id is one stored conversation.

The stored conversation's id is derived from the principal and Home Assistant's id (a UUID 5), so the same
Home Assistant conversation always continues the same stored one, with no table to keep; it is created on
first use, owned by `[wyoming] principal`. A turn goes through the core's `Conversation` like any client's
(turn rate, the stored history as context, whatever the core adds to turns), and its events reach other
followers of the conversation through its channel as well as this connection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from assistant import events
from assistant.channels import ChannelEmit
from assistant.conversation import Conversation, open_conversation
from assistant.engines import GenerationOptions
from assistant.errors import AssistantError
from assistant.turns import TextIn

if TYPE_CHECKING:
    from assistant.app import App

NAMESPACE = uuid.UUID("6b1d3c1e-5f0e-4a8e-9d55-1f8f7a8b2c10")
"""Namespace of the UUID 5 that names the stored conversation of a Home Assistant conversation."""


def stored_id(principal: str, external_id: str) -> str:
    """The stored conversation id for Home Assistant's `external_id`, held by `principal`."""
    return uuid.uuid5(NAMESPACE, f"wyoming\0{principal}\0{external_id}").hex


class _Tap:
    """The conversation's Emit, also handing each event of this client's turn to `sink`."""

    def __init__(self, inner: ChannelEmit, sink: Callable[[events.Event], None]) -> None:
        self.inner = inner
        self.sink = sink

    async def reserve(self) -> int:
        """The conversation's next seq."""
        return await self.inner.reserve()

    async def __call__(self, event: events.Event, seq: int | None = None) -> None:
        """Publish to every follower, then to this connection."""
        await self.inner(event, seq)
        self.sink(event)


class _Holder:
    """A follower that only keeps the conversation's channel (and its numbering) alive while a turn runs."""

    async def deliver(self, seq: int, event: events.Event) -> None:
        """Nothing: this connection sees its own turn's events through `_Tap`."""


class Conversations:
    """Opens and answers Home Assistant conversations for one dialect."""

    def __init__(self) -> None:
        self._opening = asyncio.Lock()  # two first transcripts of one conversation must not both create it

    async def open(self, app: App, principal: str, external_id: str | None) -> tuple[str, int]:
        """The stored conversation for `external_id` (a new one without an id): its id and stored last seq."""
        if external_id is None:
            conversation_id, last_seq, _ = await open_conversation(app, principal, None)
            return conversation_id, last_seq
        assert app.store is not None
        conversation_id = stored_id(principal, external_id)
        async with self._opening:
            stored = await app.store.conversation_last_seq(conversation_id, owner=principal)
            if stored is None:
                wait = app.conversation_rate.take(principal)
                if wait is not None:
                    per_minute = app.config.limits.conversations_per_minute
                    raise AssistantError("rate_limited", f"at most {per_minute} new conversations per minute; try again in {wait:.0f} s")
                await app.store.create_conversation(principal, conversation_id)
        return conversation_id, stored or 0

    async def answer(
        self, app: App, principal: str, external_id: str | None, text: str, on_delta: Callable[[str], Awaitable[None]],
    ) -> tuple[str, str]:
        """Run one text turn in the conversation; `on_delta` gets the reply's text as it streams. Returns (conversation id, reply)."""
        conversation_id, last_seq = await self.open(app, principal, external_id)
        seen: asyncio.Queue[events.Event] = asyncio.Queue()

        async def tell(event: events.Event) -> None:
            seen.put_nowait(event)

        holder = _Holder()
        await app.channels.open(conversation_id, last_seq)
        app.channels.follow(conversation_id, holder, last_seq)
        conversation = Conversation(app, conversation_id, principal, _Tap(ChannelEmit(app.channels, conversation_id), seen.put_nowait), tell)
        try:
            conversation.create_turn(lambda: [TextIn(text)], GenerationOptions(), None)
            while True:
                event = await seen.get()
                if isinstance(event, events.TextDelta):
                    await on_delta(event.delta)
                elif isinstance(event, events.ReplyDone):
                    if event.status == "failed":
                        error = event.error
                        raise AssistantError(error.code if error else "internal", error.message if error else "the reply failed")
                    return conversation_id, event.text
                elif isinstance(event, events.Error):
                    raise AssistantError(event.code, event.message)
        finally:
            app.channels.unfollow(conversation_id, holder)
            conversation.leave()
