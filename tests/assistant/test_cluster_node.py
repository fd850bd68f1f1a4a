"""A cluster node in process, on a real Redis: its startup checks and its sweep of stopped nodes' replies."""

from __future__ import annotations

import asyncio

import pytest

from assistant.app import App
from assistant.cluster import ClusterError
from assistant.config import Config, ConfigError
from assistant.events import ImageDone, ImageStarted, ReplyDone
from assistant.store import PartRecord, Store
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401 (fixtures)


class Recorder:
    """A follower that keeps what it was sent."""

    def __init__(self) -> None:
        self.got: list[tuple[int, object]] = []

    async def deliver(self, seq: int, event) -> None:
        self.got.append((seq, event))


def test_cluster_settings_are_checked():
    """[cluster] needs redis_url, a sane node_id, and a node timeout longer than two heartbeats."""
    with pytest.raises(ConfigError, match=r"cluster\.redis_url"):
        Config.from_dict({"cluster": {}})
    with pytest.raises(ConfigError, match=r"cluster\.node_id"):
        Config.from_dict({"cluster": {"redis_url": "redis://x", "node_id": "a b"}})
    with pytest.raises(ConfigError, match="twice heartbeat_s"):
        Config.from_dict({"cluster": {"redis_url": "redis://x", "heartbeat_s": 5, "node_timeout_s": 10}})
    assert Config.from_dict({}).cluster is None


async def test_a_node_whose_redis_is_down_does_not_start(tmp_path):
    """An unreachable Redis stops startup with ClusterError naming [cluster] redis_url."""
    config = make_config(tmp_path, cluster={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(ClusterError, match="redis_url"):
        await App.start(config, [FakeEnginesPlugin(ScriptedDialogue())])


async def test_only_replies_of_nodes_with_no_heartbeat_are_interrupted_and_announced(tmp_path, redis_url):  # noqa: F811
    """A silent node's reply and image job become interrupted and their followers hear each end; a live node's and this node's stay."""
    config = make_config(tmp_path, cluster={"redis_url": redis_url, "node_id": "here"})
    app = await App.start(config, [FakeEnginesPlugin(ScriptedDialogue())])
    try:
        conversation = await app.store.create_conversation()
        replies = {}
        for node in ("gone", "alive", "here"):
            store = await asyncio.to_thread(Store, config.database_url, node_id=node)
            replies[node] = (await asyncio.to_thread(store.begin_turn, conversation, [PartRecord("text", "hi")], 4)).reply_id
            store.close()
        store = await asyncio.to_thread(Store, config.database_url, node_id="gone")
        _, job_id = await asyncio.to_thread(store.begin_image_job, conversation, "a cat", None)
        store.close()
        await app.cluster.redis.set("assistant:node:alive", "1", px=60_000)
        follower = Recorder()
        await app.channels.open(conversation)
        app.channels.follow(conversation, follower)
        await app.channels.publish(conversation, ImageStarted(job_id, None, "a cat", 64, 64, 4, 7))

        assert await app.cluster.sweep_dead_nodes() == 2
        assert await app.cluster.sweep_dead_nodes() == 0  # marked once
        history = {turn.id: turn.status for turn in await asyncio.to_thread(app.store.store.history, conversation)}
        assert history[replies["gone"]] == history[job_id] == "interrupted"
        assert history[replies["alive"]] == history[replies["here"]] == "in_progress"
        ends = {type(event): event for _, event in follower.got[1:]}
        assert ends[ReplyDone].response_id == replies["gone"] and ends[ReplyDone].error.code == "unavailable"
        assert ends[ImageDone].job_id == job_id and ends[ImageDone].status == "failed" and ends[ImageDone].seed == 7
        assert len(follower.got) == 3
    finally:
        await app.drain(0)
        await app.stop()


def test_replies_are_interrupted_by_node_each_once(store_url):
    """On SQLite and PostgreSQL: racing sweeps of a node's replies mark each once; a starting node marks its own and node-less ones only."""
    stores = {node: Store(store_url, node_id=node) for node in ("a", "b", None)}
    try:
        conversation = stores["a"].create_conversation()
        replies = {node: [stores[node].begin_turn(conversation, [PartRecord("text", "hi")], 4).reply_id for _ in range(2)] for node in stores}
        assert sorted(stores[None].in_progress_nodes()) == ["a", "b"]

        async def race() -> list[list[tuple[str, str]]]:
            return await asyncio.gather(*(asyncio.to_thread(stores[n].interrupt_nodes, ["a"]) for n in stores))

        marked = [reply for result in asyncio.run(race()) for reply, _ in result]
        assert sorted(marked) == sorted(replies["a"])  # each once, by one of the sweeps
        assert stores["b"].mark_interrupted(node="b") == 4  # its own two and the two of no node
        assert stores["b"].in_progress_nodes() == []
    finally:
        for store in stores.values():
            store.close()
