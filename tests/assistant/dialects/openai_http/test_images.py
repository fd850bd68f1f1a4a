"""Image generations over the OpenAI dialect: a tiny random-weight Stable Diffusion, with the `openai` SDK as the client."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
import pytest_asyncio
from PIL import Image
from sqlalchemy import func, select

from assistant.auth import TokenFile
from assistant.server import serve_app
from assistant.store import Conversation
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


def conversations(server) -> int:
    """How many conversations the server's store holds."""
    with server.app.store.store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Conversation)).scalar_one()


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def painter(tiny_sd, tmp_path_factory):
    """One server for the module, with auth on, whose image generator is the tiny pipeline (2 steps); alice's and bob's tokens."""
    folder = tmp_path_factory.mktemp("openai-images")
    tokens = TokenFile(folder / "data" / "tokens.json")
    alice, bob = tokens.create("alice")[1], tokens.create("bob")[1]
    config = make_config(folder, engines={"image_generator": "diffusers"}, plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 2}})
    server = await serve_app(config, (FakeEnginesPlugin(ScriptedDialogue()),))
    yield server, alice, bob
    await server.shutdown(grace_s=0)


async def test_images_come_back_as_base64_and_are_not_stored(painter, openai_client):
    """response_format b64_json gives n PNGs of the asked size, each from its own seed; nothing is stored."""
    server, token, _ = painter
    client = openai_client(server, api_key=token)
    stored = conversations(server)
    result = await client.images.generate(prompt="a red bicycle by the sea", n=2, size="64x48", response_format="b64_json")
    pngs = [base64.b64decode(item.b64_json) for item in result.data]
    images = [Image.open(io.BytesIO(png)) for png in pngs]
    assert [(i.format, i.size) for i in images] == [("PNG", (64, 48))] * 2 and pngs[0] != pngs[1]
    assert result.size == "64x48" and conversations(server) == stored


async def test_image_urls_point_at_stored_attachments_the_caller_may_fetch(painter, openai_client):
    """response_format url stores the image as an attachment of the caller's; its URL answers the PNG with the caller's token only."""
    server, token, bob = painter
    client = openai_client(server, api_key=token)
    stored = conversations(server)
    result = await client.images.generate(model="image_generator", prompt="a lighthouse")
    url = result.data[0].url
    assert url.startswith(f"http://127.0.0.1:{server.port}/attachments/")
    fetched = await client.get(url, cast_to=httpx.Response)
    assert fetched.headers["content-type"] == "image/png" and Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    with pytest.raises(openai.NotFoundError):
        await openai_client(server, api_key=bob).get(url, cast_to=httpx.Response)
    assert conversations(server) == stored + 1


BAD = [({"n": 5}, 400, "n"), ({"size": "huge"}, 400, "size"), ({"size": "100x100"}, 400, "size"), ({"size": "4096x4096"}, 400, "size"),
       ({"model": "dall-e-3"}, 404, "model"), ({"model": "dialogue"}, 400, "model"), ({"prompt": ""}, 400, "prompt"),
       ({"output_format": "webp"}, 400, "output_format")]


async def test_bad_image_requests_store_nothing(painter, openai_client):
    """Too many images, malformed or refused sizes, unknown or wrong models, an empty prompt, other formats: OpenAI-shaped errors,
    nothing stored, and the next request is served."""
    server, token, _ = painter
    client = openai_client(server, api_key=token)
    stored = conversations(server)
    for kwargs, status, param in BAD:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.images.generate(**{"prompt": "a cat", **kwargs})
        error = refused.value.response.json()["error"]
        assert refused.value.status_code == status and error["param"] == param, (kwargs, error)
    assert conversations(server) == stored
    assert len((await client.images.generate(prompt="a cat", response_format="b64_json")).data) == 1


async def test_without_an_image_generator_the_request_is_unavailable(tmp_path, openai_client):
    """A server with no image generator answers 503 saying how to configure one."""
    server = await serve_app(make_config(tmp_path), (FakeEnginesPlugin(ScriptedDialogue()),))
    with pytest.raises(openai.InternalServerError) as refused:
        await openai_client(server).images.generate(prompt="a cat")
    await server.shutdown(grace_s=0)
    assert refused.value.status_code == 503 and "image_generator" in refused.value.message
