"""ImageNet labels per second: the `labels` modality's batched path vs one image per forward pass.

The built-in `imagenet_labels` modality (EfficientNet-Lite0 from its wheel) labels the real
scikit-image photos (cat, espresso, motorcycle, cameraman, rocket, astronaut), repeated to --images.
Batched: `describe_batch` on all of them, `batch_size` images per forward pass (the one call the core
makes per turn). One at a time: `describe` per image, as a loop would. Both sides give the same
descriptions (checked). Rounds alternate (ABBA); the median images/s are compared.

    python bench/image_labels.py [--images 32] [--batch 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import skimage.data
    import torch
    from PIL import Image

    from assistant.modalities import ImageInput
    from assistant_plugins.imagenet_labels import ImageNetLabels, LabelSettings

    class _App:
        def plugin_settings(self, name: str) -> LabelSettings:
            return LabelSettings(batch_size=args.batch)

    photos = []
    for name in ("chelsea", "coffee", "stereo_motorcycle", "camera", "rocket", "astronaut"):
        pixels = getattr(skimage.data, name)()
        photos.append(Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB"))
    inputs = []
    for index in range(args.images):
        image = photos[index % len(photos)]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        inputs.append(ImageInput(index=index + 1, sha256=f"{index:064x}", mime="image/png", data=buffer.getvalue(), image=image))

    labeller = ImageNetLabels()
    assert labeller.load(_App())
    labeller.describe_batch(inputs[:2])  # warm-up

    def batched() -> list[str | None]:
        return labeller.describe_batch(inputs)

    def one_at_a_time() -> list[str | None]:
        return [labeller.describe(image) for image in inputs]

    assert batched() == one_at_a_time(), "the batched path must give the same descriptions"
    rates: dict[str, list[float]] = {"batched": [], "one at a time": []}
    order = [("batched", batched), ("one at a time", one_at_a_time)]
    for round_ in range(args.rounds):
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            began = time.perf_counter()
            run()
            rates[name].append(args.images / (time.perf_counter() - began))
    ours, naive = statistics.median(rates["batched"]), statistics.median(rates["one at a time"])
    print(f"EfficientNet-Lite0, {args.images} photos, batch {args.batch}, {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"one image per forward pass: {naive:7.1f} images/s")
    print(f"batched (describe_batch):   {ours:7.1f} images/s")
    print(f"ratio batched / one at a time: {ours / naive:.2f}")


if __name__ == "__main__":
    main()
