"""[limits]: turns per minute and sessions per principal, idle connections, bytes per turn."""

from __future__ import annotations

import asyncio

from websockets.exceptions import ConnectionClosed

from assistant.limits import SessionCount, TurnRate
from tests import images
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


def test_turn_rate_is_a_sliding_minute_per_principal():
    """Three turns a minute: the fourth waits until the first leaves the window; principals count apart."""
    rate = TurnRate(3)
    assert [rate.take("a", now=t) for t in (0, 1, 2)] == [None, None, None]
    assert rate.take("a", now=30) == 30 and rate.take("b", now=30) is None
    assert rate.take("a", now=60.5) is None
    rate.forget_idle(now=500)
    assert rate._starts == {}


def test_session_count_is_per_principal():
    """Two sessions each, three in all; leaving frees a place."""
    count = SessionCount(2, max_total=3)
    assert count.enter("a") is None and count.enter("a") is None and "2 sessions" in (count.enter("a") or "")
    assert count.enter("b") is None and "3 sessions" in (count.enter("c") or "")
    count.leave("a")
    assert count.enter("a") is None and count["a"] == 2 and count.total == 3


async def test_turns_past_the_minute_allowance_are_rate_limited(start_server, connect_client, tmp_path):
    """With 3 turns a minute, the 4th answers rate_limited; the connection stays usable."""
    server = await start_server(make_config(tmp_path, limits={"turns_per_minute": 3}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        for i in range(3):
            await client.say(f"turn {i}")
        await client.send({"type": "turn.create", "event_id": "4", "content": [{"type": "text", "text": "one more"}]})
        error = await client.recv()
        assert error["code"] == "rate_limited" and "3 turns per minute" in error["message"] and error["ref"] == "4"
        await client.send({"type": "conversation.get"})
        assert len((await client.recv_until("conversation.history"))[-1]["turns"]) == 6


async def test_sessions_past_the_per_principal_limit_are_refused_and_closed(start_server, connect_client, tmp_path):
    """With 2 sessions per principal, a third answers rate_limited and is closed (1013); when one leaves, a new one may start."""
    server = await start_server(make_config(tmp_path, limits={"sessions_per_principal": 2}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as one, connect_client(server) as two:
        await one.start()
        await two.start()
        async with connect_client(server) as three:
            await three.send({"type": "session.start", "event_id": "s"})
            error = await three.recv()
            assert error["code"] == "rate_limited" and error["ref"] == "s"
            try:
                await three.recv(timeout=5)
                raise AssertionError("the connection should have been closed")
            except ConnectionClosed as closed:
                assert closed.rcvd.code == 1013
        await one.ws.close()
        await asyncio.sleep(0.2)
        async with connect_client(server) as four:
            assert (await four.start())["type"] == "session.started"


async def test_an_idle_connection_is_closed_but_not_one_waiting_for_its_reply(start_server, connect_client, tmp_path):
    """Silent past idle_timeout_s: closed with 1000 'idle timeout'; a connection whose reply is still streaming stays."""
    engine = ScriptedDialogue(script=lambda request: [f"w{i} " for i in range(12)], delay_s=0.1)
    server = await start_server(make_config(tmp_path, limits={"idle_timeout_s": 0.5}), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as busy, connect_client(server) as idle:
        await busy.start()
        await idle.start()
        events = await busy.say("count slowly")  # 1.2 s of streaming, longer than the idle timeout
        assert events[-1]["status"] == "completed"
        try:
            await idle.recv(timeout=5)
            raise AssertionError("the idle connection should have been closed")
        except ConnectionClosed as closed:
            assert closed.rcvd.code == 1000 and closed.rcvd.reason == "idle timeout"


async def test_a_turn_past_max_turn_bytes_is_too_large(start_server, connect_client, tmp_path):
    """Two images that together pass [limits] max_turn_bytes answer too_large before anything is decoded or stored."""
    server = await start_server(make_config(tmp_path, limits={"max_turn_bytes": 4096}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    noisy = images.encode(images.Image.effect_noise((32, 32), 60).convert("RGB"))
    assert 2048 < len(noisy) < 4096
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [images.image_part(noisy), images.image_part(noisy)]})
        error = await client.recv()
        assert error["code"] == "too_large" and "max_turn_bytes" in error["message"]
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []


async def test_a_full_engine_queue_answers_rate_limited_and_stores_nothing(start_server, connect_client, tmp_path):
    """With [scheduler] max_queued = 2 and the engine held, a third concurrent turn is refused; the first two complete."""
    import threading

    gate = threading.Event()
    engine = ScriptedDialogue(gate=gate)
    server = await start_server(make_config(tmp_path, scheduler={"max_queued": 2}), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as a, connect_client(server) as b, connect_client(server) as c:
        for client in (a, b, c):
            await client.start()
        for client in (a, b):
            await client.send({"type": "turn.create", "content": [{"type": "text", "text": "wait"}]})
            await client.recv_until("response.created")
        await c.send({"type": "turn.create", "event_id": "third", "content": [{"type": "text", "text": "me too"}]})
        error = await c.recv()
        assert error["code"] == "rate_limited" and "2 requests waiting or running" in error["message"] and error["ref"] == "third"
        gate.set()
        for client in (a, b):
            assert (await client.recv_until("response.done"))[-1]["status"] == "completed"
        await c.send({"type": "conversation.get"})
        assert (await c.recv_until("conversation.history"))[-1]["turns"] == [], "the refused turn was not stored"
        assert (await c.say("now"))[-1]["status"] == "completed"
