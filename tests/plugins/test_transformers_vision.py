"""The vision-language dialogue engine on a tiny random LLaVA: early fusion over the websocket and the context budget."""

from __future__ import annotations

import io
import threading

import torch
from PIL import Image

from assistant import ChatMessage, DialogueRequest, GenerationOptions
from assistant_plugins.transformers_vision import TransformersVisionDialogue, VisionSettings
from tests import images
from tests.conftest import make_config

IMAGE_TOKENS = 16  # (28 / 7) ** 2 patches of the tiny vision tower


def vision_config(tmp_path, model, **settings):
    table = {"model": str(model), "device": "cpu", "max_new_tokens": 6, **settings}
    return make_config(tmp_path, engines={"dialogue": "transformers_vision"}, plugins={"transformers_vision": table})


async def test_the_image_reaches_the_model_over_the_websocket(start_server, connect_client, tmp_path, tiny_llava):
    """Text plus image: the model's generate receives the image's own pixels and 16 image tokens in the prompt."""
    server = await start_server(vision_config(tmp_path, tiny_llava))
    engine = server.app.engines["dialogue"]
    assert engine.capabilities.accepts_images and server.app.modalities == []
    received = []
    generate = engine.model.generate

    def spy(**kwargs):
        received.append(kwargs)
        return generate(**kwargs)

    engine.model.generate = spy
    photo = images.solid((200, 30, 30), (64, 48))
    async with connect_client(server) as client:
        started = await client.start()
        assert started["capabilities"]["dialogue"] == f"transformers-vision:{tiny_llava}"
        events = await client.say_parts([images.image_part(photo), {"type": "text", "text": "What is in the picture?"}])
    done = events[-1]
    assert done["status"] == "completed" and done["usage"]["completion_tokens"] >= 1, done
    kwargs = received[-1]
    expected = engine.processor(images=[Image.open(io.BytesIO(photo)).convert("RGB")], text="<image>", return_tensors="pt")
    assert torch.allclose(kwargs["pixel_values"], expected["pixel_values"]), "the model must see the image that was sent"
    image_token = engine.model.config.image_token_id
    assert int((kwargs["input_ids"] == image_token).sum()) == IMAGE_TOKENS
    assert done["usage"]["prompt_tokens"] == kwargs["input_ids"].shape[1]


def test_the_context_budget_counts_image_tokens_and_drops_the_oldest_turns(tiny_llava):
    """Each image costs its 16 tokens; when over budget the oldest turns go first, with their images."""
    engine = TransformersVisionDialogue(tiny_llava, VisionSettings(model="tiny", device="cpu", context_tokens=120, max_new_tokens=4))
    red, blue = Image.new("RGB", (30, 30), "red"), Image.new("RGB", (30, 30), "blue")
    one = engine.encode([ChatMessage("user", "Hi", (red,))])
    two = engine.encode([ChatMessage("user", "Hi", (red, blue))])
    assert engine.prompt_length(two) - engine.prompt_length(one) == IMAGE_TOKENS + 1  # the image and its newline
    history = [ChatMessage("system", "Be brief.")]
    for i in range(4):
        history += [ChatMessage("user", f"Picture {i}", (red,)), ChatMessage("assistant", f"A red square {i}.")]
    history.append(ChatMessage("user", "And this one?", (blue,)))
    fitted = engine.fit_context(history, max_new_tokens=4)
    assert engine.prompt_length(fitted) <= 120 - 4
    kept_images = int((fitted["input_ids"] == engine.model.config.image_token_id).sum()) // IMAGE_TOKENS
    assert 1 <= kept_images < 5 and fitted["pixel_values"].shape[0] == kept_images
    result = engine.generate(DialogueRequest(history, GenerationOptions(max_new_tokens=4)), lambda delta: None, threading.Event())
    assert result.usage.prompt_tokens == engine.prompt_length(fitted)
