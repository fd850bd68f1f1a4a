"""Image jobs over the websocket: routing, progress, cancel, storage, with a tiny random SD pipeline."""

from __future__ import annotations

import asyncio
import base64
import io
import urllib.error
import urllib.request

import pytest
from PIL import Image

from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


def image_config(tmp_path, tiny_sd, **plugin):
    return make_config(
        tmp_path,
        engines={"dialogue": "fake", "image_generator": "diffusers"},
        plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 4, "max_steps": 1000, **plugin}},
    )


@pytest.fixture
async def image_server(start_server, tmp_path, tiny_sd):
    return await start_server(image_config(tmp_path, tiny_sd), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))


def fetch(server, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers["Content-Type"]


async def test_draw_a_red_bicycle_is_routed_acknowledged_painted_and_stored(image_server, connect_client):
    """"draw a red bicycle" gets an acknowledging reply announcing image.started, then a progress per step, image.done; history and /attachments hold the PNG."""
    async with connect_client(image_server) as client:
        started = await client.start()
        assert started["capabilities"]["image_generator"].startswith("diffusers:")
        reply = await client.say("draw a red bicycle")
        types = [e["type"] for e in reply]
        assert types[:4] == ["turn.created", "response.created", "response.text.delta", "image.started"], types
        assert set(types[4:-1]) <= {"image.progress"} and types[-1] == "response.done", "the job is announced inside the reply"
        assert reply[-1]["status"] == "completed" and "a red bicycle" in reply[-1]["text"]
        rest = await client.recv_until("image.done")
        events = reply[3:-1] + rest
        assert events[0]["type"] == "image.started" and events[0]["prompt"] == "a red bicycle"
        assert events[0]["width"] == events[0]["height"] == 64 and events[0]["steps"] == 4
        progress = [e for e in events if e["type"] == "image.progress"]
        assert [(p["step"], p["total"]) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
        done = events[-1]
        assert done["status"] == "completed" and done["mime"] == "image/png" and done["seed"] == events[0]["seed"]
        png = base64.b64decode(done["data"])
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        seqs = [e["seq"] for e in [*reply, *rest]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert [(t["role"], t["status"]) for t in turns] == [("user", "completed"), ("assistant", "completed"), ("assistant", "completed")]
        image_part = turns[2]["content"][0]
        assert image_part["type"] == "image" and image_part["sha256"] == done["sha256"] and turns[2]["reply_to"] == turns[0]["turn_id"]
    status, body, mime = await asyncio.to_thread(fetch, image_server, image_part["url"])
    assert (status, mime) == (200, "image/png") and body == png


async def test_image_generate_event_with_parameters_is_deterministic(image_server, connect_client):
    """image.generate honours steps, size and seed; the same seed gives identical bytes; its prompt is stored apart from dialogue text."""
    async with connect_client(image_server) as client:
        await client.start()
        results = []
        for _ in range(2):
            await client.send({"type": "image.generate", "prompt": "a cat", "steps": 3, "seed": 11, "width": 48, "height": 64})
            events = await client.recv_until("image.done")
            assert sum(e["type"] == "image.progress" for e in events) == 3
            assert events[-1]["status"] == "completed" and events[-1]["seed"] == 11
            results.append(events[-1]["data"])
        assert results[0] == results[1]
        assert Image.open(io.BytesIO(base64.b64decode(results[0]))).size == (48, 64)
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert turns[0]["content"] == [{"type": "image_request", "text": "a cat"}]
        assert turns[1]["content"][0]["sha256"] == turns[3]["content"][0]["sha256"]  # stored once, by sha256


async def test_a_text_turn_during_a_long_job_is_answered_before_the_job_ends(start_server, connect_client, tmp_path, tiny_sd):
    """While an image job paints, a text turn on the same connection completes first."""
    server = await start_server(image_config(tmp_path, tiny_sd, default_steps=60), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "image.generate", "prompt": "a long painting"})
        await client.recv_until("image.progress")
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "are you there?"}]})
        events = await client.recv_until("image.done", timeout=120)
        types = [e["type"] for e in events]
        assert "response.done" in types and types.index("response.done") < types.index("image.done")
        assert events[-1]["status"] == "completed"


async def test_image_cancel_stops_at_the_next_step_and_is_stored_cancelled(start_server, connect_client, tmp_path, tiny_sd):
    """image.cancel after the first progress ends the job as cancelled well before its last step; no image is stored."""
    server = await start_server(image_config(tmp_path, tiny_sd, default_steps=50), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "image.generate", "prompt": "x"})
        started = (await client.recv_until("image.started"))[-1]
        await client.recv_until("image.progress")
        await client.send({"type": "image.cancel", "job_id": started["job_id"]})
        events = await client.recv_until("image.done")
        done = events[-1]
        assert done["status"] == "cancelled" and "data" not in done
        assert max([e["step"] for e in events if e["type"] == "image.progress"] or [1]) < 50
        await client.send({"type": "conversation.get"})
        job_turn = (await client.recv_until("conversation.history"))[-1]["turns"][-1]
        assert job_turn["status"] == "cancelled" and job_turn["content"] == []


async def test_a_client_that_disconnects_cancels_its_own_jobs(start_server, connect_client, tmp_path, tiny_sd):
    """Closing the socket mid-job cancels the job; the store records it as cancelled."""
    server = await start_server(image_config(tmp_path, tiny_sd, default_steps=200), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        conversation_id = (await client.start())["conversation_id"]
        await client.send({"type": "image.generate", "prompt": "x"})
        await client.recv_until("image.progress")
    for _ in range(200):
        turns = await server.app.store.history(conversation_id)
        if turns[-1].status != "in_progress":
            break
        await asyncio.sleep(0.05)
    assert turns[-1].status == "cancelled" and not server.app.image_jobs


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"steps": 0}, "steps"), ({"width": 60}, "width"), ({"width": 10000}, "width"), ({"prompt": ""}, "prompt must not be empty")],
)
async def test_bad_image_parameters_answer_bad_request(image_server, connect_client, fields, needle):
    """0 steps, a width not a multiple of 8, 10000 px and an empty prompt each answer bad_request; nothing starts."""
    async with connect_client(image_server) as client:
        await client.start()
        await client.send({"type": "image.generate", "event_id": "g", "prompt": "x", **fields})
        error = await client.recv()
        assert (error["type"], error["code"], error["ref"]) == ("error", "bad_request", "g") and needle in error["message"]
        assert not image_server.app.image_jobs


async def test_too_many_jobs_on_one_connection_are_rate_limited(start_server, connect_client, tmp_path, tiny_sd):
    """Past [images] max_jobs_per_connection, image.generate answers rate_limited."""
    config = make_config(
        tmp_path, engines={"dialogue": "fake", "image_generator": "diffusers"}, images={"max_jobs_per_connection": 1},
        plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 100, "max_steps": 1000}},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "image.generate", "prompt": "one"})
        started = (await client.recv_until("image.started"))[-1]
        await client.send({"type": "image.generate", "event_id": "two", "prompt": "two"})
        error = (await client.recv_until("error"))[-1]
        assert error["code"] == "rate_limited" and error["ref"] == "two"
        await client.send({"type": "image.cancel", "job_id": started["job_id"]})
        assert (await client.recv_until("image.done"))[-1]["status"] == "cancelled"


async def test_shutdown_cancels_a_running_job_and_stores_it(start_server, connect_client, tmp_path, tiny_sd):
    """A job still painting past the grace period ends cancelled, told and stored."""
    server = await start_server(image_config(tmp_path, tiny_sd, default_steps=500), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        conversation_id = (await client.start())["conversation_id"]
        await client.send({"type": "image.generate", "prompt": "x"})
        await client.recv_until("image.progress")
        store = server.app.store.store
        shutting = asyncio.create_task(server.shutdown(grace_s=0.1))
        done = (await client.recv_until("image.done"))[-1]
        await shutting
    assert done["status"] == "cancelled"
    from assistant.store import Store

    reopened = Store(str(store.engine.url))
    assert reopened.history(conversation_id)[-1].status == "cancelled"
    reopened.close()


async def test_without_a_generator_drawing_requests_go_to_the_dialogue_engine(server, connect_client):
    """With no image generator configured, "draw a cat" is an ordinary turn and image.generate says how to configure one."""
    async with connect_client(server) as client:
        started = await client.start()
        assert started["capabilities"]["image_generator"] is None
        assert (await client.say("draw a cat"))[-1]["text"] == "You said: draw a cat"
        await client.send({"type": "image.generate", "prompt": "a cat"})
        error = await client.recv()
        assert error["code"] == "unavailable" and "[plugins.diffusers_image] model" in error["message"]


async def test_attachments_endpoint_rejects_bad_and_unknown_names(server):
    """/attachments/ answers 400 for a name that is not a sha256 and 404 for an unknown one."""
    status, _, _ = await asyncio.to_thread(fetch, server, "/attachments/not-a-hash")
    assert status == 400
    status, _, _ = await asyncio.to_thread(fetch, server, "/attachments/" + "0" * 64)
    assert status == 404


async def test_progress_carries_previews_when_a_cheap_decoder_is_configured(start_server, connect_client, tmp_path, tiny_sd, tiny_taesd):
    """With preview_decoder and preview_every=2, image.progress for steps 2 and 4 of 5 carries a base64 PNG."""
    config = image_config(tmp_path, tiny_sd, preview_decoder=str(tiny_taesd), preview_every=2)
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "image.generate", "prompt": "x", "steps": 5})
        events = await client.recv_until("image.done")
    previews = {e["step"]: e.get("preview") for e in events if e["type"] == "image.progress"}
    assert [step for step, preview in previews.items() if preview] == [2, 4]
    assert Image.open(io.BytesIO(base64.b64decode(previews[2]))).format == "PNG"
