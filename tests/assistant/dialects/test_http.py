"""The rules every HTTP dialect applies to a request: tokens, readiness, per-principal places and rates, bounded bodies."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assistant.app import App
from assistant.dialects.http import HTTP_STATUS, read_json, request_principal, request_slot
from assistant.errors import AssistantError
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


@dataclass
class Server:
    app: App
    ready: bool = True


async def client_for(tmp_path, **limits):
    """An ASGI app with one route that applies the helpers, on a real App, and an httpx client for it."""
    app = await App.start(make_config(tmp_path, limits=limits), [FakeEnginesPlugin(ScriptedDialogue())])
    server = Server(app)

    async def echo(request: Request) -> JSONResponse:
        try:
            principal = await request_principal(server, request)
            async with request_slot(server, request, principal):
                body = await read_json(request, 1000)
                return JSONResponse({"principal": principal, "body": body})
        except AssistantError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=HTTP_STATUS[exc.code])

    asgi = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    return server, httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://127.0.0.1")


async def test_requests_pass_the_native_rules(tmp_path):
    """Auth off: principal `local`; malformed and oversize JSON, a full rate and a server not ready are refused with their codes."""
    server, client = await client_for(tmp_path, turns_per_minute=2)
    async with client:
        ok = await client.post("/echo", json={"a": 1})
        assert ok.status_code == 200 and ok.json() == {"principal": "local", "body": {"a": 1}}
        broken = await client.post("/echo", content=b'{"a": ', headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["message"]
        limited = await client.post("/echo", json={})
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        server.ready = False
        assert (await client.post("/echo", json={})).status_code == 503
        assert server.app.sessions[server.app.session_key("local", "127.0.0.1")] == 0  # every place given back
    await server.app.stop()


async def test_a_body_past_the_limit_is_refused_before_it_is_read(tmp_path):
    """A declared or streamed body over the limit is too_large (413)."""
    server, client = await client_for(tmp_path)
    async with client:
        big = await client.post("/echo", json={"a": "x" * 2000})
        assert big.status_code == 413 and big.json()["code"] == "too_large"

        async def chunks():
            for _ in range(10):
                yield b"x" * 200

        streamed = await client.post("/echo", content=chunks())
        assert streamed.status_code == 413
    await server.app.stop()


async def test_tokens_are_required_when_auth_is_on(tmp_path):
    """With tokens configured, no token or a wrong one is 401; a valid one names its principal."""
    from assistant.auth import TokenFile

    token = TokenFile(tmp_path / "data" / "tokens.json").create("alice")[1]
    server, client = await client_for(tmp_path)
    async with client:
        assert (await client.post("/echo", json={})).status_code == 401
        assert (await client.post("/echo", json={}, headers={"authorization": "Bearer nope"})).status_code == 401
        ok = await client.post("/echo", json={}, headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["principal"] == "alice"
    await server.app.stop()
