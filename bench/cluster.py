"""Throughput of the cluster path: 2 nodes vs 1 on the same machine, instant engine, the load of ws_overhead.py.

Every server stores in one real PostgreSQL (started here from Debian's package, as the tests do) and,
with `[cluster]`, shares one real Redis (Debian's redis-server). Measured in one run:

- 1 node, no [cluster]: in-process channels (today's single node, on PostgreSQL);
- 1 node with [cluster]: every event numbered and appended through Redis (the cluster path's cost);
- 2 nodes with [cluster]: the connections split between them.

The client is ws_overhead.py's: CONNECTIONS sockets, TURNS round trips each (`turn.create` ->
turn.created, response.created, one delta, response.done), one at a time per socket. On a machine
with as many cores as this one has (2), two nodes cannot add throughput: the figure shows the overhead.

    python bench/cluster.py [--connections 16] [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ws_overhead import client_load, instant_plugin


def run_node(db_url: str, redis_url: str | None, node_id: str, port_queue: mp.Queue) -> None:
    """Our server with an instant one-delta engine on `db_url`, in a cluster on `redis_url` when given."""
    from assistant.config import Config
    from assistant.server import run_on_server_loop, serve_app

    data = {
        "server": {"port": 0}, "store": {"url": db_url},
        "engines": {"dialogue": "instant", "asr": "", "speech_synthesizer": ""}, "dialogue": {"history_turns": 4},
        "plugins": {"deny": ["rapid_ocr", "imagenet_labels", "clip_image", "builtin_tools"]},
        "limits": {"turns_per_minute": 10**9, "sessions_per_principal": 10**4, "conversations_per_minute": 10**6},
        "scheduler": {"max_queued": 10**4},
    }
    if redis_url is not None:
        data["cluster"] = {"redis_url": redis_url, "node_id": node_id}
    config = Config.from_dict(data)

    async def main():
        server = await serve_app(config, [instant_plugin()])
        port_queue.put(server.port)
        await asyncio.Future()

    run_on_server_loop(main(), config)  # on the loop `assistant serve` uses


async def spread_load(urls: list[str], connections: int, turns: int) -> float:
    """ws_overhead's client load, the connections split evenly between `urls`; returns round trips per second."""
    share = connections // len(urls)
    results = await asyncio.gather(*(client_load(url, share, turns, 4, True) for url in urls))
    slowest = max(share * turns / rate for rate, _ in results)  # the window in which every node's share was served
    return share * len(urls) * turns / slowest


def measure(db_url: str, redis_url: str | None, nodes: int, connections: int, turns: int) -> float:
    """Start `nodes` servers, run the load across them, stop them; round trips per second."""
    procs, urls = [], []
    queue: mp.Queue = mp.Queue()
    try:
        for n in range(nodes):
            proc = mp.Process(target=run_node, args=(db_url, redis_url, f"bench-{n}", queue), daemon=True)
            proc.start()
            procs.append(proc)
            urls.append(f"ws://127.0.0.1:{queue.get(timeout=180)}/ws")
        return asyncio.run(spread_load(urls, connections, turns))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16, help="sockets in all (split between the nodes)")
    parser.add_argument("--turns", type=int, default=200, help="round trips per socket")
    args = parser.parse_args()

    from tests.redis_server import RedisServer
    from tests.services import PostgresServer

    postgres, redis = PostgresServer().start(), RedisServer().start()
    try:
        rows = []
        for label, clustered, nodes in (("1 node, no [cluster]", False, 1), ("1 node, [cluster]", True, 1), ("2 nodes, [cluster]", True, 2)):
            db_url = postgres.create_database()
            redis.flush()
            rate = measure(db_url, redis.url if clustered else None, nodes, args.connections, args.turns)
            rows.append((label, rate))
            postgres.drop_database(db_url)
        print(f"\n{args.connections} connections x {args.turns} turns, instant engine, PostgreSQL, {os.cpu_count()} CPU cores")
        for label, rate in rows:
            print(f"  {label:<22} {rate:8.1f} turns/s")
        single, cluster_one, cluster_two = (rate for _, rate in rows)
        print(f"  2 nodes / 1 node (both [cluster]): {cluster_two / cluster_one:.2f}")
        print(f"  2 nodes [cluster] / 1 node without: {cluster_two / single:.2f}")
        print(f"  1 node [cluster] / 1 node without (the Redis path's cost): {cluster_one / single:.2f}")
    finally:
        redis.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
