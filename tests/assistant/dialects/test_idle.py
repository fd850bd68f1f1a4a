"""IdleWatch: one timer per connection that ends a read loop idle past its limit, unless the session is busy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assistant.dialects.idle import IdleWatch


class Frames:
    """What a read loop receives from: frames put by the test, as a websocket's `receive` hands them over."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.queue.get()


async def read_until_idle(frames: Frames, idle_s: float, busy: Any = lambda: False) -> tuple[list[Any], bool, float]:
    """Run a read loop as the dialects do: the frames it got, whether it ended idle, and after how long."""
    loop = asyncio.get_running_loop()
    began, got = loop.time(), []
    deadline = asyncio.timeout(None)
    try:
        async with deadline:
            with IdleWatch(deadline, idle_s, busy) as watch:
                while True:
                    message = await watch.receive(frames)  # type: ignore[arg-type]
                    if message["type"] == "websocket.disconnect":
                        return got, False, loop.time() - began
                    got.append(message["text"])
                    await asyncio.sleep(idle_s * 0.8)  # handling a frame is not waiting for the client
    except TimeoutError:
        assert deadline.expired()
        return got, True, loop.time() - began


async def test_a_silent_connection_ends_idle_after_its_limit():
    got, idle, took = await read_until_idle(Frames(), 0.2)
    assert (got, idle) == ([], True) and 0.2 <= took < 2


async def test_frames_keep_it_open_and_only_the_wait_counts():
    """Frames every 0.6 s with 0.4 s of handling each: waits of about 0.2 s never reach the 0.5 s limit, though 0.6 s pass between frames."""
    frames = Frames()

    async def client() -> None:
        for i in range(5):
            frames.queue.put_nowait({"type": "websocket.receive", "text": str(i)})
            await asyncio.sleep(0.6)
        frames.queue.put_nowait({"type": "websocket.disconnect"})

    sender = asyncio.create_task(client())
    got, idle, _ = await read_until_idle(frames, 0.5)
    await sender
    assert (got, idle) == (["0", "1", "2", "3", "4"], False)


async def test_a_busy_session_is_not_hung_up_on_and_waits_a_full_period_after():
    loop = asyncio.get_running_loop()
    busy_until = loop.time() + 0.5
    got, idle, took = await read_until_idle(Frames(), 0.2, busy=lambda: loop.time() < busy_until)
    assert (got, idle) == ([], True) and took >= 0.6  # busy at 0.2 and 0.4, then idle 0.2 s after the last look


async def test_an_error_of_the_loop_is_not_taken_for_idle():
    deadline = asyncio.timeout(None)
    with pytest.raises(TimeoutError):
        async with deadline:
            with IdleWatch(deadline, 30, lambda: False):
                raise TimeoutError("from a frame's handling")
    assert not deadline.expired()
