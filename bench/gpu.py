"""GPU benchmarks: our engine paths against the bare libraries on the same loaded models, one run.

Random-weight models of realistic size are built from configs (no download), saved like real ones
and loaded by a real server in this process, so the weights and kernels are those a real model of
that size runs; only the text they produce is noise.

1. Dialogue decode: a ~0.5B-parameter Llama (hidden 1024, 24 layers, 32k vocabulary; bfloat16 on
   CUDA). For N = 1, 8, 32 concurrent websocket sessions, each asking for --tokens greedy tokens
   (end of sequence suppressed): aggregate tokens/s through the whole stack (the transformers
   plugin's batched decode loop) against `model.generate` on a batch of the same N prompts. The
   device's copy bandwidth is measured in the same run (a large tensor copy, bytes read + written per
   second); `x mem-bound` = tokens/s x weight bytes read per step / bandwidth: at N = 1 the fraction
   of the memory-bound ceiling reached, at N > 1 how many times that single-stream ceiling the batch beats.
2. Image generation: one step at 512x512 with an SD-turbo-sized random pipeline in float16 (SD 2.1
   UNet, SD VAE, OpenCLIP ViT-H text encoder shapes; Euler, trailing timesteps, guidance 0), one job
   after another: images/s through the websocket (`image.generate` to `image.done`, PNG stored and
   sent) against calling the same loaded pipeline.
3. Batched Whisper: --asr-clips concurrent clips (the offline test phrases padded to 5 s) through the
   faster-whisper engine called from one thread each, as the core's workers call it, with its
   batching on against one clip at a time: clips/s. Real weights: the offline `base` pack (or tiny.en).

    python bench/gpu.py                          # on a CUDA machine
    python bench/gpu.py --device cpu --smoke     # tiny shapes on a CPU, to check that it runs
    python bench/gpu.py --parts dialogue --streams 1,8,32,64 --tokens 256
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DENY = ["rapid_ocr", "imagenet_labels"]  # modality plugins these runs do not use: faster start
QUESTION = "Write a long story about a lighthouse keeper and a storm."
PROMPT = "a red bicycle by the sea"

# ~0.49B parameters: 24 x 17.5M in the layers, 2 x 32.8M in the embedding and the output head.
LLAMA_FULL = dict(vocab_size=32000, hidden_size=1024, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)
LLAMA_SMOKE = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)

# stabilityai/sd-turbo's shapes (Stable Diffusion 2.1 architecture).
UNET_FULL = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
)
UNET_SMOKE = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, norm_num_groups=32,
)
VAE_FULL = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
VAE_SMOKE = dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
TEXT_FULL = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, hidden_act="gelu")
TEXT_SMOKE = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)


@dataclass
class Result:
    """One line of the final table."""

    part: str
    setting: str
    ours: float
    bare: float
    unit: str
    note: str = ""


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str, mib: int) -> float:
    """Bytes read + written per second by a large device-to-device tensor copy (best of 10)."""
    import torch

    source = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        began = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - began)
    return 2 * source.numel() / best


# ---------------------------------------------------------------------------------------------- dialogue


def build_llama(target: Path, shape: dict[str, int], device: str, dtype: Any) -> Path:
    """Save a random Llama of `shape` with a byte-level BPE tokenizer whose vocabulary fills the model's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.plugins.conftest import CHAT_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    merges = []
    for first in alphabet:  # two-byte tokens until the vocabulary is as large as the model's
        for second in alphabet:
            if len(vocab) >= shape["vocab_size"]:
                break
            vocab[first + second] = len(vocab)
            merges.append((first, second))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)
    config = LlamaConfig(**shape, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(target)
    return target


def weight_bytes_per_step(model: Any) -> int:
    """Bytes of weights one decode step reads: all parameters but the input embedding (one row is read), unless tied."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        total -= embedding.numel() * embedding.element_size()
    return total


async def dialogue(args: argparse.Namespace, tmp: Path, bandwidth: float) -> list[Result]:
    """Aggregate tokens/s at each concurrency, ours (websocket + decode loop) against `model.generate`."""
    import torch

    from assistant.config import Config
    from assistant.engines import ChatMessage
    from assistant.server import serve_app
    from bench.concurrency import one_session

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model_dir = build_llama(tmp / "llama", LLAMA_SMOKE if args.smoke else LLAMA_FULL, args.device, dtype)
    streams = [int(n) for n in args.streams.split(",")]
    config = Config.from_dict({
        "server": {"port": 0}, "store": {"url": f"sqlite:///{tmp}/dialogue.db"},
        "engines": {"asr": "", "speech_synthesizer": ""}, "dialogue": {"history_turns": 0},
        "plugins": {"deny": DENY, "transformers_dialogue": {
            "model": str(model_dir), "device": args.device, "dtype": str(dtype).removeprefix("torch."),
            "max_batch": max(streams), "max_new_tokens": args.tokens}},
        "limits": {"turns_per_minute": 10**6, "sessions_per_principal": max(streams) + 1},
    })
    server = await serve_app(config)
    results = []
    try:
        engine = server.app.engines["dialogue"]
        model, tokenizer = engine.model, engine.tokenizer
        model.generation_config.eos_token_id = None  # exactly --tokens tokens per reply, on both paths
        engine.eos_ids = [-1]
        prompt = engine.fit_context([ChatMessage("system", config.dialogue.system_prompt), ChatMessage("user", QUESTION)], args.tokens)
        weights = weight_bytes_per_step(model)
        params = sum(p.numel() for p in model.parameters())
        print(f"dialogue: random Llama, {params / 1e6:.0f}M parameters, {dtype}, {weights / 2**20:.0f} MiB read per step, "
              f"prompt {len(prompt)} tokens, {args.tokens} new tokens per stream")

        def bare(n: int) -> float:
            ids = torch.tensor([prompt] * n, device=args.device)
            synchronize(args.device)
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                                     min_new_tokens=args.tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                                     pad_token_id=tokenizer.pad_token_id)
            synchronize(args.device)
            assert out.shape == (n, len(prompt) + args.tokens), out.shape
            return n * args.tokens / (time.perf_counter() - began)

        url = f"ws://127.0.0.1:{server.port}/ws"

        async def ours(n: int) -> float:
            start = asyncio.Event()
            runs = [asyncio.create_task(one_session(url, args.tokens, start)) for _ in range(n)]
            await asyncio.sleep(0.5)  # every session connected and started
            began = time.perf_counter()
            start.set()
            done = await asyncio.gather(*runs)
            assert all(count == args.tokens for _, _, count in done), done
            return n * args.tokens / (time.perf_counter() - began)

        await asyncio.to_thread(bare, 1)  # warm-up, both paths
        await ours(1)
        for n in streams:
            bare_rates, our_rates = [], []
            for _ in range(args.rounds):
                bare_rates.append(await asyncio.to_thread(bare, n))
                our_rates.append(await ours(n))
            b, o = statistics.median(bare_rates), statistics.median(our_rates)
            note = f"x mem-bound: ours {o * weights / bandwidth:.2f}, bare {b * weights / bandwidth:.2f}"
            results.append(Result("dialogue decode", f"N={n}", o, b, "tok/s", note))
            print(f"  N={n:3d}: ours {o:9.1f} tok/s, bare {b:9.1f} tok/s, ratio {o / b:.3f}; {note}")
    finally:
        await server.shutdown(grace_s=0)
    return results


# ---------------------------------------------------------------------------------------------- image


def build_sd(target: Path, smoke: bool, device: str, dtype: Any) -> Path:
    """Save a random Stable Diffusion pipeline of sd-turbo's shapes (or tiny ones), Euler with trailing timesteps."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_models import build_tiny_clip_tokenizer

    tokenizer = build_tiny_clip_tokenizer(target.parent / f"{target.name}-tokenizer")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(UNET_SMOKE if smoke else UNET_FULL))
        vae = AutoencoderKL(in_channels=3, out_channels=3, **(VAE_SMOKE if smoke else VAE_FULL))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            **(TEXT_SMOKE if smoke else TEXT_FULL), vocab_size=len(tokenizer), max_position_embeddings=77,
            bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        ))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    pipeline = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.to(dtype=dtype).save_pretrained(target)
    return target


async def image(args: argparse.Namespace, tmp: Path) -> list[Result]:
    """Images/s of one-step generation, one job after another, through the websocket against the bare pipeline."""
    import torch
    from websockets.asyncio.client import connect

    from assistant.config import Config
    from assistant.server import serve_app

    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    size = 128 if args.smoke else 512
    pipeline_dir = build_sd(tmp / "sd", args.smoke, args.device, dtype)
    config = Config.from_dict({
        "server": {"port": 0}, "store": {"url": f"sqlite:///{tmp}/image.db"},
        "engines": {"dialogue": "", "asr": "", "speech_synthesizer": "", "image_generator": "diffusers"},
        "plugins": {"deny": DENY, "diffusers_image": {"model": str(pipeline_dir), "device": args.device,
                                                              "dtype": str(dtype).removeprefix("torch.")}},
        "limits": {"turns_per_minute": 10**6},
    })
    server = await serve_app(config)
    try:
        engine = server.app.engines["image_generator"]
        params = {"prompt": PROMPT, "steps": 1, "seed": 1234, "width": size, "height": size, "guidance": 0.0}
        unet_params = sum(p.numel() for p in engine.pipeline.unet.parameters())
        print(f"image: random SD pipeline, UNet {unet_params / 1e6:.0f}M parameters, {dtype}, {size}x{size}, 1 step, guidance 0")

        def bare() -> float:
            synchronize(args.device)
            began = time.perf_counter()
            engine.pipeline(prompt=PROMPT, width=size, height=size, num_inference_steps=1, guidance_scale=0.0,
                            generator=torch.Generator(device=engine.device).manual_seed(1234), output_type="pil").images[0]
            return time.perf_counter() - began

        async def ours(ws: Any) -> float:
            began = time.perf_counter()
            await ws.send(json.dumps({"type": "image.generate", **params}))
            while (event := json.loads(await ws.recv()))["type"] != "image.done":
                assert event["type"] != "error", event
            assert event["status"] == "completed", event
            return time.perf_counter() - began

        bare_times, our_times = [], []
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            await ws.recv()
            await server.app.scheduler.submit(engine, bare)  # warm-up, both paths
            await ours(ws)
            for index in range(args.rounds * 2):  # ABBA order; the bare call runs on the engine's worker, as jobs do
                if index % 2 == 0:
                    bare_times.append(await server.app.scheduler.submit(engine, bare))
                    our_times.append(await ours(ws))
                else:
                    our_times.append(await ours(ws))
                    bare_times.append(await server.app.scheduler.submit(engine, bare))
    finally:
        await server.shutdown(grace_s=0)
    b, o = 1 / statistics.median(bare_times), 1 / statistics.median(our_times)
    note = f"median ms: ours {1000 / o:.1f}, bare {1000 / b:.1f} (ours adds PNG encoding, storage, base64)"
    print(f"  ours {o:.2f} images/s, bare {b:.2f} images/s, ratio {o / b:.3f}; {note}")
    return [Result("image 1 step", f"{size}x{size}", o, b, "images/s", note)]


# ---------------------------------------------------------------------------------------------- ASR


def asr(args: argparse.Namespace, tmp: Path) -> list[Result]:
    """Clips/s of concurrent clips through the faster-whisper engine, batched against one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from assistant.audio import decode
    from assistant_plugins.faster_whisper_asr import FasterWhisperAsr, FasterWhisperSettings
    from assistant_plugins.whisper_packs import WhisperPackSource

    speech = sorted((ROOT / "tests" / "data" / "speech").glob("*.wav"))
    clips = []
    for index in range(args.asr_clips):
        samples = decode(speech[index % len(speech)].read_bytes(), "wav", 16000, 120)
        clips.append(np.concatenate([samples, np.zeros(5 * 16000 - len(samples), dtype=np.float32)]))
    model = WhisperPackSource().resolve(args.whisper, Path(args.cache_dir).expanduser())
    rates = {}
    for label, batching in (("batched", True), ("one at a time", False)):
        settings = FasterWhisperSettings(model=args.whisper, device=args.device, batching=batching, max_batch=args.asr_clips)
        engine = FasterWhisperAsr(model, settings)
        engine.transcribe(clips[0])  # warm-up
        times = []
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.asr_clips) as pool:
                began = time.perf_counter()
                texts = [t.text for t in pool.map(engine.transcribe, clips)]
                times.append(time.perf_counter() - began)
        rates[label] = args.asr_clips / statistics.median(times)
        sizes = engine.batches.batch_sizes[1:] if engine.batches else []
        print(f"  ASR {label:14s}: {rates[label]:7.2f} clips/s (batches {sizes or 'none'}; first: {texts[0]!r})")
        del engine
    note = f"{args.asr_clips} concurrent 5 s clips, Whisper {args.whisper} (real weights), greedy"
    return [Result("whisper batched", f"{args.asr_clips} clips", rates["batched"], rates["one at a time"], "clips/s", note)]


# ---------------------------------------------------------------------------------------------- main


def quiet_libraries() -> None:
    """No progress bars or notices from transformers and diffusers between the figures."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (transformers_logging, diffusers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    # A random fp16 VAE may decode to NaN; the PNG of such an image is no less work than any other.
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and counts: checks that everything runs, in about 20 s on a CPU")
    parser.add_argument("--parts", default="dialogue,image,asr")
    parser.add_argument("--streams", default=None, help="concurrent dialogue streams (default 1,8,32; smoke 1,4)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per stream (default 128; smoke 8)")
    parser.add_argument("--rounds", type=int, default=None, help="measurements per figure, median taken (default 3; smoke 1)")
    parser.add_argument("--asr-clips", type=int, default=None, help="concurrent clips (default 16; smoke 4)")
    parser.add_argument("--whisper", default=None, help="offline Whisper pack: base (default) or tiny.en (smoke)")
    parser.add_argument("--cache-dir", default="~/.cache/assistant/models", help="where the base pack is joined once")
    args = parser.parse_args()
    import torch

    quiet_libraries()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    defaults = dict(streams="1,4", tokens=8, rounds=1, asr_clips=4, whisper="tiny.en") if args.smoke else \
        dict(streams="1,8,32", tokens=128, rounds=3, asr_clips=16, whisper="base")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = args.parts.split(",")
    unknown = set(parts) - {"dialogue", "image", "asr"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    bandwidth = copy_bandwidth(args.device, 64 if args.smoke else 2048)
    print(f"device {args.device} ({device_name}); copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)"
          f"{'; SMOKE shapes, figures mean nothing' if args.smoke else ''}")
    results: list[Result] = []
    failed = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"dialogue": lambda: asyncio.run(dialogue(args, Path(tmp), bandwidth)),
                "image": lambda: asyncio.run(image(args, Path(tmp))), "asr": lambda: asr(args, Path(tmp))}
        for part in parts:
            try:
                results += runs[part]()
            except Exception:  # one part that cannot run on this machine does not lose the others' figures
                traceback.print_exc()
                failed.append(part)
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print()
    print(f"{'part':16s} {'setting':11s} {'ours':>10s} {'baseline':>10s} {'unit':9s} {'ratio':>7s}  notes")
    for r in results:
        print(f"{r.part:16s} {r.setting:11s} {r.ours:10.2f} {r.bare:10.2f} {r.unit:9s} {r.ours / r.bare:7.3f}  {r.note}")
    print("baseline: the bare library on the same loaded model (dialogue: model.generate on the same batch; image: the "
          f"pipeline call); for whisper, our engine serving one clip at a time. {time.perf_counter() - began:.0f} s in all.")
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (traceback above)")


if __name__ == "__main__":
    main()
