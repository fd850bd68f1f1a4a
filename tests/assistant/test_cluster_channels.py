"""Conversation channels shared by two nodes through a real Redis: one gapless numbering, replay on any node."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from assistant.channels import SEQ_BLOCK
from assistant.cluster_channels import ClusterChannels
from assistant.events import ReplyDone, TextDelta
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)


class Recorder:
    """A follower that keeps what it was sent."""

    def __init__(self) -> None:
        self.got: list[tuple[int, object]] = []

    async def deliver(self, seq: int, event) -> None:
        self.got.append((seq, event))


class FakeStoreSeqs:
    """The store's side of numbering: a conversation's last seq or reservation, and reservations raised."""

    def __init__(self, stored: int = 0) -> None:
        self.stored = stored
        self.reserved: list[int] = []

    async def stored_seq(self, conversation_id: str) -> int:
        return max([self.stored, *self.reserved])

    async def reserve(self, conversation_id: str, until: int) -> None:
        self.reserved.append(until)

    async def persist(self, conversation_id: str, seq: int) -> None:
        self.stored = max(self.stored, seq)


@pytest.fixture
async def nodes(redis_url):  # noqa: F811
    """Factory: a node's ClusterChannels on the test's Redis (capacity 10), its reader running; all stopped after the test."""
    made: list[tuple[ClusterChannels, Redis, Redis]] = []

    def make(store: FakeStoreSeqs, name: str, capacity: int = 10) -> ClusterChannels:
        redis, reader = Redis.from_url(redis_url, decode_responses=True), Redis.from_url(redis_url, decode_responses=True)
        channels = ClusterChannels(redis, reader, name, capacity, 60, 3600, store.stored_seq, store.reserve, store.persist)
        channels.start()
        made.append((channels, redis, reader))
        return channels

    yield make
    for channels, redis, reader in made:
        await channels.stop()
        await redis.aclose()
        await reader.aclose()


async def until(check, timeout: float = 10) -> None:
    """Wait until `check()` is true."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_two_nodes_share_one_gapless_numbering(nodes):
    """Events published on either node reach the followers of both in one order, numbered 1..n without a gap or a repeat."""
    store = FakeStoreSeqs()
    a, b = nodes(store, "a"), nodes(store, "b")
    on_a, on_b = Recorder(), Recorder()
    for channels, follower in ((a, on_a), (b, on_b)):
        await channels.open("c")
        channels.follow("c", follower)
    await asyncio.gather(*(
        (a if i % 2 else b).publish("c", TextDelta("r", str(i))) for i in range(40)
    ))
    await until(lambda: len(on_a.got) == 40 and len(on_b.got) == 40)
    assert [seq for seq, _ in on_a.got] == list(range(1, 41))
    assert on_a.got == on_b.got
    assert sorted(event.delta for _, event in on_a.got) == sorted(str(i) for i in range(40))


async def test_a_seq_reserved_on_one_node_holds_back_later_events_everywhere(nodes):
    """A reply's end reserved on node A is delivered on node B before the events numbered after it, though published last."""
    store = FakeStoreSeqs()
    a, b = nodes(store, "a"), nodes(store, "b")
    on_b = Recorder()
    await b.open("c")
    b.follow("c", on_b)
    await a.publish("c", TextDelta("r", "hello"))
    reserved = await a.reserve_next("c")
    await b.publish("c", TextDelta("r2", "later"))
    await until(lambda: len(on_b.got) == 1)
    await asyncio.sleep(0.1)
    assert [seq for seq, _ in on_b.got] == [1]  # seq 3 waits for the reserved 2
    await a.publish("c", ReplyDone("r", "completed", "hello"), seq=reserved)
    await until(lambda: len(on_b.got) == 3)
    assert [(seq, type(event).__name__) for seq, event in on_b.got] == [(1, "TextDelta"), (2, "ReplyDone"), (3, "TextDelta")]


async def test_a_client_resumes_on_the_other_node_with_what_it_missed(nodes):
    """A follower that saw seq 3 on node A and comes back on node B replays exactly 4..6, complete; one too far back is told it is incomplete."""
    store = FakeStoreSeqs()
    a, b = nodes(store, "a", capacity=5), nodes(store, "b", capacity=5)
    await a.open("c")
    for i in range(6):
        await a.publish("c", TextDelta("r", str(i)))
    channel = await b.open("c")
    missed, complete = channel.since(3)
    assert [seq for seq, _ in missed] == [4, 5, 6] and complete
    _, complete = channel.since(0)
    assert not complete  # seq 1 is beyond the replay buffer of 5


async def test_numbering_starts_past_the_store_and_reserves_before_it_is_seen(nodes):
    """With no counter in Redis, numbering goes on after the store's seq; a block is reserved in the store before an event past it is sent."""
    store = FakeStoreSeqs(stored=40)
    a = nodes(store, "a")
    follower = Recorder()
    await a.open("c")
    a.follow("c", follower)
    seq = await a.publish("c", TextDelta("r", "x"))
    assert seq == 41 and store.reserved == [41 + SEQ_BLOCK]
    for _ in range(SEQ_BLOCK + 1):
        await a.publish("c", TextDelta("r", "y"))
    assert store.reserved == [41 + SEQ_BLOCK, 42 + 2 * SEQ_BLOCK]  # one store write per block
    assert [s for s, _ in follower.got] == list(range(41, 43 + SEQ_BLOCK))


async def test_a_reservation_abandoned_by_a_dead_node_does_not_hold_a_new_node_back(nodes, monkeypatch):
    """A seq reserved long ago and never published (its node died) is skipped when another node loads the channel."""
    monkeypatch.setattr("assistant.cluster_channels.STALL_S", 0.05)
    store = FakeStoreSeqs()
    a = nodes(store, "a")
    await a.open("c")
    await a.publish("c", TextDelta("r", "1"))
    await a.reserve_next("c")  # node a "dies" holding seq 2
    await a.publish("c", TextDelta("r", "3"))
    await asyncio.sleep(0.1)
    b = nodes(store, "b")
    channel = await b.open("c")
    missed, complete = channel.since(0)
    assert [seq for seq, _ in missed] == [1, 3] and complete and channel.last_delivered == 3
