"""Image parts over the websocket: storage, features encoded once, late and early fusion, bad images, search."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tests import images
from tests.conftest import make_config
from tests.fakes import ColourEncoder, ColourNamer, FakeEnginesPlugin, ScriptedDialogue

RED, GREEN, BLUE = images.solid("red"), images.solid("green"), images.solid("blue")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def encoder() -> ColourEncoder:
    return ColourEncoder()


@pytest.fixture
def namer() -> ColourNamer:
    return ColourNamer()


@pytest.fixture
async def vision_server(start_server, tmp_path, engine, encoder, namer):
    """A server with the fake dialogue engine (text only), the colour encoder and the colour-naming modality."""
    config = make_config(tmp_path, engines={"image_encoder": "fake"})
    return await start_server(config, plugins=(FakeEnginesPlugin(engine, encoder=encoder, modalities={"colour": namer}),))


async def test_text_and_image_reach_a_text_model_as_fused_text_and_are_stored(vision_server, connect_client, engine, namer):
    """The modality's description reaches the prompt as [Image 1: ...] before the question; the image and its description are stored."""
    async with connect_client(vision_server) as client:
        started = await client.start()
        assert started["capabilities"]["image_encoder"] == "fake:colour"
        events = await client.say_parts([images.image_part(RED), {"type": "text", "text": "What colour is this?"}])
        assert [e["type"] for e in events][0] == "turn.created" and events[-1]["status"] == "completed"
        prompt = engine.requests[-1].messages[-1]
        assert prompt.content == "[Image 1: mostly red, 48x40]\nWhat colour is this?" and prompt.images == ()
        seen = namer.seen[-1]
        assert seen.index == 1 and seen.sha256 == sha(RED) and seen.mime == "image/png" and seen.data == RED
        assert seen.features is not None and seen.encoder_id == "fake:colour"
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
        assert [p["type"] for p in turn["content"]] == ["image", "text", "image_text"]
        assert turn["content"][0] == {"type": "image", "sha256": sha(RED), "mime": "image/png", "url": f"/attachments/{sha(RED)}"}
        assert turn["content"][2]["text"] == "mostly red, 48x40" and turn["content"][2]["sha256"] == sha(RED)
        # A later turn still sees the earlier image's description in its history.
        await client.say("And before?")
        assert engine.requests[-1].messages[-3].content == "[Image 1: mostly red, 48x40]\nWhat colour is this?"


async def test_a_repeated_image_is_encoded_once_also_after_a_restart(start_server, tmp_path, connect_client, engine):
    """Two images go to the encoder in one call; the same image sent again, even after a restart, is never encoded again."""
    first = ColourEncoder()
    config = make_config(tmp_path, engines={"image_encoder": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, encoder=first),))
    async with connect_client(server) as client:
        conversation = (await client.start())["conversation_id"]
        await client.say_parts([images.image_part(RED), images.image_part(GREEN), {"type": "text", "text": "two"}])
        await client.say_parts([images.image_part(RED), {"type": "text", "text": "again"}])
        await client.say_parts([images.image_part(RED), images.image_part(RED), images.image_part(BLUE), {"type": "text", "text": "mix"}])
    assert first.image_calls == [2, 1], "red and green together, then only blue"
    await server.shutdown(grace_s=0)
    second = ColourEncoder()
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, encoder=second),))
    async with connect_client(server) as client:
        await client.start(conversation)
        await client.say_parts([images.image_part(GREEN), {"type": "text", "text": "after restart"}])
    assert second.image_calls == []


BAD_IMAGES = [
    (images.solid("blue", (64, 64))[:-40], "bad_request", "truncated"),
    (b"just some text, not a PNG\n" * 4, "bad_request", "not an image"),
    (images.png_header_only(30000, 30000), "too_large", "pixels"),
    (b"", "bad_request", "empty"),
]


@pytest.mark.parametrize("data, code, words", BAD_IMAGES, ids=["truncated-png", "text-as-png", "bomb-30000x30000", "zero-bytes"])
async def test_bad_images_answer_an_error_and_store_nothing(vision_server, connect_client, engine, encoder, data, code, words):
    """Each bad image gets `error` with its code; no turn, part or attachment is stored, and the next turn works."""
    async with connect_client(vision_server) as client:
        await client.start()
        await client.send({"type": "turn.create", "event_id": "bad", "content": [
            {"type": "text", "text": "look"}, images.image_part(data)]})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code and error["ref"] == "bad", error
        assert words in error["message"] and "content.1" in error["message"]
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []
        assert await vision_server.app.store.attachment(sha(data)) is None
        assert engine.requests == [] and encoder.image_calls == []
        events = await client.say_parts([images.image_part(BLUE), {"type": "text", "text": "this one is fine"}])
        assert events[-1]["status"] == "completed"


async def test_image_limits_from_config(start_server, tmp_path, connect_client, engine):
    """Too many images, too many bytes or a non-image mime each answer an error naming the limit."""
    config = make_config(tmp_path, image_input={"max_images_per_turn": 2, "max_bytes": 2048})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    big = images.encode(images.Image.effect_noise((64, 64), 60).convert("RGB"))
    async with connect_client(server) as client:
        await client.start()
        for content, code, words in [
            ([images.image_part(RED)] * 3, "too_large", "at most 2 images"),
            ([images.image_part(big)], "too_large", "at most 2048"),
            ([images.image_part(RED, mime="text/plain")], "bad_request", "not an image type"),
            ([{"type": "image", "data": "%%%"}], "bad_request", "base64"),
        ]:
            await client.send({"type": "turn.create", "content": content})
            error = await client.recv()
            assert error["type"] == "error" and error["code"] == code and words in error["message"], error


async def test_an_image_alone_is_a_turn(vision_server, connect_client, engine):
    """A turn with only an image is answered; the prompt holds the image's description."""
    async with connect_client(vision_server) as client:
        await client.start()
        events = await client.say_parts([images.image_part(GREEN, mime=None)])
        assert events[-1]["status"] == "completed"
        assert engine.requests[-1].messages[-1].content == "[Image 1: mostly green, 48x40]"


async def test_a_failing_or_garbage_modality_is_skipped(start_server, tmp_path, connect_client, engine):
    """A modality that raises and one that returns a dict are logged and skipped; the working one still speaks."""
    plugin = FakeEnginesPlugin(engine, modalities={
        "broken": ColourNamer(fail=True), "garbage": ColourNamer(garbage=True), "colour": ColourNamer(),
    })
    server = await start_server(make_config(tmp_path), plugins=(plugin,))
    async with connect_client(server) as client:
        await client.start()
        events = await client.say_parts([images.image_part(BLUE), {"type": "text", "text": "what is it"}])
        assert events[-1]["status"] == "completed"
        assert engine.requests[-1].messages[-1].content == "[Image 1: mostly blue, 48x40]\nwhat is it"


async def test_without_modalities_the_model_is_told_an_image_came(start_server, tmp_path, connect_client, engine):
    """With no modality and no encoder, a text model still learns that the user sent an image."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([images.image_part(BLUE), {"type": "text", "text": "hm?"}])
        assert engine.requests[-1].messages[-1].content == "[Image 1: no description available]\nhm?"


async def test_a_failing_encoder_does_not_fail_the_turn(vision_server, connect_client, engine, encoder, namer):
    """An encoder returning NaNs is logged; the turn is answered from the pixels, and no features are stored."""
    encoder.garbage = True
    async with connect_client(vision_server) as client:
        await client.start()
        events = await client.say_parts([images.image_part(RED), {"type": "text", "text": "colour?"}])
        assert events[-1]["status"] == "completed" and namer.seen[-1].features is None
        assert await vision_server.app.store.image_features([sha(RED)], encoder.id) == {}


async def test_early_fusion_hands_images_to_a_vision_engine_and_skips_modalities(start_server, tmp_path, connect_client, namer):
    """An engine that accepts images gets the pixels in its messages (earlier turns' too) and no descriptions."""
    vlm = ScriptedDialogue(accepts_images=True)
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(vlm, modalities={"colour": namer}),))
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([images.image_part(RED), images.image_part(GREEN), {"type": "text", "text": "Compare."}])
        last = vlm.requests[-1].messages[-1]
        assert last.content == "Compare." and [int(np.argmax(image.getpixel((1, 1)))) for image in last.images] == [0, 1]
        await client.say("And now?")
        earlier = vlm.requests[-1].messages[-3]
        assert earlier.content == "Compare." and len(earlier.images) == 2
    assert namer.seen == [] and server.app.modalities == []


async def test_search_ranks_the_conversations_images(vision_server, connect_client):
    """conversation.search ranks this conversation's images by similarity to the query, best first, within the limit."""
    async with connect_client(vision_server) as client:
        await client.start()
        for data, text in [(RED, "one"), (GREEN, "two"), (BLUE, "three")]:
            await client.say_parts([images.image_part(data), {"type": "text", "text": text}])
        for query, best in [("something blue", BLUE), ("a red thing", RED), ("green", GREEN)]:
            await client.send({"type": "conversation.search", "query": query, "limit": 2})
            found = (await client.recv_until("conversation.search.results"))[-1]
            assert found["encoder"] == "fake:colour" and found["query"] == query and len(found["results"]) == 2
            top = found["results"][0]
            assert top["sha256"] == sha(best) and top["url"] == f"/attachments/{sha(best)}" and top["role"] == "user"
            assert top["score"] > found["results"][1]["score"]


async def test_search_encodes_images_stored_before_the_encoder_was_configured(start_server, tmp_path, connect_client, engine):
    """Images stored without an encoder are encoded once, at the first search; only this conversation's images count."""
    config = make_config(tmp_path)
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        conversation = (await client.start())["conversation_id"]
        await client.say_parts([images.image_part(RED), images.image_part(BLUE), {"type": "text", "text": "two"}])
        await client.send({"type": "conversation.search", "event_id": "s", "query": "red"})
        error = await client.recv()
        assert error["code"] == "unavailable" and error["ref"] == "s"
    async with connect_client(server) as other:
        await other.start()
        await other.say_parts([images.image_part(GREEN), {"type": "text", "text": "elsewhere"}])
    await server.shutdown(grace_s=0)
    encoder = ColourEncoder()
    server = await start_server(make_config(tmp_path, engines={"image_encoder": "fake"}), plugins=(FakeEnginesPlugin(engine, encoder=encoder),))
    async with connect_client(server) as client:
        await client.start(conversation)
        for _ in range(2):
            await client.send({"type": "conversation.search", "query": "blue"})
            results = (await client.recv_until("conversation.search.results"))[-1]["results"]
            assert [r["sha256"] for r in results] == [sha(BLUE), sha(RED)]
    assert encoder.image_calls == [2]


async def test_the_same_image_twice_in_a_turn_is_described_once(vision_server, connect_client, engine, namer):
    """Two copies of one image and another image: descriptions for image 1 and image 3 only, in order."""
    async with connect_client(vision_server) as client:
        await client.start()
        await client.say_parts([images.image_part(RED), images.image_part(RED), images.image_part(BLUE), {"type": "text", "text": "hm"}])
    assert [seen.index for seen in namer.seen] == [1, 3]
    assert engine.requests[-1].messages[-1].content == "[Image 1: mostly red, 48x40]\n[Image 3: mostly blue, 48x40]\nhm"
