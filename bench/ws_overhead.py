"""Round trips through the whole stack vs a bare websockets server, same client, one run.

Ours: `turn.create` -> turn.created, response.created, one delta, response.done, with an instant
fake dialogue engine and the real store (SQLite, WAL) and protocol; measured again with an in-memory
SQLite database to separate the cost of durable writes from the rest of the stack. The bare server is plain
`websockets` that answers each frame with the same four frames, pre-serialized, doing no work; a
one-frame echo is measured too, for reference. Each server runs in its own process; the client
opens CONNECTIONS sockets and runs TURNS round trips on each, one at a time per socket.

The reference server is what a plain implementation of our durable work costs: bare websockets that
commit each turn's user message and reply through one sqlite3 writer with group commit before sending
the frames that announce them.

Our server's context holds 4 turns of history per turn; it runs once more with the default of
`[dialogue] history_turns` (50), what a server left on its defaults renders for each turn.

Every server runs without permessage-deflate (our default); ours and the reference run once more with it
on, on both sides alike. Prints throughput ratios (ours / reference, goal >= 0.7; ours / bare) and
added p50/p99 latency, then where our server's time went during the timed load: its CPU per round
trip (all threads, and the event loop's thread alone) and how busy its store writer was, from
/metrics. When CPU per round trip times round trips per second comes to about one core, the server is
bound by the one GIL its event loop and writer share, not by the disk.

Then, per connection count, `--pairs` runs of the reference followed at once by ours give the ratio
again as the median of those pairs: this machine's speed drifts by tens of percent within minutes.

    python bench/ws_overhead.py [--connections 8 64] [--turns 300] [--pairs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TURN = json.dumps({"type": "turn.create", "content": [{"type": "text", "text": "ping"}]})


def _bare_frames() -> list[str]:
    ids = "0" * 32
    return [
        json.dumps({"type": "turn.created", "seq": 1, "turn_id": ids}),
        json.dumps({"type": "response.created", "seq": 2, "response_id": ids, "turn_id": ids}),
        json.dumps({"type": "response.text.delta", "seq": 3, "response_id": ids, "delta": "pong"}),
        json.dumps({"type": "response.done", "seq": 4, "response_id": ids, "status": "completed", "text": "pong",
                    "usage": {"prompt_tokens": 2, "completion_tokens": 1}, "timings": {"total_ms": 0.1}}),
    ]


def run_bare(kind: str, compression: bool, port_queue: mp.Queue) -> None:
    """A bare websockets server: `echo` sends the frame back, `same-frames` sends our four frames."""
    from websockets.asyncio.server import serve

    frames = _bare_frames()

    async def handler(ws):
        async for message in ws:
            if kind == "echo":
                await ws.send(message)
            else:
                for frame in frames:
                    await ws.send(frame)

    async def main():
        async with serve(handler, "127.0.0.1", 0, max_size=2**24, compression="deflate" if compression else None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def run_reference(db_path: str, compression: bool, port_queue: mp.Queue) -> None:
    """The plainest server that does our durable work: bare websockets, and per turn the user message and
    the reply each committed (WAL, synchronous=FULL) through one sqlite3 writer thread with group commit
    (the writer drains every pending write into one transaction), the reply's frames sent after each commit."""
    import queue
    import sqlite3
    import threading
    import uuid

    from websockets.asyncio.server import serve

    frames = _bare_frames()
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS turns (id INTEGER PRIMARY KEY, conversation TEXT, role TEXT, text TEXT)")
    pending: queue.SimpleQueue = queue.SimpleQueue()

    def writer() -> None:
        while True:
            batch = [pending.get()]
            while True:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            db.execute("BEGIN")
            db.executemany("INSERT INTO turns (conversation, role, text) VALUES (?, ?, ?)", [row for row, _, _ in batch])
            db.execute("COMMIT")
            for _, loop, done in batch:
                loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=writer, daemon=True).start()

    async def durable(row: tuple[str, str, str]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        pending.put((row, loop, done))
        await done

    async def handler(ws):
        conversation = uuid.uuid4().hex
        async for message in ws:
            event = json.loads(message)
            if event.get("type") != "turn.create":
                await ws.send(json.dumps({"type": "session.started", "conversation_id": conversation}))
                continue
            await durable((conversation, "user", event["content"][0]["text"]))
            for frame in frames[:3]:
                await ws.send(frame)
            await durable((conversation, "assistant", "pong"))
            await ws.send(frames[3])

    async def main():
        async with serve(handler, "127.0.0.1", 0, max_size=2**24, compression="deflate" if compression else None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def instant_plugin():
    """A plugin registering the dialogue engine `instant`: one delta, "pong", at once (for the benches' servers)."""
    from assistant import DialogueEngine, DialogueResult, Usage, hookimpl

    class Instant(DialogueEngine):
        id = "bench:instant"

        def generate(self, request, emit, cancelled):
            emit("pong")
            return DialogueResult("pong", Usage(2, 1), "stop")

    class Plugin:
        __name__ = "bench_instant"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "instant", lambda app: Instant())

    return Plugin()


BENCH_HISTORY_TURNS = 4
"""Turns of history in each turn's context on our server (the reference reads none); the default-history row uses 50."""


def run_ours(db_url: str, compression: bool, port_queue: mp.Queue, history_turns: int = BENCH_HISTORY_TURNS) -> None:
    """Our server with an instant one-delta fake engine, storing in `db_url`, `history_turns` of context per turn."""
    from assistant.config import Config
    from assistant.server import run_on_server_loop, serve_app

    config = Config.from_dict({
        "server": {"port": 0, "compression": compression}, "store": {"url": db_url},
        "engines": {"dialogue": "instant"}, "dialogue": {"history_turns": history_turns},
        "plugins": {"deny": ["rapid_ocr", "imagenet_labels", "clip_image"]},  # text turns only: no image modalities
        # measuring the path, not the allowances: one client address opens every connection
        "limits": {"turns_per_minute": 10**9, "sessions_per_principal": 10**4, "conversations_per_minute": 10**6},
        "scheduler": {"max_queued": 10**4},  # and not the engine's queue bound (64 connections > its default 32)
    })

    async def main():
        server = await serve_app(config, [instant_plugin()])
        port_queue.put(server.port)
        await asyncio.Future()

    run_on_server_loop(main(), config)  # on the loop `assistant serve` uses


class ServerProbe:
    """Where our server's time went during the timed load: its CPU per turn (all threads, and the event
    loop's thread alone) and its store writer's counters from /metrics (busy fraction, calls per transaction)."""

    def __init__(self, pid: int, port: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.before: tuple[float, float, dict[str, float], float] | None = None
        self.summary = ""

    def _read(self) -> tuple[float, float, dict[str, float], float]:
        import urllib.request

        times = self.process.cpu_times()
        loop = next((t.user_time + t.system_time for t in self.process.threads() if t.id == self.process.pid), 0.0)
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            counters = {
                line.split()[0]: float(line.split()[1]) for line in response.read().decode().splitlines()
                if line.startswith("assistant_store_")
            }
        return times.user + times.system, loop, counters, time.perf_counter()

    def start(self) -> None:
        """Take the readings the timed load starts from."""
        self.before = self._read()

    def stop(self, turns: int) -> None:
        """Take the readings at its end and summarize them for `turns` round trips."""
        assert self.before is not None
        cpu0, loop0, counters0, t0 = self.before
        cpu1, loop1, counters1, t1 = self._read()
        delta = {name: counters1.get(name, 0.0) - counters0.get(name, 0.0) for name in counters1}
        transactions = delta.get("assistant_store_transactions_total", 0.0)
        self.summary = (
            f"server CPU {(cpu1 - cpu0) / turns * 1000:.2f} ms per round trip (its event loop's thread {(loop1 - loop0) / turns * 1000:.2f}); "
            f"store writer busy {delta.get('assistant_store_busy_seconds_total', 0.0) / (t1 - t0):.0%} of the time, "
            f"{delta.get('assistant_store_calls_total', 0.0) / max(transactions, 1):.1f} calls per transaction"
        )


async def client_load(
    url: str, connections: int, turns: int, frames_per_turn: int, start_session: bool, probe: ServerProbe | None = None,
) -> tuple[float, list[float]]:
    """Run the load; returns (round trips per second, latencies in seconds)."""
    from websockets.asyncio.client import connect

    latencies: list[float] = []

    async def one(ws):
        for _ in range(turns):
            began = time.perf_counter()
            await ws.send(TURN)
            for _ in range(frames_per_turn):
                await ws.recv()
            latencies.append(time.perf_counter() - began)

    sockets = [await connect(url, max_size=2**24) for _ in range(connections)]
    if start_session:
        for ws in sockets:
            await ws.send(json.dumps({"type": "session.start"}))
            await ws.recv()
    # Warm-up round on every socket, not timed.
    await asyncio.gather(*(one_warm(ws, frames_per_turn) for ws in sockets))
    if probe is not None:
        probe.start()
    began = time.perf_counter()
    await asyncio.gather(*(one(ws) for ws in sockets))
    elapsed = time.perf_counter() - began
    if probe is not None:
        probe.stop(connections * turns)
    for ws in sockets:
        await ws.close()
    return connections * turns / elapsed, latencies


async def one_warm(ws, frames_per_turn: int) -> None:
    for _ in range(5):
        await ws.send(TURN)
        for _ in range(frames_per_turn):
            await ws.recv()


PROBES: dict[str, str] = {}
"""Our servers' probe summaries from the last table, by server name."""


def measure(target, args, connections, turns, frames_per_turn, start_session, name: str | None = None, **kwargs):
    queue: mp.Queue = mp.Queue()
    proc = mp.Process(target=target, args=(*args, queue), kwargs=kwargs, daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=120)
        url = f"ws://127.0.0.1:{port}/ws"
        probe = ServerProbe(proc.pid, port) if target is run_ours else None
        result = asyncio.run(client_load(url, connections, turns, frames_per_turn, start_session, probe))
        if probe is not None and name is not None:
            PROBES[name] = probe.summary
        return result
    finally:
        proc.terminate()
        proc.join()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, nargs="+", default=[8], help="one table per count, e.g. 8 64")
    parser.add_argument("--turns", type=int, default=300, help="round trips per connection")
    parser.add_argument("--pairs", type=int, default=3, help="reference-then-ours runs after each table, for the ratio's median")
    args = parser.parse_args()
    for connections in args.connections:
        table(connections, args.turns)
        if args.pairs:
            paired_ratio(connections, args.turns, args.pairs)


def paired_ratio(connections: int, turns: int, pairs: int) -> None:
    """The headline ratio again from `pairs` back-to-back runs of the reference and ours: this machine's speed
    drifts by tens of percent within minutes, and a ratio taken from two runs seconds apart drifts less."""
    ratios = []
    with tempfile.TemporaryDirectory() as db_dir:
        for index in range(pairs):
            reference_rate, _ = measure(run_reference, (f"{db_dir}/reference{index}.db", False), connections, turns, 4, True)
            ours_rate, _ = measure(run_ours, (f"sqlite:///{db_dir}/ours{index}.db", False), connections, turns, 4, True)
            ratios.append(ours_rate / reference_rate)
            print(f"pair {index + 1}: reference {reference_rate:.0f}, ours {ours_rate:.0f} round trips/s: ratio {ratios[-1]:.2f}")
    print(f"paired throughput ratio ours / reference at {connections} connections, median of {pairs}: "
          f"{statistics.median(ratios):.2f}  (goal >= 0.7)")


DEFAULT_HISTORY_ROW = "ours, default history"
"""Ours with the configured default of turns per context (`[dialogue] history_turns`, 50) instead of
BENCH_HISTORY_TURNS: what a turn costs a server left on its defaults, its context rendered from memory."""


def default_history_turns() -> int:
    from assistant.config import Config

    return Config.from_dict({}).dialogue.history_turns


def table(connections: int, turns: int) -> None:
    """Measure every server at `connections` and print the table and the ratios."""
    with tempfile.TemporaryDirectory() as db_dir:
        results = {
            "bare echo (1 frame)": measure(run_bare, ("echo", False), connections, turns, 1, False),
            "bare same frames (4)": measure(run_bare, ("same-frames", False), connections, turns, 4, False),
            "reference (+ sqlite3)": measure(run_reference, (f"{db_dir}/reference.db", False), connections, turns, 4, True),
            "reference, compression on": measure(run_reference, (f"{db_dir}/reference-deflate.db", True), connections, turns, 4, True),
            "ours (full stack)": measure(run_ours, (f"sqlite:///{db_dir}/bench.db", False), connections, turns, 4, True, "ours (full stack)"),
            "ours, in-memory SQLite": measure(run_ours, ("sqlite:///:memory:", False), connections, turns, 4, True, "ours, in-memory SQLite"),
            "ours, compression on": measure(run_ours, (f"sqlite:///{db_dir}/deflate.db", True), connections, turns, 4, True),
            DEFAULT_HISTORY_ROW: measure(
                run_ours, (f"sqlite:///{db_dir}/history.db", False), connections, turns, 4, True, DEFAULT_HISTORY_ROW,
                history_turns=default_history_turns(),
            ),
        }
    print(f"{connections} connections x {turns} round trips each")
    print(f"{'server':24} {'round trips/s':>14} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rate, lat) in results.items():
        print(f"{name:24} {rate:14.0f} {pct(lat, 50) * 1000:8.2f} {pct(lat, 99) * 1000:8.2f}")
    ours_rate, ours_lat = results["ours (full stack)"]
    bare_rate, bare_lat = results["bare same frames (4)"]
    echo_rate, _ = results["bare echo (1 frame)"]
    reference_rate, _ = results["reference (+ sqlite3)"]
    print(f"throughput ratio ours / reference (bare websockets + the same durable writes): {ours_rate / reference_rate:.2f}  (goal >= 0.7)")
    print(f"throughput ratio ours / bare same frames: {ours_rate / bare_rate:.2f}")
    print(f"throughput ratio ours / bare echo:        {ours_rate / echo_rate:.2f}")
    deflate_rate, _ = results["ours, compression on"]
    deflate_reference, _ = results["reference, compression on"]
    print(f"throughput ratio with permessage-deflate on both sides, ours / reference: {deflate_rate / deflate_reference:.2f}")
    memory_rate, _ = results["ours, in-memory SQLite"]
    print(f"throughput ratio ours in-memory SQLite / bare same frames: {memory_rate / bare_rate:.2f}  (cost without durable disk writes)")
    print(f"added latency p50: {(pct(ours_lat, 50) - pct(bare_lat, 50)) * 1000:.2f} ms, "
          f"p99: {(pct(ours_lat, 99) - pct(bare_lat, 99)) * 1000:.2f} ms")
    for name, summary in PROBES.items():
        print(f"{name}: {summary}")
    PROBES.clear()


if __name__ == "__main__":
    main()
