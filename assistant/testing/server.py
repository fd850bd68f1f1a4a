"""A real server on port 0 with the plugins you choose, and a websocket client that speaks JSON events.

    async with running_server(tmp_path, [my_plugin], engines={"dialogue": "reverse"}) as server:
        async with connect(server) as client:
            await client.start()
            events = await client.say("hello")
            assert events[-1]["type"] == "response.done"

`server_config` writes the database under a folder of the test's own and turns off what a plugin test
does not need (ASR, speech out); every keyword is a config table merged over those defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.config import Config

if TYPE_CHECKING:
    from assistant.server import AssistantServer


def server_config(folder: Path, **tables: dict[str, Any]) -> Config:
    """A config listening on 127.0.0.1 port 0, its database in `folder`, no ASR, no speech out; `tables` merged in.

    `server_config(tmp_path, engines={"dialogue": "reverse"}, plugins={"reverse": {"separator": "-"}})`.
    """
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 5},
        "store": {"url": f"sqlite:///{Path(folder) / 'assistant.db'}"},
        "engines": {"asr": "", "speech_synthesizer": ""},
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    return Config.from_dict(data, base_dir=Path(folder))




async def start_server(config: Config, plugins: Iterable[Any] = ()) -> AssistantServer:
    """Start an app and its server for `config`, with `plugins` registered besides the installed ones.

    A plugin is a module or object with hook implementations, or a `(name, plugin)` pair to register it
    under the name its entry point gives it (its `[plugins.<name>]` table). A plugin that an installed
    package's entry point already loaded is not registered twice. Shut it down with `server.shutdown()`.
    """
    from assistant.server import serve_app

    return await serve_app(config, plugins)


@contextlib.asynccontextmanager
async def running_server(folder: Path, plugins: Iterable[Any] = (), /, **tables: dict[str, Any]) -> AsyncIterator[AssistantServer]:
    """`start_server(server_config(folder, **tables), plugins)`, shut down (grace 0) when the block ends."""
    server = await start_server(server_config(folder, **tables), plugins)
    try:
        yield server
    finally:
        await server.shutdown(grace_s=0)


class Client:
    """A websockets client that speaks the native protocol's JSON events."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        """Send an event (a dict as JSON; str and bytes as they are)."""
        await self.ws.send(event if isinstance(event, (str, bytes)) else json.dumps(event))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        """The next event."""
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv_until(self, event_type: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Events up to and including the first of `event_type`; an `error` on the way raises AssertionError."""
        events = []
        while True:
            event = await self.recv(timeout)
            events.append(event)
            if event["type"] == event_type:
                return events
            assert event["type"] != "error", f"unexpected error while waiting for {event_type}: {event}"

    async def start(self, conversation_id: str | None = None) -> dict[str, Any]:
        """Start (or resume) a session; the `session.started` event."""
        event: dict[str, Any] = {"type": "session.start"}
        if conversation_id:
            event["conversation_id"] = conversation_id
        await self.send(event)
        return (await self.recv_until("session.started"))[-1]

    async def say(self, text: str, **extra: Any) -> list[dict[str, Any]]:
        """Send a text turn; its events up to response.done."""
        return await self.say_parts([{"type": "text", "text": text}], **extra)

    async def say_parts(self, parts: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
        """Send a turn made of `parts` (see `assistant.testing.media`); its events up to response.done."""
        await self.send({"type": "turn.create", "content": parts, **extra})
        return await self.recv_until("response.done")


@contextlib.asynccontextmanager
async def connect(server: AssistantServer, path: str = "/ws", **kwargs: Any) -> AsyncIterator[Client]:
    """A Client connected to the server's native websocket; `kwargs` go to `websockets.connect`."""
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(f"ws://127.0.0.1:{server.port}{path}", **kwargs) as ws:
        yield Client(ws)
