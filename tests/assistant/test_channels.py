"""Conversation channels: numbering in order, replay after a reconnect, and the bound on what is kept."""

from __future__ import annotations

import asyncio
import json

from assistant.channels import Channels
from assistant.events import TextDelta
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


class Recorder:
    def __init__(self) -> None:
        self.got: list[int] = []

    async def deliver(self, seq: int, event) -> None:
        self.got.append(seq)


async def test_a_reserved_seq_holds_back_later_events_until_it_is_published():
    """Events go out strictly in seq order: a reserved number is waited for, then everything after it flows."""
    channels = Channels(capacity=10, ttl_s=60)
    follower = Recorder()
    channels.follow("c", follower)
    reserved = channels.reserve("c")
    await channels.publish("c", TextDelta("r", "e"))
    await channels.publish("c", TextDelta("r", "e"))
    assert follower.got == []
    await channels.publish("c", TextDelta("r", "e"), seq=reserved)
    assert follower.got == [1, 2, 3] and channels.last_seq("c") == 3


async def test_replay_is_bounded_and_says_when_it_is_incomplete():
    """A client that missed more than the buffer holds is told its replay is incomplete."""
    channels = Channels(capacity=3, ttl_s=60)
    channel = channels.follow("c", Recorder())
    for _ in range(5):
        await channels.publish("c", TextDelta("r", "e"))
    assert channel.since(3) == ([(4, TextDelta("r", "e")), (5, TextDelta("r", "e"))], True)
    assert channel.since(2)[1] is True and channel.since(1)[1] is False
    assert channel.since(5) == ([], True) and channel.since(9)[1] is False


async def test_channels_nobody_follows_are_dropped_after_their_ttl():
    """A channel lingers for reconnects, then goes, handing its last seq to the store."""
    persisted = []

    async def persist(conversation_id, seq):
        persisted.append((conversation_id, seq))

    channels = Channels(capacity=10, ttl_s=30, persist_last_seq=persist)
    follower = Recorder()
    channels.follow("c", follower)
    await channels.publish("c", TextDelta("r", "x"))
    channels.unfollow("c", follower)
    assert len(channels) == 1
    channel = channels.get("c")
    assert channels.sweep(now=channel.left_at + 29) == 0 and channels.sweep(now=channel.left_at + 31) == 1
    await asyncio.sleep(0)
    assert len(channels) == 0 and persisted == [("c", 1)]


async def test_reconnect_with_last_seq_gets_the_missed_deltas_and_the_rest_of_the_reply(start_server, connect_client, tmp_path):
    """Drop the socket mid-reply, reconnect with last_seq: the missing deltas, then the live rest, with no gap and no duplicate."""
    engine = ScriptedDialogue(script=lambda request: [f"w{i} " for i in range(40)], delay_s=0.03)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as first:
        conversation_id = (await first.start())["conversation_id"]
        await first.send({"type": "turn.create", "content": [{"type": "text", "text": "count"}]})
        seen = []
        while sum(e["type"] == "response.text.delta" for e in seen) < 5:
            seen.append(await first.recv())
        first.ws.transport.abort()  # the network drops: no close handshake
    last_seq = seen[-1]["seq"]
    await asyncio.sleep(0.3)  # the reply streams on meanwhile, to nobody

    async with connect_client(server) as second:
        await second.send({"type": "session.start", "conversation_id": conversation_id, "last_seq": last_seq})
        started = await second.recv()
        assert started["type"] == "session.started" and started["replay"]["after_seq"] == last_seq
        assert started["replay"]["complete"] is True
        rest = await second.recv_until("response.done")
    events = seen + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "no gap, no duplicate"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert events[-1]["status"] == "completed" and deltas == events[-1]["text"] == "".join(f"w{i} " for i in range(40))
    assert started["replay"]["events"] >= 5, "what streamed while disconnected came from the buffer"


async def test_two_connections_on_one_conversation_both_see_its_events(server, connect_client):
    """A second tab following the same conversation sees the first tab's reply stream; errors stay with their sender."""
    async with connect_client(server) as one, connect_client(server) as two:
        conversation_id = (await one.start())["conversation_id"]
        await two.start(conversation_id)
        events = await one.say("hello")
        mirrored = await two.recv_until("response.done")
        assert [json.dumps(e) for e in mirrored] == [json.dumps(e) for e in events]
        await one.send({"type": "response.cancel", "event_id": "x", "response_id": "nope"})
        assert (await one.recv())["type"] == "error"
        await two.send({"type": "conversation.get", "event_id": "h"})
        assert (await two.recv())["type"] == "conversation.history", "the other tab got no error"
