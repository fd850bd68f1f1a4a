"""Dialects on the one ASGI app: `[server] dialects`, route wiring, handshake refusals and shutdown of the native wire."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from assistant.app import App
from assistant.auth import TokenFile
from assistant.cli import main
from assistant.config import ConfigError
from assistant.dialects import Dialect, build_dialects
from assistant.dialects.native import NativeDialect
from assistant.server import AssistantServer, serve_app
from tests.conftest import Client, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue
from tests.processes import write_config


def http(port: int, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of one plain HTTP request (errors included)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


async def handshake_status(port: int, path: str = "/ws", **headers: str) -> int:
    """The HTTP status refusing a websocket handshake (101 if it was accepted)."""
    try:
        async with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_an_unknown_dialect_is_refused_naming_the_known_ones(tmp_path):
    """`[server] dialects` with an unknown name fails at startup, before any engine loads, naming the known dialects."""
    config = make_config(tmp_path, server={"dialects": ["native", "gopher"]})
    with pytest.raises(ConfigError, match=r"unknown dialect\(s\) 'gopher' \(known: native, "):
        await serve_app(config, (FakeEnginesPlugin(ScriptedDialogue()),))
    assert [d.name for d in build_dialects(["native", "native"])] == ["native"]


def test_the_serve_command_exits_2_on_an_unknown_dialect(tmp_path, capsys):
    """`assistant serve` with an unknown dialect prints the config error and exits 2, without a traceback."""
    config = write_config(tmp_path, server='dialects = ["gopher"]\n')
    assert main(["serve", "--config", config]) == 2
    assert "[server] dialects: unknown dialect(s) 'gopher' (known: native, openai_realtime, ollama, wyoming)" in capsys.readouterr().err


async def test_with_no_dialects_ws_is_not_found_and_healthz_works(start_server, tmp_path):
    """With `dialects = []` the websocket and a GET on /ws answer 404, while /healthz and /metrics still answer."""
    server = await start_server(make_config(tmp_path, server={"dialects": []}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert await handshake_status(server.port) == 404
    status, body, _ = await asyncio.to_thread(http, server.port, "/ws")
    assert status == 404 and b"not found" in body
    assert (await asyncio.to_thread(http, server.port, "/healthz"))[:2] == (200, b"ok\n")
    assert (await asyncio.to_thread(http, server.port, "/metrics"))[0] == 200


async def test_http_answers_of_the_default_routes(server):
    """A plain GET on /ws answers 426, other methods 405 with Allow, an unknown path 404 over HTTP and as a websocket."""
    status, body, headers = await asyncio.to_thread(http, server.port, "/ws")
    assert status == 426 and b"websocket" in body and headers["upgrade"] == "websocket"
    status, _, headers = await asyncio.to_thread(http, server.port, "/healthz", "POST")
    assert status == 405 and set(headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert (await asyncio.to_thread(http, server.port, "/healthz", "HEAD"))[:2] == (200, b"")
    assert (await asyncio.to_thread(http, server.port, "/attachments/not-a-hash"))[0] == 400
    assert await handshake_status(server.port, "/nope") == 404
    assert await handshake_status(server.port, "/healthz") == 404


class Hello(Dialect):
    """A toy wire: GET /hello, and a record of its start and stop hooks."""

    name = "hello"

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []  # (hook, was the server ready)
        self.server = None

    def routes(self, server):
        self.server = server

        async def hello(request):
            return PlainTextResponse(f"hello from {self.name}\n")

        return [Route("/hello", hello, methods=["GET"])]

    async def start(self, server):
        self.calls.append(("start", server.ready))

    async def stop(self):
        self.calls.append(("stop", self.server.ready))


async def test_a_dialect_serves_its_routes_beside_the_others_and_is_started_and_stopped(tmp_path):
    """Each dialect's routes are served on the one port; `start` runs once listening, `stop` once shutdown has begun."""
    app = await App.start(make_config(tmp_path), (FakeEnginesPlugin(ScriptedDialogue()),))
    hello = Hello()
    server = AssistantServer(app, [NativeDialect(), hello])
    await server.start()
    try:
        assert (await asyncio.to_thread(http, server.port, "/hello"))[:2] == (200, b"hello from hello\n")
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            assert (await Client(ws).start())["type"] == "session.started"
    finally:
        await server.shutdown(grace_s=0)
    assert hello.calls == [("start", True), ("stop", False)]


async def test_refused_handshakes_log_no_error(start_server, tmp_path, caplog):
    """A handshake refused with a status (401 bad token, 403 origin, 404 path) is answered without an ERROR log."""
    _, token = TokenFile(tmp_path / "data" / "tokens.json").create("ops")
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    with caplog.at_level(logging.INFO):
        assert await handshake_status(server.port, Authorization="Bearer ast_wrong") == 401
        assert await handshake_status(server.port, Origin="https://evil.example") == 403
        assert await handshake_status(server.port, "/nope") == 404
        assert await handshake_status(server.port, Authorization=f"Bearer {token}") == 101
        await asyncio.sleep(0.2)  # uvicorn would log after the response went out
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_shutdown_closes_open_sessions_with_going_away(start_server):
    """An open session sees a normal close (1001 going away) when the server shuts down; new handshakes are refused."""
    server = await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    port = server.port
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        client = Client(ws)
        await client.start()
        await server.shutdown(grace_s=0)
        with pytest.raises(ConnectionClosedOK) as closed:
            await client.recv(timeout=5)
    assert closed.value.rcvd.code == 1001
    with pytest.raises(OSError):
        await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5)


async def test_compression_is_negotiated_unless_turned_off(start_server, tmp_path):
    """permessage-deflate is agreed with a client that offers it, and not when [server] compression is false."""
    agreed = []
    for compression in (True, False):
        config = make_config(tmp_path / str(compression), server={"compression": compression})
        server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:  # the websockets client offers it by default
            agreed.append("permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or ""))
            client = Client(ws)
            assert (await client.start())["type"] == "session.started"
            assert (await client.say("hi"))[-1]["status"] == "completed"
    assert agreed == [True, False]
