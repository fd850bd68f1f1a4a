"""End-to-end image job latency through the websocket vs calling the same diffusers pipeline directly.

A random-weight Stable Diffusion pipeline is built from configs (no download; --channels sets the
UNet width), loaded once by a real server in this process. The bare side calls that same loaded
pipeline object with the same prompt, size, steps, guidance and seed; our side sends `image.generate`
over a websocket and waits for `image.done` (PNG encoded, stored by sha256, sent as base64). By
default the bare call runs on the image engine's worker thread, where jobs run. Rounds alternate in
ABBA order; medians and bests are compared, since one image's time varies by about 10% on a busy
2-core machine. Prints the ratio ours / bare (goal <= 1.05).

    python bench/image_gen.py [--size 128] [--steps 10] [--rounds 5] [--channels 64,128]
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


async def main_async(args: argparse.Namespace) -> None:
    import torch
    from websockets.asyncio.client import connect

    from assistant.config import Config
    from assistant.server import serve_app
    from tests.tiny_models import build_tiny_stable_diffusion

    channels = tuple(int(c) for c in args.channels.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_dir = build_tiny_stable_diffusion(Path(tmp) / "sd", block_channels=channels)
        config = Config.from_dict({
            "server": {"port": 0},
            "store": {"url": f"sqlite:///{tmp}/bench.db"},
            "engines": {"dialogue": "", "image_generator": "diffusers"},
            "plugins": {"diffusers_image": {"model": str(pipeline_dir), "max_steps": 1000}},
        })
        server = await serve_app(config)
        engine = server.app.engines["image_generator"]
        params = {"prompt": "a red bicycle by the sea", "steps": args.steps, "seed": 1234,
                  "width": args.size, "height": args.size, "guidance": 7.5}

        def bare() -> float:
            began = time.perf_counter()
            engine.pipeline(
                prompt=params["prompt"], width=args.size, height=args.size, num_inference_steps=args.steps,
                guidance_scale=7.5, generator=torch.Generator(device=engine.device).manual_seed(params["seed"]),
                output_type="pil",
            ).images[0]
            return time.perf_counter() - began

        async def ours(ws) -> float:
            began = time.perf_counter()
            await ws.send(json.dumps({"type": "image.generate", **params}))
            while (event := json.loads(await ws.recv()))["type"] != "image.done":
                pass
            elapsed = time.perf_counter() - began
            assert event["status"] == "completed", event
            return elapsed

        bare_times, our_times = [], []
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            await ws.recv()
            await asyncio.to_thread(bare)  # warm-up, both paths
            await ours(ws)
            async def run_bare() -> float:
                if args.bare_thread == "default":
                    return await asyncio.to_thread(bare)
                return await server.app.scheduler.submit(engine, bare)

            for round_index in range(args.rounds):  # ABBA order cancels slow drift of the machine's speed
                if round_index % 2 == 0:
                    bare_times.append(await run_bare())
                    our_times.append(await ours(ws))
                else:
                    our_times.append(await ours(ws))
                    bare_times.append(await run_bare())
        await server.shutdown()

    bare_ms, our_ms = statistics.median(bare_times) * 1000, statistics.median(our_times) * 1000
    bare_best, our_best = min(bare_times) * 1000, min(our_times) * 1000
    print(f"random SD pipeline, UNet channels {channels}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}, device {engine.device}")
    print(f"bare pipeline call:   {bare_ms:8.1f} ms  (rounds: {', '.join(f'{t * 1000:.0f}' for t in bare_times)})")
    print(f"through the websocket: {our_ms:8.1f} ms  (rounds: {', '.join(f'{t * 1000:.0f}' for t in our_times)})")
    print(f"ratio ours / bare, medians: {our_ms / bare_ms:.3f}; best of {args.rounds}: {our_best / bare_best:.3f}  (goal <= 1.05)")
    print(f"added per image: median {our_ms - bare_ms:.1f} ms, best {our_best - bare_best:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--channels", default="64,128", help="UNet block widths of the random pipeline")
    parser.add_argument("--bare-thread", choices=("engine", "default"), default="engine",
                        help="run the bare call on the engine's worker thread (as jobs do) or asyncio's default executor")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
