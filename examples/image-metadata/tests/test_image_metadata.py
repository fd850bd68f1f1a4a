"""The image-metadata modality, tested the way a third-party plugin tests itself: with the installed kit (assistant.testing)."""

from __future__ import annotations

import assistant_image_metadata
import pytest

from assistant.app import App
from assistant.testing import media
from assistant.testing.conformance import ModalityConformance
from assistant.testing.fakes import FakeEnginesPlugin, ScriptedDialogue
from assistant.testing.server import server_config

PLUGIN = ("image_metadata", assistant_image_metadata)  # registered under its entry-point name, as when installed


class TestImageMetadataConformance(ModalityConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def modality(cls, tmp_path_factory):
        app = App.prepare(server_config(tmp_path_factory.mktemp("app")), [PLUGIN])
        modality = next(entry.modality for entry in app.registrations.modalities if entry.name == "image_metadata")
        assert modality.load(app)
        return modality


async def test_the_dialogue_engine_reads_the_metadata(assistant_server, assistant_client):
    """Over a real websocket, an image's size and format reach the dialogue engine's prompt."""
    engine = ScriptedDialogue()
    server = await assistant_server(
        [FakeEnginesPlugin(engine), PLUGIN], engines={"dialogue": "fake"}, plugins={"deny": ["rapid_ocr", "imagenet_labels", "clip_image"]}
    )  # the built-in modalities would add their own text
    async with assistant_client(server) as client:
        await client.start()
        events = await client.say_parts([media.image_part(media.solid_image("red", (30, 20))), {"type": "text", "text": "What is it?"}])
    assert events[-1]["status"] == "completed"
    assert engine.requests[-1].messages[-1].content == "[Image 1: a 30x20 PNG image]\nWhat is it?"


def test_a_misspelt_setting_stops_startup(tmp_path):
    """`[plugins.image_metadata] camra = false` is refused with one line naming the key."""
    from assistant.config import ConfigError

    with pytest.raises(ConfigError, match=r"^invalid configuration: plugins.image_metadata.camra: Extra inputs are not permitted$"):
        App.prepare(server_config(tmp_path, plugins={"image_metadata": {"camra": False}}), [PLUGIN])
