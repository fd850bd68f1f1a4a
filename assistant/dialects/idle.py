"""Hanging up on a websocket that has gone idle, with one timer per connection rather than one per frame.

A read loop that wraps every `receive` in `asyncio.timeout(idle)` pays for a timeout object and a
timer handle on every frame, only to cancel both a few microseconds later. `IdleWatch` keeps one
timer that looks at how long the current `receive` has been waiting; when that reaches the idle
limit and the session has nothing in flight, it expires the `asyncio.timeout(None)` the read loop
runs in, so that loop ends with TimeoutError as it did before. A session with a reply or a job
still running is never hung up on: its wait starts over. `serve_frames` is that read loop, for every
websocket dialect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from starlette.websockets import WebSocket


class IdleWatch:
    """Expires `deadline` once a `receive` has waited `idle_s` while `busy()` is false.

    Use inside `async with asyncio.timeout(None) as deadline:`; receive through `receive`; the
    TimeoutError the block then raises means idle (`deadline.expired()`)."""

    def __init__(self, deadline: asyncio.Timeout, idle_s: float, busy: Callable[[], bool]) -> None:
        self._deadline = deadline
        self._idle_s = idle_s
        self._busy = busy
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None  # when the current receive began; None while a frame is handled
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> IdleWatch:
        self._timer = self._loop.call_at(self._loop.time() + self._idle_s, self._look)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def receive(self, ws: WebSocket) -> Any:
        """`ws.receive()`, timed as a wait for the client."""
        self._waiting_since = self._loop.time()
        try:
            return await ws.receive()
        finally:
            self._waiting_since = None

    def _look(self) -> None:
        now = self._loop.time()
        since = self._waiting_since
        if since is not None and now - since >= self._idle_s:
            if not self._busy():
                self._deadline.reschedule(now)  # cancels the receive: the read loop's block raises TimeoutError
                return
            self._waiting_since = since = now  # a long reply or picture is no reason to hang up: wait a full period again
        self._timer = self._loop.call_at((since if since is not None else now) + self._idle_s, self._look)


async def serve_frames(ws: WebSocket, idle_s: float, busy: Callable[[], bool], on_frame: Callable[[str | bytes], Awaitable[bool]]) -> None:
    """Hand each frame of `ws` (its text, or its bytes) to `on_frame` until the client leaves, `on_frame` returns False
    (it has closed the connection), or the connection goes idle: waits of `idle_s` while not `busy()`, then closed
    with 1000 "idle timeout"."""
    deadline = asyncio.timeout(None)
    try:
        async with deadline:
            with IdleWatch(deadline, idle_s, busy) as watch:
                while True:
                    message = await watch.receive(ws)
                    if message["type"] == "websocket.disconnect":
                        return
                    text = message.get("text")
                    if not await on_frame(text if text is not None else message["bytes"]):
                        return
    except TimeoutError:
        if not deadline.expired():
            raise
        await ws.close(1000, "idle timeout")
