"""Who may connect: tokens (hashed, revocable), principals owning conversations, Origin checks, loopback by default."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from assistant.auth import TokenFile, token_hash
from assistant.cli import main
from assistant.server import UnsafeListen
from tests import images
from tests.conftest import Client, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


@pytest.fixture
def tokens(tmp_path) -> dict[str, str]:
    """Two principals with a token each, in the config's token file."""
    file = TokenFile(tmp_path / "data" / "tokens.json")
    return {name: file.create(name)[1] for name in ("alice", "bob")}


@pytest.fixture
async def auth_server(start_server, tmp_path, tokens):
    return await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))


def ws_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def open_client(server, token: str | None = None, origin: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if origin:
        headers["Origin"] = origin
    return Client(await connect(ws_url(server), additional_headers=headers))


def test_token_file_stores_hashes_only_and_revokes(tmp_path):
    """A created token is shown once; the file holds its sha256, never the token; revoke marks it."""
    file = TokenFile(tmp_path / "tokens.json")
    record, token = file.create("carol")
    text = (tmp_path / "tokens.json").read_text()
    assert token.startswith("ast_") and token not in text and token_hash(token) in text and record.principal == "carol"
    assert oct((tmp_path / "tokens.json").stat().st_mode & 0o777) == "0o600"
    assert [r.id for r in file.revoke("carol")] == [record.id] and not file.read()[0].active
    assert file.revoke("carol") == []


async def test_refused_without_or_with_a_wrong_token_and_served_with_the_right_one(auth_server, tokens):
    """No token: session.start is unauthorized; a wrong header fails the handshake (401); the right token works, by header or in session.start."""
    client = await open_client(auth_server)
    await client.send({"type": "session.start", "event_id": "s"})
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == "unauthorized" and error["ref"] == "s"
    await client.send({"type": "turn.create", "event_id": "t", "content": [{"type": "text", "text": "hi"}]})
    assert (await client.recv())["code"] == "unauthorized"
    await client.send({"type": "session.start", "token": "ast_wrong"})
    assert (await client.recv())["code"] == "unauthorized"
    await client.send({"type": "session.start", "token": tokens["alice"]})
    started = await client.recv()
    assert started["type"] == "session.started" and started["principal"] == "alice"
    assert (await client.say("hello"))[-1]["text"] == "You said: hello"
    await client.ws.close()

    with pytest.raises(InvalidStatus) as refused:
        await open_client(auth_server, token="ast_wrong")
    assert refused.value.response.status_code == 401

    client = await open_client(auth_server, token=tokens["bob"])
    assert (await client.start())["principal"] == "bob"
    await client.ws.close()


async def test_a_revoked_token_is_refused_at_once(auth_server, tokens, tmp_path):
    """Revoking (as `assistant tokens revoke` does) stops, within a second, the open session's next event and new handshakes, with no restart."""
    client = await open_client(auth_server, token=tokens["alice"])
    await client.start()
    TokenFile(tmp_path / "data" / "tokens.json").revoke("alice")
    await asyncio.sleep(1.1)  # the server looks at the token file at most once a second
    await client.send({"type": "turn.create", "event_id": "t", "content": [{"type": "text", "text": "still me"}]})
    error = await client.recv()
    assert error["code"] == "unauthorized" and "revoked" in error["message"]
    await client.ws.close()
    with pytest.raises(InvalidStatus) as refused:
        await open_client(auth_server, token=tokens["alice"])
    assert refused.value.response.status_code == 401


async def test_another_principals_conversation_is_not_found(auth_server, tokens):
    """Bob cannot resume, read or learn of Alice's conversation: not_found, as for an id that does not exist."""
    alice = await open_client(auth_server, token=tokens["alice"])
    conversation_id = (await alice.start())["conversation_id"]
    await alice.say_parts([images.image_part(images.solid("red")), {"type": "text", "text": "my photo"}])
    bob = await open_client(auth_server, token=tokens["bob"])
    await bob.send({"type": "session.start", "conversation_id": conversation_id})
    assert (await bob.recv())["code"] == "not_found"
    await bob.start()
    await bob.send({"type": "conversation.get", "conversation_id": conversation_id})
    assert (await bob.recv())["code"] == "not_found"
    await alice.send({"type": "conversation.get"})
    assert len((await alice.recv_until("conversation.history"))[-1]["turns"]) == 2

    sha = hashlib.sha256(images.solid("red")).hexdigest()

    def fetch(token):
        request = urllib.request.Request(f"http://127.0.0.1:{auth_server.port}/attachments/{sha}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert await asyncio.to_thread(fetch, None) == 401
    assert await asyncio.to_thread(fetch, tokens["bob"]) == 404
    assert await asyncio.to_thread(fetch, tokens["alice"]) == 200
    await alice.ws.close()
    await bob.ws.close()


async def test_a_foreign_origin_is_refused_and_the_own_origin_allowed(start_server, tmp_path):
    """A page on another site cannot open the websocket (403); the server's own origin and listed ones can."""
    server = await start_server(make_config(tmp_path, server={"allowed_origins": ["https://app.example"]}),
                                plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    with pytest.raises(InvalidStatus) as refused:
        await open_client(server, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{server.port}", "https://app.example"):
        client = await open_client(server, origin=origin)
        assert (await client.start())["principal"] == "local"
        await client.ws.close()


async def test_without_tokens_only_loopback_unless_allowed(start_server, tmp_path, tokens):
    """No tokens and 0.0.0.0: startup refuses, saying what to do; allowed explicitly, or with a token, it starts."""
    open_config = make_config(tmp_path / "open", server={"host": "0.0.0.0"})
    with pytest.raises(UnsafeListen, match="assistant tokens create"):
        await start_server(open_config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    allowed = make_config(tmp_path / "allowed", server={"host": "0.0.0.0"}, auth={"allow_unauthenticated_remote": True})
    assert (await start_server(allowed, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))).ready
    with_tokens = make_config(tmp_path, server={"host": "0.0.0.0"})
    assert (await start_server(with_tokens, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))).ready


def test_tokens_command_creates_lists_and_revokes(tmp_path, capsys):
    """`assistant tokens create|list|revoke` manage the configured token file."""
    config = tmp_path / "config.toml"
    config.write_text('[auth]\ntokens_file = "secrets/tokens.json"\n')
    assert main(["tokens", "--config", str(config), "create", "dave"]) == 0
    created = capsys.readouterr().out
    token = created.split("token (shown once; keep it secret): ")[1].strip()
    assert token.startswith("ast_") and token not in (tmp_path / "secrets" / "tokens.json").read_text()
    assert main(["tokens", "--config", str(config), "list"]) == 0
    assert "dave" in capsys.readouterr().out
    assert main(["tokens", "--config", str(config), "revoke", "dave"]) == 0
    assert main(["tokens", "--config", str(config), "revoke", "dave"]) == 1
    assert main(["tokens", "--config", str(config), "create", "bad name!"]) == 2


async def test_configured_hashed_tokens_work(start_server, tmp_path):
    """A token given in config.toml as its sha256 authenticates its principal."""
    config = make_config(tmp_path, auth={"tokens": [{"principal": "erin", "sha256": token_hash("ast_from_config")}]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    client = await open_client(server, token="ast_from_config")
    assert (await client.start())["principal"] == "erin"
    await client.ws.close()
