"""Conversation channels shared by several nodes through Redis: one numbering, one replay, every follower.

The in-process `assistant.channels.Channels` numbers a conversation's events and hands them to the
connections of one process. With `[cluster]` every node keeps the same local `Channel`s (buffer,
followers, in-order delivery), but the numbering and the events live in Redis, per conversation:

- `assistant:{<id>}:state`, a hash: `seq` (the last seq handed out) and `durable` (seqs up to it are
  reserved in the store, as `Channels` keeps them). Absent, it is initialised from the store's
  last seq or reservation, whichever is higher, so seqs only rise.
- `assistant:{<id>}:events`, a stream of `(s: seq, e: event)` entries, trimmed to about the replay
  capacity and expiring `[server] replay_ttl_s` after its last event.
- `assistant:{<id>}:reserved`, a sorted set of seqs reserved and not yet published (a reply's end is
  numbered before it is stored), scored by when, so a node that loads the channel knows to wait.

Lua scripts number and append atomically (HINCRBY then XADD), so seqs are gapless and every node sees
a conversation's events in one order. An event past the `durable` seq is not appended until the
publishing node has raised the store's reservation (a block of SEQ_BLOCK at a time), so after a crash,
even of Redis, numbering resumes past anything a client saw.

Each node reads every stream it holds a channel for with one task (XREAD BLOCK over all of them, and
a wake stream of its own to pick up new channels), not one per connection. The publishing node
delivers to its own followers at once; its reader's copy is then recognised by seq and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from assistant.channels import SEQ_BLOCK, STALL_S, Channel, Channels
from assistant.event_codec import CodecError, decode, encode
from assistant.events import Event

log = logging.getLogger("assistant.cluster")

PREFIX = "assistant:"
BLOCK_MS = 2000
"""How long one XREAD waits for events (below the reader connection's socket timeout)."""
STREAM_FLOOR = 256
"""The fewest events a conversation's stream keeps, whatever the replay capacity: room for slow readers."""

# KEYS: state, events, reserved. ARGV: payload, maxlen, state ttl ms, stream ttl ms.
# Returns {seq, 1} when appended, {seq, 0} when the seq is past the store's reservation (kept as reserved), {-1, 0} when absent.
_NEXT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if seq > tonumber(redis.call('HGET', KEYS[1], 'durable')) then
  local now = redis.call('TIME')
  redis.call('ZADD', KEYS[3], now[1] * 1000 + math.floor(now[2] / 1000), seq)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return {seq, 0}
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 's', seq, 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {seq, 1}
"""

# KEYS: state, reserved. ARGV: state ttl ms. Returns the reserved seq, or -1 when absent.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000), seq)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return seq
"""

# KEYS: state, events, reserved. ARGV: seq, payload, maxlen, state ttl ms, stream ttl ms, durable until (0: unchanged).
# Returns 1 when appended, 0 when the seq is past the store's reservation, -1 when absent.
_PUT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local durable = tonumber(redis.call('HGET', KEYS[1], 'durable'))
local raised = tonumber(ARGV[6])
if raised > durable then
  redis.call('HSET', KEYS[1], 'durable', raised)
  durable = raised
end
if tonumber(ARGV[1]) > durable then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 's', ARGV[1], 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: state. ARGV: seq to start from, state ttl ms. Sets the counter only where none exists.
_INIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'durable', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS: state, events, reserved. ARGV: how many events, stall ms.
# Returns {seq or false, newest entries first, reservations still live} in one snapshot.
_LOAD = """
local seq = redis.call('HGET', KEYS[1], 'seq')
local now = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[2]))
return {seq, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1]), redis.call('ZRANGE', KEYS[3], 0, -1)}
"""


class ClusterChannel(Channel):
    """A node's view of one conversation's channel: loaded from Redis, then fed by the node's reader."""

    def __init__(self, conversation_id: str, last_seq: int, capacity: int) -> None:
        super().__init__(conversation_id, last_seq, capacity)
        self.stream_id = "0-0"  # the last stream entry this node has read
        self.loading: asyncio.Future[None] | None = None
        self.own_reserved: set[int] = set()  # seqs this node reserved and has not published yet
        self.delivering = asyncio.Lock()  # one batch at a time reaches the followers, in seq order
        self.loaded = False  # True once the channel holds Redis's numbering and recent events


class ClusterChannels(Channels):
    """`Channels` whose numbering and events are shared through Redis; the same interface for the core."""

    def __init__(
        self, redis: Redis, reader: Redis, node_id: str, capacity: int, ttl_s: float, key_ttl_s: float,
        stored_seq: Callable[[str], Awaitable[int | None]],
        reserve_seqs: Callable[[str, int], Awaitable[None]],
        persist_last_seq: Callable[[str, int], Awaitable[None]],
    ) -> None:
        """`redis` for commands, `reader` (its own connection) for the blocking reads; `stored_seq(id)` is the
        store's last seq or reservation of a conversation, where Redis has none."""
        super().__init__(capacity, ttl_s, persist_last_seq=persist_last_seq, reserve_seqs=reserve_seqs)
        self.redis = redis
        self.reader = reader
        self.node_id = node_id
        self.stored_seq = stored_seq
        self.key_ttl_ms = int(key_ttl_s * 1000)
        self.stream_ttl_ms = max(int(ttl_s * 1000), 1000)
        self.maxlen = max(capacity, STREAM_FLOOR)
        self.wake_key = f"{PREFIX}node:{node_id}:wake"
        self._next = redis.register_script(_NEXT)
        self._reserve = redis.register_script(_RESERVE)
        self._put = redis.register_script(_PUT)
        self._init = redis.register_script(_INIT)
        self._load = redis.register_script(_LOAD)
        self._reading: asyncio.Task[None] | None = None
        self._stopping = False
        self._channels: dict[str, Channel] = {}

    @staticmethod
    def keys(conversation_id: str) -> tuple[str, str, str]:
        """The conversation's state hash, event stream and reservation set (one hash slot)."""
        base = f"{PREFIX}{{{conversation_id}}}"
        return f"{base}:state", f"{base}:events", f"{base}:reserved"

    def get(self, conversation_id: str, stored_last_seq: int = 0) -> Channel:
        """The conversation's local channel (not loaded from Redis until `open`)."""
        channel = self._channels.get(conversation_id)
        if channel is None:
            self.sweep()
            channel = self._channels[conversation_id] = ClusterChannel(conversation_id, stored_last_seq, self.capacity)
        return channel

    async def open(self, conversation_id: str, stored_last_seq: int = 0) -> Channel:
        """The conversation's channel, loaded from Redis (its recent events, its numbering) before it is returned."""
        channel = self.get(conversation_id, stored_last_seq)
        assert isinstance(channel, ClusterChannel)
        if channel.loading is None or (channel.loading.done() and not channel.loaded):
            channel.loading = asyncio.ensure_future(self._load_channel(channel))
        await asyncio.shield(channel.loading)
        return channel

    def start(self) -> None:
        """Start the node's reader."""
        self._reading = asyncio.create_task(self._read_loop(), name="cluster-channels-reader")

    async def stop(self) -> None:
        """Stop the node's reader."""
        if self._reading is not None:
            self._stopping = True
            await self._wake()  # the blocked read returns, and the loop sees it should stop
            done, _ = await asyncio.wait([self._reading], timeout=2)
            if not done:  # Redis gone: redis-py may turn the cancel of a blocked read into a TimeoutError, which the loop ends on
                self._reading.cancel()
                await asyncio.wait([self._reading])
            self._reading = None

    async def reserve_next(self, conversation_id: str) -> int:
        """Reserve the conversation's next seq in Redis; the caller must publish an event with it."""
        channel = await self._loaded(conversation_id)
        state, _, reserved = self.keys(conversation_id)
        while True:
            seq = int(await self._reserve(keys=[state, reserved], args=[self.key_ttl_ms]))
            if seq >= 0:
                break
            await self._initialise(conversation_id)
        channel.own_reserved.add(seq)
        channel.last_reserved = max(channel.last_reserved, seq)
        return seq

    async def publish(self, conversation_id: str, event: Event, seq: int | None = None) -> int:
        """Number the event in Redis (or use its reserved `seq`), append it to the stream, deliver it here; returns its seq."""
        channel = await self._loaded(conversation_id)
        state, stream, reserved = self.keys(conversation_id)
        payload = encode(event)
        appended = False
        while seq is None:
            seq, done = (int(x) for x in await self._next(keys=[state, stream, reserved], args=[payload, self.maxlen, self.key_ttl_ms, self.stream_ttl_ms]))
            if seq < 0:
                seq = None
                await self._initialise(conversation_id)
            else:
                appended = bool(done)
                if not appended:
                    channel.own_reserved.add(seq)
        raise_to = 0
        while not appended:
            result = int(await self._put(
                keys=[state, stream, reserved], args=[seq, payload, self.maxlen, self.key_ttl_ms, self.stream_ttl_ms, raise_to],
            ))
            if result == 1:
                appended = True
            elif result == 0:  # past the store's reservation: raise it before anyone may see this seq
                assert self.reserve_seqs is not None
                raise_to = seq + SEQ_BLOCK
                await self.reserve_seqs(conversation_id, raise_to)
            else:
                await self._initialise(conversation_id)
        channel.own_reserved.discard(seq)
        await self._receive(channel, seq, event)
        return seq

    async def find(self, conversation_id: str, match: Callable[[Event], bool]) -> Event | None:
        """The newest event of the conversation's stream that `match`es, or None (not among the recent ones)."""
        _, stream, _ = self.keys(conversation_id)
        for _, fields in await self.redis.xrevrange(stream, count=self.maxlen) or []:
            try:
                event = decode(_field(fields, "e"))
            except (CodecError, KeyError, TypeError):
                continue
            if match(event):
                return event
        return None

    def sweep(self, now: float | None = None) -> int:
        """Drop channels nobody here has followed for `ttl_s` and with nothing of this node's in flight."""
        now = time.monotonic() if now is None else now
        dropped = [
            channel for channel in self._channels.values()
            if isinstance(channel, ClusterChannel) and not channel.followers and not channel.own_reserved
            and channel.left_at is not None and now - channel.left_at >= self.ttl_s and (channel.loading is None or channel.loading.done())
        ]
        for channel in dropped:
            del self._channels[channel.conversation_id]
            if channel.loaded and channel.last_delivered:
                self._persist(channel)
        return len(dropped)

    def settle(self, channel: Channel) -> Awaitable[None] | None:
        """Record the channel's last seq in the store; the reservation is never given back (other nodes may be numbering on)."""
        if self.persist_last_seq is None:
            return None
        return self.persist_last_seq(channel.conversation_id, channel.last_delivered)

    async def _loaded(self, conversation_id: str) -> ClusterChannel:
        channel = self._channels.get(conversation_id)
        if not isinstance(channel, ClusterChannel) or not channel.loaded:
            channel = await self.open(conversation_id)
        assert isinstance(channel, ClusterChannel)
        return channel

    async def _initialise(self, conversation_id: str) -> None:
        """Start Redis's counter from the store (where no node has done so since it expired)."""
        stored = await self.stored_seq(conversation_id)
        state, _, _ = self.keys(conversation_id)
        await self._init(keys=[state], args=[stored or 0, self.key_ttl_ms])

    async def _load_channel(self, channel: ClusterChannel) -> None:
        """Fill the channel from one snapshot of Redis: the counter, the latest events, the seqs still reserved."""
        keys = self.keys(channel.conversation_id)
        while True:
            counter, entries, reservations = await self._load(keys=list(keys), args=[self.capacity, int(STALL_S * 1000)])
            if counter is not None:
                break
            await self._initialise(channel.conversation_id)
        counter = int(counter)
        events: dict[int, Event] = {}
        for entry_id, fields in reversed(entries):
            try:
                events[int(_field(fields, "s"))] = decode(_field(fields, "e"))
            except (CodecError, ValueError, KeyError):
                log.exception("conversation %s: unreadable stream entry %s skipped", channel.conversation_id, entry_id)
        live = {int(seq) for seq in reservations}
        first = min([*events, *live], default=counter + 1)
        channel.last_delivered = channel.last_reserved = first - 1
        channel.buffer.clear()
        channel.pending.clear()
        waiting = False
        for seq in range(first, counter + 1):
            if seq in live:
                waiting = True
            elif seq in events and waiting:
                channel.pending[seq] = (events[seq], time.monotonic())
            elif not waiting:  # published (or abandoned by a node that died reserving it): the run goes on past it
                if seq in events:
                    channel.buffer.append((seq, events[seq]))
                channel.last_delivered = seq
        channel.last_reserved = counter
        channel.stream_id = _text(entries[0][0]) if entries else "0-0"
        channel.loaded = True
        await self._wake()

    async def _wake(self) -> None:
        """Make the reader pick up the node's new set of channels now."""
        try:
            await self.redis.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            await self.redis.pexpire(self.wake_key, self.key_ttl_ms)
        except RedisError:
            log.exception("waking the cluster reader failed")

    async def _receive(self, channel: ClusterChannel, seq: int, event: Event) -> None:
        """One numbered event for the channel, from this node or another: delivered in order, once."""
        if seq <= channel.last_delivered or seq in channel.pending:
            return
        channel.last_reserved = max(channel.last_reserved, seq)
        channel.pending[seq] = (event, time.monotonic())
        async with channel.delivering:
            for ready_seq, ready in channel.ready():
                for follower in list(channel.followers):
                    await follower.deliver(ready_seq, ready)

    async def _read_loop(self) -> None:
        """The node's one reader: every loaded channel's stream, and the wake stream for new ones."""
        wake_id = "0-0"
        while not self._stopping:
            streams: dict[Any, Any] = {self.wake_key: wake_id}
            by_key: dict[str, ClusterChannel] = {}
            for channel in list(self._channels.values()):
                if isinstance(channel, ClusterChannel) and channel.loaded:
                    key = self.keys(channel.conversation_id)[1]
                    streams[key] = channel.stream_id
                    by_key[key] = channel
            try:
                result = await self.reader.xread(streams, block=BLOCK_MS, count=500)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.exception("reading conversation streams from Redis failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            replies: list[Any] = list(result or [])
            for raw_key, entries in replies:
                key = _text(raw_key)
                if key == self.wake_key:
                    wake_id = _text(entries[-1][0])
                    continue
                held = by_key.get(key)
                if held is None or self._channels.get(held.conversation_id) is not held:
                    continue  # dropped meanwhile
                await self._read_entries(held, entries)

    async def _read_entries(self, channel: ClusterChannel, entries: list[Any]) -> None:
        """Stream entries the reader got for one channel."""
        for entry_id, fields in entries:
            channel.stream_id = _text(entry_id)
            try:
                seq, event = int(_field(fields, "s")), decode(_field(fields, "e"))
            except (CodecError, ValueError, KeyError):
                log.exception("conversation %s: unreadable stream entry %s skipped", channel.conversation_id, channel.stream_id)
                continue
            try:
                await self._receive(channel, seq, event)
            except Exception:
                log.exception("conversation %s: delivering seq %d failed", channel.conversation_id, seq)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: str) -> str:
    """A field of a stream entry: a dict from XREAD/XRANGE, a flat [k, v, ...] list from a script."""
    if isinstance(fields, dict):
        value = fields.get(name, fields.get(name.encode()))
        if value is None:
            raise KeyError(name)
        return _text(value)
    flat = [_text(item) for item in fields]
    for index in range(0, len(flat) - 1, 2):
        if flat[index] == name:
            return flat[index + 1]
    raise KeyError(name)
