"""Tokens/s of a streamed reply through the websocket vs `model.generate` in-process, one run.

Same model (the offline SmolLM2-135M-Instruct by default), same prompt, greedy, a fixed number of
new tokens (EOS suppressed so both produce exactly --tokens tokens). The bare side calls
`model.generate` on the prompt ids the engine would build; our side runs a real server in this
process and a websockets client reading every delta. Alternates the two, --rounds times each.

Prints tokens/s of each, the ratio ours / bare (goal >= 0.95) and our time to first token.

    python bench/dialogue_stream.py [--tokens 128] [--rounds 3] [--model smollm2-135m-instruct]
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

QUESTION = "Write a long story about a lighthouse keeper and the sea."


async def main_async(args: argparse.Namespace) -> None:
    import torch
    from transformers.utils import logging as hf_logging
    from websockets.asyncio.client import connect

    hf_logging.set_verbosity_error()  # EOS is suppressed on purpose below; don't warn about it

    from assistant.config import Config
    from assistant.engines import ChatMessage
    from assistant.server import serve_app

    with tempfile.TemporaryDirectory() as tmp:
        config = Config.from_dict({
            "server": {"port": 0},
            "store": {"url": f"sqlite:///{tmp}/bench.db"},
            "models": {"cache_dir": args.cache_dir},
            "dialogue": {"history_turns": 0},
            "plugins": {"transformers_dialogue": {"model": args.model, "max_new_tokens": args.tokens}},
        })
        server = await serve_app(config)
        engine = server.app.engines["dialogue"]
        model, tokenizer = engine.model, engine.tokenizer
        # Same context the server builds: the system prompt and the question.
        messages = [ChatMessage("system", config.dialogue.system_prompt), ChatMessage("user", QUESTION)]
        prompt = engine.fit_context(messages, args.tokens)
        # Never stop early on either side: both produce exactly --tokens tokens.
        model.generation_config.eos_token_id = None
        engine.eos_ids = [-1]
        bare_kwargs = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                           temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id)

        def bare() -> float:
            ids = torch.tensor([prompt])
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **bare_kwargs)
            elapsed = time.perf_counter() - began
            assert out.shape[1] - len(prompt) == args.tokens
            return args.tokens / elapsed

        async def ours(ws) -> tuple[float, float]:
            await ws.send(json.dumps({"type": "turn.create", "content": [{"type": "text", "text": QUESTION}]}))
            began = time.perf_counter()
            first = None
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "response.text.delta" and first is None:
                    first = time.perf_counter() - began
                if event["type"] == "response.done":
                    elapsed = time.perf_counter() - began
                    assert event["usage"]["completion_tokens"] == args.tokens, event
                    assert event["usage"]["prompt_tokens"] == len(prompt), "both sides must use the same prompt"
                    return args.tokens / elapsed, first or 0.0

        bare_rates, our_rates, ttfts = [], [], []
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            await ws.recv()
            await asyncio.to_thread(bare)  # warm-up, both paths
            await ours(ws)
            for _ in range(args.rounds):
                bare_rates.append(await asyncio.to_thread(bare))
                rate, ttft = await ours(ws)
                our_rates.append(rate)
                ttfts.append(ttft)
        await server.shutdown()

    bare_rate, our_rate = statistics.median(bare_rates), statistics.median(our_rates)
    print(f"model {args.model}, {args.tokens} new tokens, greedy, {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"bare model.generate: {bare_rate:7.1f} tokens/s  (rounds: {', '.join(f'{r:.1f}' for r in bare_rates)})")
    print(f"through websocket:   {our_rate:7.1f} tokens/s  (rounds: {', '.join(f'{r:.1f}' for r in our_rates)})")
    print(f"ratio ours / bare: {our_rate / bare_rate:.3f}  (goal >= 0.95)")
    print(f"time to first token over the websocket: median {statistics.median(ttfts) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "assistant" / "models"))
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
