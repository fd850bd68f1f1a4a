"""One node of several: its Redis connections, its heartbeat, and what it does about nodes that stopped.

With `[cluster]` the app builds a `Node`. It owns the conversation channels shared through Redis
(`assistant.cluster_channels`) and says every `heartbeat_s` that it is alive: a key that expires after
`node_timeout_s`, set from a thread of its own so that a busy event loop is not taken for a dead
node. As often, it looks for replies in progress (`turns.node`) whose node has no live key: one UPDATE
marks them interrupted (safe on every node at once: each reply is marked by one), and the node that
marked a reply publishes its `ReplyDone` (failed, `unavailable`; an `ImageDone` for an image job the
conversation's stream saw start) to the conversation's followers, wherever they are connected.

Notices (a reminder falling due) reach a principal's clients on every node: the node that claimed
the reminder (a claim is one UPDATE, so it fires once) tells its own clients and publishes it on a
Redis channel the other nodes relay to theirs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from assistant import events
from assistant.cluster_channels import BLOCK_MS, PREFIX, ClusterChannels
from assistant.config import ClusterConfig
from assistant.event_codec import CodecError, decode, encode
from assistant.notices import Notices
from assistant.store import AsyncStore

log = logging.getLogger("assistant.cluster")

NOTICES = f"{PREFIX}notices"
"""The Redis pub/sub channel notices travel on between nodes."""


class ClusterError(RuntimeError):
    """Redis cannot be reached at startup (the message says where and how to fix it)."""


class ClusterNotices(Notices):
    """`Notices` that also reach the principal's clients on the other nodes (through Redis pub/sub)."""

    def __init__(self, redis: Redis, node_id: str, on_subscribe: Callable[[str], None] | None = None) -> None:
        super().__init__(on_subscribe)
        self.redis = redis
        self.node_id = node_id

    async def notify(self, principal: str, event: events.Event) -> int:
        """Send `event` to `principal`'s clients here, and publish it for the other nodes'; returns how many were reached here."""
        reached = await super().notify(principal, event)
        try:
            await self.redis.publish(NOTICES, json.dumps({"node": self.node_id, "principal": principal, "event": encode(event)}))
        except (RedisError, CodecError):
            log.exception("a notice for %s could not be sent to the other nodes", principal)
        return reached

    async def relay(self, message: str | bytes) -> None:
        """A notice another node published: to this node's clients of its principal."""
        try:
            data = json.loads(message)
            if data["node"] == self.node_id:
                return
            await Notices.notify(self, data["principal"], decode(data["event"]))
        except (ValueError, KeyError, TypeError, CodecError):
            log.exception("an unreadable notice from another node was dropped")


class Node:
    """This process as one node of a cluster: shared channels and notices, heartbeat, and the sweep of dead nodes' replies."""

    def __init__(
        self, config: ClusterConfig, replay_events: int, replay_ttl_s: float,
        stored_seq: Callable[[str], Awaitable[int | None]],
        reserve_seqs: Callable[[str, int], Awaitable[None]],
        persist_last_seq: Callable[[str, int], Awaitable[None]],
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.redis: Redis = Redis.from_url(config.redis_url, decode_responses=True, health_check_interval=30)
        self.reader: Redis = Redis.from_url(config.redis_url, decode_responses=True, health_check_interval=30, socket_timeout=BLOCK_MS / 1000 + 10)
        self.channels = ClusterChannels(
            self.redis, self.reader, self.node_id, replay_events, replay_ttl_s, config.key_ttl_s, stored_seq, reserve_seqs, persist_last_seq,
        )
        self.notices: ClusterNotices | None = None
        self.store: AsyncStore | None = None
        self.interrupted = 0  # replies of dead nodes this node marked interrupted
        self._tasks: list[asyncio.Task[None]] = []
        self._beating = threading.Event()  # set: the heartbeat thread stops
        self._heart: threading.Thread | None = None

    def make_notices(self, on_subscribe: Callable[[str], None] | None) -> ClusterNotices:
        """The app's `Notices`, shared with the other nodes."""
        self.notices = ClusterNotices(self.redis, self.node_id, on_subscribe)
        return self.notices

    @property
    def alive_key(self) -> str:
        """This node's heartbeat key."""
        return f"{PREFIX}node:{self.node_id}"

    async def start(self, store: AsyncStore) -> None:
        """Check Redis, say this node is alive, start the channel reader, the notice relay and the heartbeat."""
        self.store = store
        try:
            await self.redis.ping()
            await self.beat()
        except (RedisError, OSError) as exc:
            raise ClusterError(f"[cluster] redis_url = {self.config.redis_url!r}: Redis cannot be reached ({exc})") from None
        self.channels.start()
        self._beating.clear()
        self._heart = threading.Thread(target=self._heartbeat_thread, name="cluster-heartbeat", daemon=True)
        self._heart.start()
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="cluster-sweep"),
            asyncio.create_task(self._relay_loop(), name="cluster-notices"),
        ]
        log.info("cluster node %s up (redis %s)", self.node_id, self.config.redis_url)

    async def stop(self) -> None:
        """Stop the tasks, say this node is gone (its replies ended in the drain), close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self._beating.set()
        if self._heart is not None:
            await asyncio.to_thread(self._heart.join)
            self._heart = None
        await self.channels.stop()
        try:
            await self.redis.delete(self.alive_key)
        except (RedisError, OSError):
            log.warning("could not remove this node's heartbeat key; it expires by itself")
        await self.redis.aclose()
        await self.reader.aclose()

    async def beat(self) -> None:
        """Say this node is alive for `node_timeout_s`."""
        await self.redis.set(self.alive_key, "1", px=int(self.config.node_timeout_s * 1000))

    async def sweep_dead_nodes(self) -> int:
        """Mark the replies in progress of nodes with no heartbeat as interrupted and tell their followers; returns how many this node marked."""
        assert self.store is not None
        store = self.store
        nodes = [node for node in await store.in_progress_nodes() if node != self.node_id]
        if not nodes:
            return 0
        alive = await self.redis.mget([f"{PREFIX}node:{node}" for node in nodes])
        dead = [node for node, flag in zip(nodes, alive, strict=True) if flag is None]
        if not dead:
            return 0
        marked = await store.interrupt_nodes(dead)
        for reply_id, conversation_id in marked:
            try:
                await self.channels.publish(conversation_id, await self._interrupted_end(conversation_id, reply_id))
            except Exception:
                log.exception("telling conversation %s that reply %s was interrupted failed", conversation_id, reply_id)
        if marked:
            log.warning("marked %d reply(ies) of stopped node(s) %s as interrupted", len(marked), ", ".join(dead))
        self.interrupted += len(marked)
        return len(marked)

    async def _interrupted_end(self, conversation_id: str, turn_id: str) -> events.Event:
        """The end event of a reply or image job whose node stopped: `image.done` for a job the stream saw start, else `response.done`."""
        error = events.ErrorInfo("unavailable", "the node serving this stopped; it is stored as interrupted")
        started = await self.channels.find(conversation_id, lambda e: isinstance(e, events.ImageStarted) and e.job_id == turn_id)
        if isinstance(started, events.ImageStarted):
            return events.ImageDone(turn_id, "failed", started.seed, error=error)
        return events.ReplyDone(turn_id, "failed", "", error=error)

    def _heartbeat_thread(self) -> None:
        """Beat from a thread of its own, so that a busy event loop never reads as a dead node."""
        client = SyncRedis.from_url(self.config.redis_url, socket_timeout=self.config.heartbeat_s + 5)
        ttl_ms = int(self.config.node_timeout_s * 1000)
        try:
            while not self._beating.wait(self.config.heartbeat_s):
                try:
                    client.set(self.alive_key, "1", px=ttl_ms)
                except (RedisError, OSError):
                    log.exception("cluster heartbeat failed; trying again in %.1f s", self.config.heartbeat_s)
        finally:
            client.close()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self.sweep_dead_nodes()
            except Exception:
                log.exception("looking for stopped nodes failed; trying again in %.1f s", self.config.heartbeat_s)

    async def _relay_loop(self) -> None:
        while True:
            try:
                async with self.reader.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(NOTICES)
                    async for message in pubsub.listen():
                        if message.get("type") == "message" and self.notices is not None:
                            await self.notices.relay(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the notice relay lost Redis; reconnecting in 1 s")
                await asyncio.sleep(1)
