"""Image encoder on CLIP or SigLIP through transformers, and zero-shot image labels as a modality.

Configured by `[plugins.clip_image]`. The `clip` image encoder loads any transformers model with
`get_image_features`/`get_text_features` (CLIP, SigLIP, SigLIP 2) and its processor from a folder
or hub id; float16 on GPU. Vectors are L2-normalized. The `image_labels` modality scores each image
against a configurable label list with the configured encoder (whichever plugin provides it) and
tells a text-only dialogue engine the labels that fit best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoModel, AutoProcessor

from assistant import ImageEncoder, ImageInput, Modality, hookimpl

PLUGIN_NAME = "clip_image"

DEFAULT_LABELS = [
    "a person", "a group of people", "an animal", "a pet", "food", "a drink", "a plant", "a landscape", "a city street",
    "a building", "a room", "a vehicle", "a sign", "a document", "a screenshot", "a chart", "a drawing", "a product",
]


class ClipSettings(BaseModel):
    """`[plugins.clip_image]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("", description="a CLIP or SigLIP folder or hub id; no offline weights exist")
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(32, ge=1, description="images per forward pass")
    labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS))
    label_template: str = Field("a photo of {}.", description="each label is put into this text before encoding")
    top_labels: int = Field(3, ge=1)
    min_label_score: float = Field(0.1, ge=0, le=1)


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pooled(output: Any) -> torch.Tensor:
    """The projected features: a tensor, or the pooler output of transformers 5's output objects."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipImageEncoder(ImageEncoder):
    """A CLIP-like model loaded once; its methods run on the engine's worker thread."""

    def __init__(self, model_path: Path | str, settings: ClipSettings, name: str | None = None) -> None:
        self.settings = settings
        self.device = _pick_device(settings.device)
        if settings.dtype == "auto":
            self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        else:
            self.dtype = getattr(torch, settings.dtype)
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path, dtype=self.dtype).to(self.device).eval()
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise ValueError(f"{model_path}: {type(self.model).__name__} has no get_image_features/get_text_features (not CLIP-like)")
        self.model_type = self.model.config.model_type
        self.sigmoid = self.model_type.startswith("siglip")
        text_config = getattr(self.model.config, "text_config", None)
        self.text_max_length = min(
            int(getattr(self.processor.tokenizer, "model_max_length", 64) or 64),
            int(getattr(text_config, "max_position_embeddings", 64) or 64),
        )
        self.id = f"{self.model_type}:{name or settings.model}"
        self.dim = int(self.encode_texts(["warm-up"]).shape[1])

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """Unit vectors for RGB images, `batch_size` per forward pass; see ImageEncoder.encode_images."""
        chunks = []
        for start in range(0, len(images), self.settings.batch_size):
            batch = self.processor(images=images[start : start + self.settings.batch_size], return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device, self.dtype)
            with torch.inference_mode():
                chunks.append(self._unit(_pooled(self.model.get_image_features(pixel_values=pixels))))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for texts (SigLIP pads to its fixed length, as it was trained)."""
        padding: Any = "max_length" if self.sigmoid else True
        batch = self.processor(text=texts, padding=padding, truncation=True, max_length=self.text_max_length, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        if self.sigmoid:
            inputs.pop("attention_mask", None)  # SigLIP attends over its padding, as in training
        with torch.inference_mode():
            return self._unit(_pooled(self.model.get_text_features(**inputs)))

    @staticmethod
    def _unit(features: torch.Tensor) -> np.ndarray:
        features = features.float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32)

    def label_scores(self, image_features: Any, text_features: Any) -> np.ndarray:
        """The model's own zero-shot probabilities: CLIP's scaled softmax, SigLIP's sigmoid with bias."""
        scale = float(self.model.logit_scale.detach().float().exp())
        logits = scale * (np.asarray(image_features, dtype=np.float32) @ np.asarray(text_features, dtype=np.float32).T)
        if self.sigmoid:
            bias = float(self.model.logit_bias.detach().float()) if hasattr(self.model, "logit_bias") else 0.0
            return 1.0 / (1.0 + np.exp(-(logits + bias)))
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)


class ZeroShotLabels(Modality):
    """Describes an image by the configured labels the image encoder scores highest."""

    def __init__(self) -> None:
        self.encoder: ImageEncoder | None = None
        self.labels: list[str] = []
        self.label_features: np.ndarray | None = None
        self.settings = ClipSettings()

    def load(self, app: Any) -> bool:
        """Encode the label texts once with the configured image encoder; sit out without one."""
        encoder = app.engines.get("image_encoder")
        self.settings = app.plugin_settings(PLUGIN_NAME)
        if not isinstance(encoder, ImageEncoder) or not self.settings.labels:
            return False
        self.encoder = encoder
        self.labels = list(self.settings.labels)
        self.label_features = np.asarray(encoder.encode_texts([self.settings.label_template.format(label) for label in self.labels]))
        return True

    def describe(self, image: ImageInput) -> str | None:
        """`looks like: a sign (0.62), a city street (0.21)`, or None when no label scores high enough."""
        if self.encoder is None or image.features is None or self.label_features is None:
            return None
        scores = np.asarray(self.encoder.label_scores(np.asarray(image.features)[None, :], self.label_features))[0]
        order = np.argsort(-scores)[: self.settings.top_labels]
        chosen = [f"{self.labels[i]} ({scores[i]:.2f})" for i in order if scores[i] >= self.settings.min_label_score]
        return f"looks like: {', '.join(chosen)}" if chosen else None


def create_engine(app: Any, settings: ClipSettings) -> ClipImageEncoder:
    """Engine factory: resolve the configured model and load it."""
    if not settings.model:
        raise ValueError("[plugins.clip_image] model is empty: name a CLIP or SigLIP folder or hub id")
    return ClipImageEncoder(app.models.resolve(settings.model), settings)


def configured_model(app: Any, settings: ClipSettings) -> str | None:
    """The model name this engine would load, for `assistant models`."""
    return settings.model or None


@hookimpl
def register_engines(register):
    """Register the `clip` image encoder (CLIP and SigLIP), configured by `[plugins.clip_image]`."""
    register("image_encoder", "clip", create_engine, settings=ClipSettings, model_name=configured_model)


@hookimpl
def register_modalities(register):
    """Register `image_labels`: zero-shot labels from the configured image encoder (same settings table)."""
    register("image_labels", ZeroShotLabels(), settings=ClipSettings)
