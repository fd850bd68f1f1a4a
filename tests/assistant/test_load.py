"""Load on loopback: 100 concurrent connections, 1000 turns, a fast fake engine; nothing lost, memory back to baseline."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc

import psutil

from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

CONNECTIONS = 100
TURNS_EACH = 10


async def run_clients(server, connect_client, count: int, turns: int, latencies: list[float]) -> list[str]:
    """`count` clients at once, each sending `turns` turns one after another; returns their conversation ids."""

    async def one(index: int) -> str:
        async with connect_client(server) as client:
            conversation_id = (await client.start())["conversation_id"]
            for turn in range(turns):
                began = time.perf_counter()
                events = await client.say(f"client {index} turn {turn}")
                latencies.append(time.perf_counter() - began)
                done = events[-1]
                assert done["status"] == "completed" and done["text"] == f"You said: client {index} turn {turn}", done
                assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
            return conversation_id

    return await asyncio.gather(*(one(i) for i in range(count)))


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


async def test_100_connections_1000_turns_all_stored_once_memory_returns(start_server, connect_client, tmp_path):
    """Every turn is stored exactly once with its complete reply; p50/p99 latency printed; RSS returns to its baseline."""
    config = make_config(
        tmp_path, server={"replay_ttl_s": 0},
        limits={"turns_per_minute": 1_000_000, "sessions_per_principal": CONNECTIONS * 2, "conversations_per_minute": 1_000_000},
        scheduler={"max_queued": CONNECTIONS},  # every connection's turn may wait for the engine at once (the bound holds now)
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(record=False)),))
    # Warm-up at full size: the allocator's arenas, SQLite's page cache and lazy imports grow once; a
    # leak would show as growth after the measured round on top of that.
    await run_clients(server, connect_client, CONNECTIONS, 2, [])
    await asyncio.sleep(0.2)
    server.app.channels.sweep()
    baseline = rss_mb()

    latencies: list[float] = []
    began = time.perf_counter()
    conversations = await run_clients(server, connect_client, CONNECTIONS, TURNS_EACH, latencies)
    elapsed = time.perf_counter() - began
    peak = rss_mb()
    await asyncio.sleep(0.2)
    server.app.channels.sweep()
    after = rss_mb()

    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(f"\nload: {len(latencies)} turns on {CONNECTIONS} connections in {elapsed:.2f} s ({len(latencies) / elapsed:.0f} turns/s); "
          f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ordered[-1] * 1000:.1f} ms; "
          f"RSS baseline {baseline:.1f} MB, peak {peak:.1f} MB, after {after:.1f} MB")

    assert len(latencies) == CONNECTIONS * TURNS_EACH and len(set(conversations)) == CONNECTIONS
    for index, conversation_id in enumerate(conversations):
        turns = await server.app.store.history(conversation_id)
        said = [t.text for t in turns if t.role == "user"]
        assert said == [f"client {index} turn {turn}" for turn in range(TURNS_EACH)], "each turn stored once, in order"
        replies = [(t.status, t.text) for t in turns if t.role == "assistant"]
        assert replies == [("completed", f"You said: {text}") for text in said]
    app = server.app
    assert not app.turns and not app.replies and len(app.channels) == 0 and app.sessions.total == 0
    assert after - baseline < 15, f"memory did not return: {baseline:.1f} -> {after:.1f} MB"


async def test_no_python_objects_are_left_behind_by_finished_sessions(start_server, connect_client, tmp_path):
    """Traced Python memory after 300 more turns on 30 connections is what it was before them (no leak)."""
    config = make_config(tmp_path, server={"replay_ttl_s": 0}, limits={"turns_per_minute": 1_000_000, "sessions_per_principal": 100})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(record=False)),))
    await run_clients(server, connect_client, 30, 3, [])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await run_clients(server, connect_client, 30, 10, [])
        await asyncio.sleep(0.2)
        server.app.channels.sweep()
        server.app.turn_rate.forget_idle(now=time.monotonic() + 120)
        gc.collect()
        growth = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    finally:
        tracemalloc.stop()
    print(f"\nPython heap growth after 300 turns: {growth * 1024:.0f} KiB")
    assert growth < 0.5, f"{growth:.2f} MB of Python objects left behind"
