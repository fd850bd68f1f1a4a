"""Many sessions on one machine: idle sessions cost little, active ones share one copy of the model."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import psutil
import pytest

from tests.conftest import make_config


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.offline_model
async def test_idle_sessions_are_cheap_and_active_ones_share_one_model(start_server, connect_client, tmp_path):
    """RSS with 50 idle sessions stays within 100 MB of one session; 8 concurrent replies add far less than a model copy."""
    config = make_config(
        tmp_path, engines={"dialogue": "transformers"}, plugins={"deny": ["rapid_ocr"], "transformers_dialogue": {"max_new_tokens": 32}},
        limits={"sessions_per_principal": 100},
    )
    server = await start_server(config)
    engine = server.app.engines["dialogue"]
    weights_mb = sum(p.numel() * p.element_size() for p in engine.model.parameters()) / 2**20
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect_client(server))]
        await clients[0].start()
        await clients[0].say("Hi")  # everything lazily allocated is allocated
        one = rss_mb()
        for _ in range(49):
            client = await stack.enter_async_context(connect_client(server))
            await client.start()
            clients.append(client)
        fifty = rss_mb()
        peak = fifty

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        replies = await asyncio.gather(*(client.say(f"Tell me about the number {i}.") for i, client in enumerate(clients[:8])))
        sampler.cancel()
    print(f"\nRSS: 1 session {one:.0f} MB, 50 idle sessions {fifty:.0f} MB (+{fifty - one:.1f}), "
          f"peak with 8 replies {peak:.0f} MB (+{peak - fifty:.1f}); model weights {weights_mb:.0f} MB; "
          f"largest decode batch {max(engine.batch_sizes)}")
    assert all(r[-1]["status"] == "completed" for r in replies)
    assert fifty - one <= 100
    assert peak - fifty < weights_mb / 2, "a second copy of the model would add its weights"
    assert max(engine.batch_sizes) >= 4, "the replies decoded together"


def test_latency_gate_pauses_lower_classes_only_while_higher_ones_run():
    """Image steps wait while ASR runs; dialogue and encoder (one class) never wait for each other; cancel releases."""
    import time

    from assistant.scheduler import LatencyGate

    gate = LatencyGate({"asr": 0, "dialogue": 1, "image_encoder": 1, "image_generator": 2})
    gate.running("image_encoder")
    began = time.monotonic()
    gate.pause_for_higher("dialogue")
    assert time.monotonic() - began < 0.05, "same class: no waiting"
    gate.finished("image_encoder")
    gate.running("asr")
    threading.Timer(0.3, gate.finished, args=("asr",)).start()
    began = time.monotonic()
    gate.pause_for_higher("image_generator")
    assert time.monotonic() - began >= 0.25, "waited for ASR to finish"
    gate.running("asr")  # and it never finishes
    cancelled = threading.Event()
    threading.Timer(0.1, cancelled.set).start()
    began = time.monotonic()
    gate.pause_for_higher("image_generator", cancelled)
    assert 0.05 <= time.monotonic() - began < 1.0, "a cancel ends the pause"


@pytest.mark.parametrize("classes, paints_during_reply", [
    ({"dialogue": 1, "image_generator": 2}, False),
    ({"dialogue": 1, "image_generator": 1}, True),
], ids=["dialogue-first", "one-class"])
async def test_an_image_job_pauses_while_a_reply_streams(start_server, connect_client, tmp_path, tiny_sd, classes, paints_during_reply):
    """With dialogue in a higher class, no denoising step is reported while the reply streams; in one class they interleave."""
    from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

    painted = threading.Event()

    def words(request):
        for i in range(30):
            yield f"w{i} "
            if i == 5 and paints_during_reply:  # one class: the reply waits (at most 30 s) until a step is painted
                painted.wait(30)

    engine = ScriptedDialogue(script=words, delay_s=0.05)
    config = make_config(
        tmp_path, engines={"dialogue": "fake", "image_generator": "diffusers"}, scheduler={"latency_classes": classes},
        plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 8}},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "talk"}]})
        await client.recv_until("response.text.delta")
        await client.send({"type": "image.generate", "prompt": "a cat", "steps": 8})
        events = [await client.recv()]
        while not {"image.done", "response.done"} <= {e["type"] for e in events}:
            if events[-1]["type"] == "image.progress":
                painted.set()
            events.append(await client.recv())
    types = [e["type"] for e in events]
    last_delta = len(types) - 1 - types[::-1].index("response.text.delta")
    progress_during_reply = types[:last_delta].count("image.progress")
    assert (progress_during_reply > 0) is paints_during_reply, types
    assert types.count("image.progress") == 8


async def test_a_relay_hands_over_what_piled_up_in_one_batch_and_keeps_the_order():
    """Items an engine pushes while the consumer is busy arrive together, all of them, in order, with one wake-up per burst."""
    from assistant.scheduler import Relay

    relay: Relay[int] = Relay()
    loop = asyncio.get_running_loop()
    started = threading.Event()

    def engine() -> str:
        started.set()
        for i in range(2000):
            relay.push(i)
        return "done"

    future = loop.run_in_executor(None, engine)
    batches = []
    async for batch in relay.batches(future, idle_timeout_s=30):
        batches.append(batch)
        await asyncio.sleep(0.01)  # a slow consumer: a busy socket
    assert [item for batch in batches for item in batch] == list(range(2000))
    assert all(batches) and len(batches) < 200
    assert await future == "done"
    single: Relay[int] = Relay()
    future = loop.run_in_executor(None, lambda: [single.push(i) for i in range(50)])
    assert [item async for item in single.until(future, 30)] == list(range(50))


async def test_a_relay_gives_up_on_an_engine_that_stops_pushing_but_not_on_a_slow_consumer():
    """NoProgress counts the consumer's time waiting for items, not its time between looks."""
    from assistant.scheduler import NoProgress, Relay

    loop = asyncio.get_running_loop()
    hung: Relay[int] = Relay()
    release = threading.Event()

    def stuck() -> str:
        hung.push(1)
        release.wait(10)
        return "done"

    future = loop.run_in_executor(None, stuck)
    got: list[int] = []
    began = loop.time()
    with pytest.raises(NoProgress):
        async for batch in hung.batches(future, idle_timeout_s=0.2):
            got += batch
    assert got == [1] and loop.time() - began >= 0.2
    release.set()
    assert await future == "done"

    slow: Relay[int] = Relay()

    def pausing() -> str:
        slow.push(1)
        time.sleep(0.4)  # longer than the timeout, but the consumer waits for only the last 0.1 s of it
        slow.push(2)
        return "done"

    future = loop.run_in_executor(None, pausing)
    got = []
    async for batch in slow.batches(future, idle_timeout_s=0.25):
        got += batch
        await asyncio.sleep(0.3)  # a consumer busier than the timeout between looks
    assert got == [1, 2] and await future == "done"
