"""Voice-to-voice latency on the offline defaults: from the end of the user's speech to the first audio of the answer.

A real server in this process with the offline defaults (Silero VAD, Whisper tiny.en through
faster-whisper, SmolLM2-135M, the Piper voice) and one websocket client that asks for spoken replies
and streams recorded phrases (tests/data/speech) as a microphone would, 100 ms at a time, with server
VAD. Per phrase, measured at the client from `speech.stopped` (the server VAD heard the end): ASR
(until `transcript.done`), first token (until the first `response.text.delta`), first sentence (until
the reply's text first holds a finished sentence), synthesis (until the first `response.audio.delta`).
The server's own `assistant_voice_to_voice_seconds` histogram is printed beside it.

    python bench/voice.py [--phrases 8] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def main_async(args: argparse.Namespace) -> None:
    import numpy as np
    from websockets.asyncio.client import connect

    from assistant import audio
    from assistant.config import Config
    from assistant.server import serve_app

    phrases = sorted((REPO / "tests" / "data" / "speech").glob("*.wav"))[: args.phrases]
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.load(REPO / "config.toml")
        data = config.model_dump()
        data["server"]["port"] = 0
        data["store"]["url"] = f"sqlite:///{tmp}/voice.db"
        data["models"]["cache_dir"] = str(REPO / ".cache" / "models")
        data["plugins"]["transformers_dialogue"] = {**data["plugins"].get("transformers_dialogue", {}), "max_new_tokens": args.max_new_tokens}
        server = await serve_app(Config.from_dict(data, base_dir=Path(tmp)))
        parts: dict[str, list[float]] = {"asr": [], "first token": [], "first sentence": [], "synthesis": [], "voice to voice": []}
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=2**24) as ws:
                await ws.send(json.dumps({"type": "session.start", "output_modalities": ["text", "audio"]}))
                started = json.loads(await ws.recv())
                print(f"voice {started['voices'][0]['name']}, dialogue {started['capabilities']['dialogue']}, asr {started['capabilities']['asr']}")
                for path in phrases:
                    samples = audio.decode(path.read_bytes(), "wav")
                    clip = np.concatenate([np.zeros(8000, np.float32), samples, np.zeros(19200, np.float32)])
                    pcm = (np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes()
                    marks: dict[str, float] = {}
                    text = ""
                    events: asyncio.Queue = asyncio.Queue()

                    async def read() -> None:
                        while True:
                            message = await ws.recv()
                            await events.put((time.perf_counter(), json.loads(message)))  # timed as it arrives

                    reader = asyncio.create_task(read())
                    for start in range(0, len(pcm), 3200):
                        await ws.send(json.dumps({"type": "audio.append", "data": base64.b64encode(pcm[start:start + 3200]).decode()}))
                        await asyncio.sleep(0.1)
                    while "audio done" not in marks:
                        now, event = await asyncio.wait_for(events.get(), 120)
                        kind = event["type"]
                        if kind == "speech.stopped":
                            marks.setdefault("stopped", now)
                        elif kind == "transcript.done":
                            marks.setdefault("transcript", now)
                        elif kind == "response.text.delta":
                            marks.setdefault("first token", now)
                            text += event["delta"]
                            if SENTENCE_END.search(text):
                                marks.setdefault("first sentence", now)
                        elif kind == "response.done":
                            marks.setdefault("first sentence", now)
                        elif kind == "response.audio.delta":
                            marks.setdefault("first audio", now)
                        elif kind == "response.audio.done":
                            marks["audio done"] = now
                    reader.cancel()
                    stop = marks["stopped"]
                    parts["asr"].append(marks["transcript"] - stop)
                    parts["first token"].append(marks["first token"] - marks["transcript"])
                    parts["first sentence"].append(marks["first sentence"] - marks["first token"])
                    parts["synthesis"].append(marks["first audio"] - marks["first sentence"])
                    parts["voice to voice"].append(marks["first audio"] - stop)
                    print(f"{path.stem[:40]:40} voice to voice {parts['voice to voice'][-1] * 1000:6.0f} ms")
            server_side = server.app.metrics.voice_to_voice
            count = server_side._sum.get(), sum(b.get() for b in server_side._buckets)  # noqa: SLF001 (reading our own histogram)
        finally:
            await server.shutdown(grace_s=0)
    print(f"\n{len(phrases)} phrases, after the server VAD heard the end of speech (ms)")
    print(f"{'part':16} {'p50':>8} {'p95':>8}")
    for name, values in parts.items():
        print(f"{name:16} {pct(values, 50) * 1000:8.0f} {pct(values, 95) * 1000:8.0f}")
    print(f"server's assistant_voice_to_voice_seconds: mean {count[0] / max(count[1], 1) * 1000:.0f} ms over {count[1]:.0f} answers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
