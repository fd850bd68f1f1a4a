"""ASR speed, one run on one clip (tests/data/speech/what_is_the_capital_of_france.wav).

(a) Our end-to-end transcript latency: a WAV part sent over the websocket until `transcript.done`
    (decode, resample, store the turn, transcribe), against calling the same loaded faster-whisper
    model directly on the same WAV bytes. Goal: at most 1.1x.
(b) faster-whisper engine vs openai-whisper engine at the same model size (tiny.en dimensions).
    No openai-whisper tiny.en checkpoint exists offline, so that side loads random weights of
    tiny.en's exact dimensions through whisper's real loader, and its decoding is capped at the
    number of tokens faster-whisper produced, so both decode the same number of tokens. Prints the
    ratio and the real-time factor (seconds of compute per second of audio) of each.

    python bench/asr.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIP = ROOT / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav"


async def end_to_end(rounds: int) -> tuple[list[float], list[float], list[float], float]:
    from websockets.asyncio.client import connect

    from assistant.config import Config
    from assistant.server import serve_app

    wav = CLIP.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.from_dict({
            "server": {"port": 0}, "store": {"url": f"sqlite:///{tmp}/bench.db"},
            "engines": {"asr": "faster_whisper", "dialogue": ""},
        })
        server = await serve_app(config)
        model = server.app.engines["asr"].model

        from assistant import audio

        decoded = audio.decode(wav, "wav")

        def direct(source=None) -> float:
            """The same model on the WAV bytes (its own decoding), or on `source` samples if given."""
            began = time.perf_counter()
            segments, _ = model.transcribe(io.BytesIO(wav) if source is None else source, language="en",
                                           beam_size=1, condition_on_previous_text=False)
            "".join(s.text for s in segments)
            return time.perf_counter() - began

        async def ours(ws) -> float:
            began = time.perf_counter()
            await ws.send(json.dumps({"type": "turn.create", "content": [
                {"type": "audio", "format": "wav", "data": base64.b64encode(wav).decode()}]}))
            while (event := json.loads(await ws.recv()))["type"] != "transcript.done":
                assert event["type"] != "error", event
            elapsed = time.perf_counter() - began
            # No dialogue engine is configured: the turn ends with `unavailable` after its transcript.
            assert json.loads(await ws.recv())["code"] == "unavailable"
            return elapsed

        direct_times, our_times, predecoded_times = [], [], []
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start", "vad": False}))
            await ws.recv()
            await server.app.scheduler.submit(server.app.engines["asr"], direct)
            await ours(ws)
            for index in range(rounds):  # ABBA order; the direct call runs on the ASR worker thread too
                pair = [lambda: server.app.scheduler.submit(server.app.engines["asr"], direct), lambda: ours(ws)]
                first, second = pair if index % 2 == 0 else pair[::-1]
                a, b = await first(), await second()
                direct_times.append(a if index % 2 == 0 else b)
                our_times.append(b if index % 2 == 0 else a)
                predecoded_times.append(await server.app.scheduler.submit(server.app.engines["asr"], direct, decoded))
        await server.shutdown()
    return direct_times, our_times, predecoded_times, audio.duration_s(decoded)


def engines_compared(rounds: int) -> None:
    import torch
    from whisper.model import ModelDimensions, Whisper

    from assistant import audio
    from assistant_plugins.faster_whisper_asr import FasterWhisperAsr, FasterWhisperSettings
    from assistant_plugins.whisper_asr import OpenAIWhisperAsr, WhisperSettings
    from assistant_plugins.whisper_packs import WhisperPackSource

    samples = audio.decode(CLIP.read_bytes(), "wav")
    seconds = audio.duration_s(samples)
    fast = FasterWhisperAsr(WhisperPackSource().resolve("tiny.en", Path(tempfile.gettempdir())), FasterWhisperSettings())
    text = fast.transcribe(samples).text
    tokens = len(fast.model.hf_tokenizer.encode(" " + text).ids)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_en = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                                  n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
        torch.manual_seed(0)
        checkpoint = Path(tmp) / "tiny-en-random.pt"
        torch.save({"dims": asdict(tiny_en), "model_state_dict": Whisper(tiny_en).state_dict()}, checkpoint)
        slow = OpenAIWhisperAsr(WhisperSettings(model=str(checkpoint)))

    def run_slow() -> None:
        slow.model.transcribe(samples, language="en", temperature=0.0, condition_on_previous_text=False,
                              fp16=False, verbose=None, sample_len=tokens, without_timestamps=True)

    def timed(fn) -> float:
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began

    timed(lambda: fast.transcribe(samples))
    timed(run_slow)
    fast_times = [timed(lambda: fast.transcribe(samples)) for _ in range(rounds)]
    slow_times = [timed(run_slow) for _ in range(rounds)]
    f, s = statistics.median(fast_times), statistics.median(slow_times)
    print(f"(b) tiny.en size, {seconds:.2f} s clip, {tokens} tokens decoded by each, torch threads {torch.get_num_threads()}")
    print(f"    faster-whisper (CTranslate2 int8): {f * 1000:7.1f} ms, real-time factor {f / seconds:.3f}")
    print(f"    openai-whisper (PyTorch fp32):     {s * 1000:7.1f} ms, real-time factor {s / seconds:.3f}")
    print(f"    ratio openai-whisper / faster-whisper: {s / f:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    direct_times, our_times, predecoded_times, seconds = asyncio.run(end_to_end(args.rounds))
    d, o, p = statistics.median(direct_times), statistics.median(our_times), statistics.median(predecoded_times)
    print(f"(a) {seconds:.2f} s WAV, faster-whisper tiny.en int8, {args.rounds} rounds")
    print(f"    direct model.transcribe(WAV bytes):       {d * 1000:7.1f} ms (best {min(direct_times) * 1000:.1f})")
    print(f"    direct model.transcribe(decoded samples): {p * 1000:7.1f} ms (best {min(predecoded_times) * 1000:.1f})")
    print(f"    websocket to transcript.done:             {o * 1000:7.1f} ms (best {min(our_times) * 1000:.1f})")
    print(f"    ratio ours / direct on WAV bytes: median {o / d:.3f}, best {min(our_times) / min(direct_times):.3f}  (goal <= 1.1)")
    print(f"    ratio ours / direct on decoded samples (no decoding at all): median {o / p:.3f}, "
          f"best {min(our_times) / min(predecoded_times):.3f}")
    engines_compared(args.rounds)


if __name__ == "__main__":
    main()
