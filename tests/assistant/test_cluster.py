"""Two `assistant serve` processes sharing a real PostgreSQL and a real Redis on loopback: one cluster."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from assistant.reminders import ReminderStore
from tests.conftest import Client
from tests.processes import serve, stop, write_config
from tests.redis_server import redis_server  # noqa: F401 (fixture)

PAUSE_S = 0.05


def node_config(tmp_path, name: str, store_url: str, redis_url: str) -> str:
    """The config of node `name`: the slow counter, [cluster] on the shared Redis with a fast heartbeat."""
    folder = tmp_path / name
    folder.mkdir()
    return write_config(
        folder,
        '[engines]\ndialogue = "slow-counter"\nasr = ""\nspeech_synthesizer = ""\n'
        '[plugins]\nmodules = ["tests.sample_plugin"]\ndeny = ["rapid_ocr", "clip_image", "imagenet_labels", "builtin_tools"]\n'
        f'[plugins."tests.sample_plugin"]\npause_s = {PAUSE_S}\n'
        '[limits]\nsessions_per_principal = 200\nturns_per_minute = 10000\nconversations_per_minute = 10000\n[scheduler]\nmax_queued = 1000\n'
        f'[cluster]\nredis_url = "{redis_url}"\nnode_id = "{name}"\nheartbeat_s = 0.5\nnode_timeout_s = 3\n',
        url=store_url,
    )


def query(url: str, sql: str, **params) -> list[tuple]:
    """Rows of one query on a connection of its own."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def cluster(postgres_server, redis_server, tmp_path_factory):  # noqa: F811
    """Nodes "a" and "b" serving one PostgreSQL database and one Redis: (store URL, Redis URL, URL of a, URL of b)."""
    redis_server.flush()
    store_url = postgres_server.create_database()
    tmp_path = tmp_path_factory.mktemp("cluster")
    procs = []
    try:
        urls = []
        for name in ("a", "b"):
            proc, url = serve(node_config(tmp_path, name, store_url, redis_server.url))
            procs.append(proc)
            urls.append(url)
        yield store_url, redis_server.url, urls[0], urls[1], tmp_path
    finally:
        codes = [stop(proc) for proc in procs if proc.poll() is None]
        postgres_server.drop_database(store_url)
    assert codes == [0] * len(codes), "every node stops cleanly"


async def recv_seq(client: Client) -> dict:
    """The next conversation event (answers and notices carry no new seq and are not expected here)."""
    return await client.recv(timeout=30)


async def test_a_reply_started_on_one_node_resumes_on_the_other_with_no_gap_and_no_repeat(cluster):
    """A client drops from node a mid-reply and resumes on node b with last_seq: it gets the rest of the reply, every seq once, in order."""
    _, _, url_a, url_b, _ = cluster
    client = Client(await connect(url_a))
    conversation_id = (await client.start())["conversation_id"]
    await client.send({"type": "turn.create", "content": [{"type": "text", "text": "count 60"}]})
    seen: list[dict] = []
    while sum(event["type"] == "response.text.delta" for event in seen) < 5:
        seen.append(await client.recv())
    client.ws.transport.abort()  # the connection drops; the reply goes on on node a

    resumed = Client(await connect(url_b))
    await resumed.send({"type": "session.start", "conversation_id": conversation_id, "last_seq": seen[-1]["seq"]})
    started = await resumed.recv()
    assert started["type"] == "session.started" and started["replay"]["complete"]
    rest = await resumed.recv_until("response.done")
    await resumed.ws.close()

    seqs = [event["seq"] for event in seen + rest]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every seq once, in order"
    text_streamed = "".join(event["delta"] for event in seen + rest if event["type"] == "response.text.delta")
    assert text_streamed == "".join(f" {i}" for i in range(1, 61))
    assert rest[-1]["status"] == "completed" and rest[-1]["text"] == text_streamed


async def test_a_hundred_connections_over_both_nodes_store_every_turn_once(cluster):
    """100 connections, half on each node, 10 turns each: 1,000 user turns and 1,000 completed replies stored, none twice."""
    store_url, _, url_a, url_b, _ = cluster
    before = query(store_url, "SELECT count(*) FROM turns")[0][0]

    async def ten_turns(url: str) -> list[str]:
        client = Client(await connect(url))
        await client.start()
        ids = []
        for _ in range(10):
            events = await client.say("quick")
            assert events[-1]["status"] == "completed", events[-1]["error"]
            ids.append(events[0]["turn_id"])
        await client.ws.close()
        return ids

    turn_ids = [i for ids in await asyncio.gather(*(ten_turns(url_a if n % 2 else url_b) for n in range(100))) for i in ids]
    assert len(set(turn_ids)) == 1000
    rows = dict(query(store_url, "SELECT role || ':' || status, count(*) FROM turns GROUP BY role, status"))
    assert rows.get("user:completed", 0) + rows.get("assistant:completed", 0) - before >= 2000
    assert query(store_url, "SELECT count(*) FROM turns")[0][0] - before == 2000
    assert query(store_url, "SELECT count(*) FROM (SELECT id FROM turns GROUP BY id HAVING count(*) > 1) AS twice")[0][0] == 0


async def test_a_reminder_due_fires_once_with_two_nodes_up(cluster):
    """A reminder falls due while its owner has a client on each node: it is claimed once, and both clients hear it once."""
    store_url, _, url_a, url_b, _ = cluster
    engine = create_engine(store_url)
    try:
        reminder = ReminderStore(engine).create("local", None, "stretch", datetime.now(UTC) + timedelta(seconds=2), "UTC", "reminder", 100)
    finally:
        engine.dispose()
    clients = [Client(await connect(url)) for url in (url_a, url_b)]
    for client in clients:
        await client.start()  # subscribing wakes each node's reminder clock
    heard = [await client.recv_until("reminder.due", timeout=30) for client in clients]
    assert all(events[-1]["reminder_id"] == reminder.id for events in heard)
    await asyncio.sleep(1.0)  # a second firing would arrive by now
    for client in clients:
        with pytest.raises(TimeoutError):
            await client.recv(timeout=0.5)
        await client.ws.close()
    assert query(store_url, "SELECT fired_at IS NOT NULL FROM reminders WHERE id = :id", id=reminder.id) == [(True,)]


async def test_a_node_killed_mid_reply_leaves_it_interrupted_and_seen_so_from_the_other_node(cluster):
    """Node c is SIGKILLed mid-reply: node b marks the reply interrupted, tells its follower, and its history says so."""
    store_url, redis_url, _, url_b, tmp_path = cluster
    proc, url_c = serve(node_config(tmp_path, "c", store_url, redis_url))
    try:
        client = Client(await connect(url_c))
        conversation_id = (await client.start())["conversation_id"]
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "count"}]})
        response_id = (await client.recv_until("response.created"))[-1]["response_id"]
        watcher = Client(await connect(url_b))
        await watcher.start(conversation_id)
        while (await watcher.recv())["type"] != "response.text.delta":  # node b relays node c's reply as it streams
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    client.ws.transport.abort()
    while True:
        event = await watcher.recv(timeout=30)
        if event["type"] == "response.done":
            break
    assert event["response_id"] == response_id and event["status"] == "failed" and event["error"]["code"] == "unavailable"
    await watcher.send({"type": "conversation.get"})
    history = (await watcher.recv_until("conversation.history"))[-1]
    reply = next(turn for turn in history["turns"] if turn["turn_id"] == response_id)
    assert reply["status"] == "interrupted"
    await watcher.ws.close()
    assert query(store_url, "SELECT status, node FROM turns WHERE id = :id", id=response_id) == [("interrupted", "c")]
