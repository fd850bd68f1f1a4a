"""Images per second through our batched encoder path vs one-at-a-time transformers calls.

A random-weight CLIP the size of ViT-B/32 (transformers' CLIPConfig defaults: 224 px, patch 32,
768-wide 12-layer vision tower, 512-float projection) is saved with its processor and loaded by the
`clip` image encoder plugin. Our side: `encode_images` on a list of photo-sized images (the call the
core makes for a turn's images and for search), preprocessing and `batch_size` images per forward
pass. The naive side: the same loaded model and processor, one image per processor call and per
`get_image_features` call, as a loop over images would do. Both sides encode the same images; the
vectors are checked equal. Rounds alternate (ABBA); the median images/s are compared.

    python bench/image_encode.py [--images 32] [--batch 32] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from assistant_plugins.clip_image import ClipImageEncoder, ClipSettings
    from tests.tiny_models import build_tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip-b32"
        tokenizer = build_tiny_clip_tokenizer(Path(tmp) / "tokenizer")
        CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
        torch.manual_seed(0)
        CLIPModel(CLIPConfig(text_config={"vocab_size": len(tokenizer)})).save_pretrained(folder)
        encoder = ClipImageEncoder(folder, ClipSettings(model="clip-b32", device="cpu", batch_size=args.batch))

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]

    def ours() -> tuple[float, np.ndarray]:
        began = time.perf_counter()
        vectors = encoder.encode_images(photos)
        return time.perf_counter() - began, vectors

    def naive() -> tuple[float, np.ndarray]:
        began = time.perf_counter()
        vectors = []
        for photo in photos:
            pixels = encoder.processor(images=photo, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                output = encoder.model.get_image_features(pixel_values=pixels)
            features = output if isinstance(output, torch.Tensor) else output.pooler_output
            vectors.append(torch.nn.functional.normalize(features, dim=-1).numpy())
        return time.perf_counter() - began, np.concatenate(vectors)

    ours(), naive()  # warm-up
    timings: dict[str, list[float]] = {"ours": [], "naive": []}
    for round_index in range(args.rounds):
        order = [("ours", ours), ("naive", naive)] if round_index % 2 == 0 else [("naive", naive), ("ours", ours)]
        results = {}
        for name, run in order:
            seconds, vectors = run()
            timings[name].append(args.images / seconds)
            results[name] = vectors
        assert np.allclose(results["ours"], results["naive"], atol=1e-4), "both sides must compute the same vectors"

    print(f"random-weight CLIP ViT-B/32 config, {args.images} images of 640x480, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds (ABBA)")
    for name in ("ours", "naive"):
        print(f"  {name:5s}: median {statistics.median(timings[name]):7.2f} images/s  "
              f"(runs: {', '.join(f'{v:.2f}' for v in timings[name])})")
    ratio = statistics.median(timings["ours"]) / statistics.median(timings["naive"])
    print(f"ratio ours / one-at-a-time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
