"""Many sessions on one machine: idle sessions cost little, active ones share one copy of the model."""

from __future__ import annotations

import asyncio
import contextlib

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
