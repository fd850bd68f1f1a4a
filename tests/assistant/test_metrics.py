"""GET /metrics: Prometheus text that prometheus-client's parser reads, moving as turns run."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from assistant.auth import TokenFile
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


def scrape(port: int, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_metrics_parse_and_move_when_a_turn_runs(server, connect_client):
    """Replies, tokens, time to first token, sessions, queue depth, batch sizes, errors by code and the store writer's work are counted."""
    before = await asyncio.to_thread(scrape, server.port)
    assert before[("assistant_active_sessions", ())] == 0
    async with connect_client(server) as client:
        await client.start()
        done = (await client.say("hello there"))[-1]
        await client.send("{not json")
        assert (await client.recv())["code"] == "bad_request"
        during = await asyncio.to_thread(scrape, server.port)
    assert during[("assistant_active_sessions", ())] == 1
    assert during[("assistant_replies_total", (("status", "completed"),))] == 1
    assert during[("assistant_dialogue_tokens_total", ())] == done["usage"]["completion_tokens"] == 4
    assert during[("assistant_dialogue_time_to_first_token_seconds_count", ())] == 1
    assert during[("assistant_dialogue_tokens_per_second_count", ())] == 1
    assert during[("assistant_engine_batch_size_count", (("role", "dialogue"),))] == 1
    assert during[("assistant_engine_queue_depth", (("role", "dialogue"),))] == 0
    assert during[("assistant_errors_total", (("code", "bad_request"),))] == 1
    # the turn's start and its reply's end: two store calls at least, each in a group-commit transaction
    assert during[("assistant_store_calls_total", ())] >= before[("assistant_store_calls_total", ())] + 2
    assert during[("assistant_store_transactions_total", ())] > before[("assistant_store_transactions_total", ())]
    assert during[("assistant_store_busy_seconds_total", ())] > before[("assistant_store_busy_seconds_total", ())]
    await asyncio.sleep(0.1)
    assert (await asyncio.to_thread(scrape, server.port))[("assistant_active_sessions", ())] == 0


async def test_metrics_need_a_token_when_the_server_has_tokens(start_server, tmp_path):
    """With auth on, /metrics answers 401 without a valid bearer token."""
    _, token = TokenFile(tmp_path / "data" / "tokens.json").create("ops")
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    try:
        await asyncio.to_thread(scrape, server.port)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as error:
        assert error.code == 401
    assert ("assistant_active_sessions", ()) in await asyncio.to_thread(scrape, server.port, token)
