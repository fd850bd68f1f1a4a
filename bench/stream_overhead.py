"""Streaming through the whole stack vs bare websockets: N concurrent replies of T deltas each, one run.

Ours: N connections each send one `turn.create`; an instant fake engine emits T one-token deltas as
fast as it can; the real server (store, channels, protocol) streams them. Bare: plain `websockets`
answering each turn with the same frames (turn.created, response.created, T deltas, response.done),
pre-serialized. The client counts the engine's deltas (tokens) delivered per second over all
connections, the frames that carried them (ours joins deltas that pile up while a socket is busy into
one frame: the same text, fewer frames), and the gaps between consecutive delta frames on each
connection. Each server runs in its own process; rounds alternate. Ours runs with the default
settings (no permessage-deflate) and again with compression on.

Prints tokens/s and frames/s of each, the ratio ours / bare in tokens/s (goal >= 0.5) and the
p50/p99 gap between delta frames.

    python bench/stream_overhead.py [--replies 32] [--tokens 256] [--rounds 2]
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

TURN = json.dumps({"type": "turn.create", "content": [{"type": "text", "text": "stream"}]})


def _bare_frames(tokens: int) -> list[str]:
    ids = "0" * 32
    return [
        json.dumps({"type": "turn.created", "seq": 1, "turn_id": ids}),
        json.dumps({"type": "response.created", "seq": 2, "response_id": ids, "turn_id": ids}),
        *(json.dumps({"type": "response.text.delta", "seq": 3 + i, "response_id": ids, "delta": f" t{i}"}) for i in range(tokens)),
        json.dumps({"type": "response.done", "seq": 3 + tokens, "response_id": ids, "status": "completed", "text": "...",
                    "usage": {"prompt_tokens": 2, "completion_tokens": tokens}, "timings": {"total_ms": 0.1}}),
    ]


def run_bare(tokens: int, compression: bool, port_queue: mp.Queue) -> None:
    """Bare websockets sending the same frames for every turn."""
    from websockets.asyncio.server import serve

    frames = _bare_frames(tokens)

    async def handler(ws):
        async for message in ws:
            if json.loads(message).get("type") == "turn.create":
                for frame in frames:
                    await ws.send(frame)
            else:
                await ws.send(json.dumps({"type": "session.started"}))

    async def main():
        async with serve(handler, "127.0.0.1", 0, max_size=2**24, compression="deflate" if compression else None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def run_ours(tokens: int, db_url: str, compression: bool, port_queue: mp.Queue) -> None:
    """Our server with an engine that emits `tokens` deltas at once."""
    from assistant import DialogueEngine, DialogueResult, Usage, hookimpl
    from assistant.config import Config
    from assistant.server import run_on_server_loop, serve_app

    class Instant(DialogueEngine):
        id = "bench:stream"

        def generate(self, request, emit, cancelled):
            for i in range(tokens):
                emit(f" t{i}")
            return DialogueResult("...", Usage(2, tokens), "stop")

    class Plugin:
        __name__ = "bench_stream"

        @hookimpl
        def register_engines(self, register):
            register("dialogue", "stream", lambda app: Instant())

    config = Config.from_dict({
        "server": {"port": 0, "compression": compression}, "store": {"url": db_url}, "engines": {"dialogue": "stream"},
        "limits": {"turns_per_minute": 10**9, "sessions_per_principal": 10**4},
        "scheduler": {"max_queued": 10**4},
        "plugins": {"deny": ["rapid_ocr", "imagenet_labels", "clip_image"]},
    })

    async def main():
        server = await serve_app(config, [Plugin()])
        port_queue.put(server.port)
        await asyncio.Future()

    run_on_server_loop(main(), config)  # on the loop `assistant serve` uses


async def client_load(url: str, replies: int) -> tuple[float, float, list[float]]:
    """(tokens per second over all connections, delta frames per second, gaps between consecutive delta frames in seconds)."""
    from websockets.asyncio.client import connect

    sockets = [await connect(url, max_size=2**24) for _ in range(replies)]
    for ws in sockets:
        await ws.send(json.dumps({"type": "session.start"}))
        await ws.recv()
    gaps: list[float] = []
    counts = [0] * replies  # engine deltas (tokens): every one is " t<i>"
    frames = [0] * replies

    async def one(index: int, ws) -> None:
        await ws.send(TURN)
        last = None
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "response.text.delta":
                now = time.perf_counter()
                if last is not None:
                    gaps.append(now - last)
                last = now
                counts[index] += event["delta"].count(" t")
                frames[index] += 1
            elif event["type"] == "response.done":
                return

    began = time.perf_counter()
    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    elapsed = time.perf_counter() - began
    for ws in sockets:
        await ws.close()
    return sum(counts) / elapsed, sum(frames) / elapsed, gaps


def measure(target, args, replies: int) -> tuple[float, float, list[float]]:
    queue: mp.Queue = mp.Queue()
    proc = mp.Process(target=target, args=(*args, queue), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=120)
        return asyncio.run(client_load(f"ws://127.0.0.1:{port}/ws", replies))
    finally:
        proc.terminate()
        proc.join()


def pct(values: list[float], q: int) -> float:
    """The q-th percentile; NaN when there is nothing to measure (every reply came in one delta frame)."""
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=32, help="concurrent replies, one connection each")
    parser.add_argument("--tokens", type=int, default=256, help="deltas per reply")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, list[float]]]] = {
        "bare websockets": [], "ours (full stack)": [], "bare, compression on": [], "ours, compression on": [],
    }
    with tempfile.TemporaryDirectory() as db_dir:
        for round_ in range(args.rounds):
            order = [
                ("bare websockets", run_bare, (args.tokens, False)),
                ("bare, compression on", run_bare, (args.tokens, True)),
                ("ours (full stack)", run_ours, (args.tokens, f"sqlite:///{db_dir}/s{round_}.db", False)),
                ("ours, compression on", run_ours, (args.tokens, f"sqlite:///{db_dir}/p{round_}.db", True)),
            ]
            for name, target, target_args in order if round_ % 2 == 0 else order[::-1]:
                runs[name].append(measure(target, target_args, args.replies))
    print(f"{args.replies} concurrent replies x {args.tokens} deltas, {args.rounds} rounds (medians)")
    print(f"{'server':22} {'tokens/s':>10} {'frames/s':>10} {'gap p50 ms':>11} {'gap p99 ms':>11}")
    rates = {}
    joined = []
    for name, results in runs.items():
        rates[name] = statistics.median(rate for rate, _, _ in results)
        frame_rate = statistics.median(rate for _, rate, _ in results)
        gaps = [gap for _, _, run_gaps in results for gap in run_gaps]
        print(f"{name:22} {rates[name]:10.0f} {frame_rate:10.0f} {pct(gaps, 50) * 1000:11.3f} {pct(gaps, 99) * 1000:11.3f}")
        if not gaps:
            joined.append(name)
    for name in joined:
        print(f"{name}: no gap to measure, every reply's deltas arrived joined in one frame")
    print(f"ratio ours / bare (tokens delivered per second): {rates['ours (full stack)'] / rates['bare websockets']:.2f}  (goal >= 0.5)")
    print(f"ratio with permessage-deflate on both sides, ours / bare: {rates['ours, compression on'] / rates['bare, compression on']:.2f}")


if __name__ == "__main__":
    main()
