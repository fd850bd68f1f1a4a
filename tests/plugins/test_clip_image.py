"""The CLIP/SigLIP image encoder and the zero-shot label modality, on tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from assistant.app import App
from assistant.config import ConfigError
from assistant.modalities import ImageInput
from assistant_plugins.clip_image import ClipImageEncoder, ClipSettings, ZeroShotLabels, create_engine
from tests.conftest import make_config

COLOURS = ["red", "green", "blue", "yellow", "white"]


@pytest.fixture(params=[("tiny_clip", 24, "clip"), ("tiny_siglip", 32, "siglip")], ids=["clip", "siglip"])
def encoder(request) -> ClipImageEncoder:
    """The encoder on each tiny model, with its expected vector size checked on load."""
    fixture, dim, model_type = request.param
    engine = ClipImageEncoder(request.getfixturevalue(fixture), ClipSettings(model="tiny", batch_size=2, device="cpu"))
    assert engine.dim == dim and engine.model_type == model_type and engine.id == f"{model_type}:tiny"
    return engine


def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (40 + 7 * i, 36), colour) for i, colour in enumerate(COLOURS)]


def test_image_vectors_have_the_configured_size_and_unit_norm(encoder):
    """Each image gives a float32 vector of the model's projection size with length 1."""
    vectors = encoder.encode_images(pictures())
    assert vectors.shape == (len(COLOURS), encoder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2]), "different images must give different vectors"


def test_a_batch_call_equals_single_calls(encoder):
    """Encoding five images at once (in chunks of batch_size 2) gives what encoding each alone gives."""
    batched = encoder.encode_images(pictures())
    singles = np.concatenate([encoder.encode_images([image]) for image in pictures()])
    assert np.allclose(batched, singles, atol=1e-5)


def test_text_vectors_share_the_space(encoder):
    """Texts encode to unit vectors of the same size; a batch equals single calls."""
    texts = ["a photo of a cat", "no parking", "a red bicycle by the sea"]
    batched = encoder.encode_texts(texts)
    assert batched.shape == (3, encoder.dim) and np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batched, np.concatenate([encoder.encode_texts([t]) for t in texts]), atol=1e-5)


def test_label_scores_are_probabilities(encoder):
    """Zero-shot scores lie in [0, 1]; CLIP's softmax rows sum to 1."""
    scores = encoder.label_scores(encoder.encode_images(pictures()[:2]), encoder.encode_texts(["a cat", "a dog", "a sign"]))
    assert scores.shape == (2, 3) and (scores >= 0).all() and (scores <= 1).all()
    if encoder.model_type == "clip":
        assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)


class _App:
    """Just what the label modality's `load` uses: the engines and its validated settings."""

    def __init__(self, engines: dict, table: dict) -> None:
        self.engines = engines
        self.settings = ClipSettings(**table)

    def plugin_settings(self, name: str) -> ClipSettings:
        assert name == "clip_image"
        return self.settings


def test_zero_shot_labels_name_the_best_configured_labels(tiny_clip):
    """The label modality scores an image against the configured labels and names the top ones with their scores."""
    encoder = ClipImageEncoder(tiny_clip, ClipSettings(model="tiny", device="cpu"))
    labels = ["a cat", "a dog", "a sign", "a bicycle"]
    modality = ZeroShotLabels()
    assert modality.load(_App({"image_encoder": encoder}, {"labels": labels, "top_labels": 2, "min_label_score": 0.0}))
    image = pictures()[0]
    features = encoder.encode_images([image])[0]
    text = modality.describe(ImageInput(1, "0" * 64, "image/png", b"", image, features, encoder.id))
    scores = encoder.label_scores(features[None], modality.label_features)[0]
    best = [labels[i] for i in np.argsort(-scores)[:2]]
    assert text == f"looks like: {best[0]} ({scores.max():.2f}), {best[1]} ({np.sort(scores)[-2]:.2f})"
    assert modality.describe(ImageInput(1, "0" * 64, "image/png", b"", image, None, None)) is None


def test_zero_shot_labels_sit_out_without_an_encoder():
    """With no image encoder configured the label modality does not load."""
    assert ZeroShotLabels().load(_App({}, {})) is False


def test_settings_errors_name_the_key(tmp_path):
    """An unknown key stops startup naming plugins.clip_image.<key>; an empty model fails the engine saying what to set."""
    with pytest.raises(ConfigError, match=r"plugins.clip_image.batchsize"):
        App.prepare(make_config(tmp_path, plugins={"deny": [], "clip_image": {"model": "x", "batchsize": 3}}))
    app = App.prepare(make_config(tmp_path, plugins={"deny": []}))
    with pytest.raises(ValueError, match=r"plugins.clip_image\] model is empty"):
        app.build_engine("image_encoder", "clip")
    assert create_engine is app.registrations.engines[("image_encoder", "clip")].factory
