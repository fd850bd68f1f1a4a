"""A crash: `assistant serve` killed with SIGKILL in the middle of replies, then restarted (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from tests.conftest import Client
from tests.processes import serve, stop, write_config

CLIENTS = 6
CONFIG = '[engines]\ndialogue = "slow-counter"\nasr = ""\n[plugins]\nmodules = ["tests.sample_plugin"]\ndeny = ["rapid_ocr"]\n'


async def quick_turn(url: str) -> dict:
    """A client with one completed reply."""
    client = Client(await connect(url))
    conversation_id = (await client.start())["conversation_id"]
    quick = await client.say("quick")
    return {"client": client, "conversation_id": conversation_id, "completed": (quick[0]["turn_id"], quick[-1]["response_id"])}


async def long_turn(session: dict) -> None:
    """Start a long reply; return once it is committed and announced."""
    client = session["client"]
    await client.send({"type": "turn.create", "content": [{"type": "text", "text": "count"}]})
    events = [await client.recv(), await client.recv()]
    assert [e["type"] for e in events] == ["turn.created", "response.created"]
    session["in_flight"] = (events[0]["turn_id"], events[1]["response_id"])


async def read_deltas(session: dict, count: int) -> None:
    """Wait for `count` more deltas of the session's reply."""
    while count > 0:
        count -= (await session["client"].recv())["type"] == "response.text.delta"


def query(url: str, sql: str, **params) -> list[tuple]:
    """Rows of one query on a connection of its own (SQLite: after checking the file's integrity)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").one() == ("ok",)
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


async def test_sigkill_mid_reply_loses_no_committed_turn_and_marks_replies_interrupted(tmp_path, store_url):
    """Every user turn committed before the kill survives, in-flight replies become interrupted, and the database is intact."""
    config = write_config(tmp_path, CONFIG, url=store_url)
    proc, url = serve(config)
    try:
        sessions = await asyncio.gather(*(quick_turn(url) for _ in range(CLIENTS)))
        await long_turn(sessions[0])
        await read_deltas(sessions[0], 3)  # streaming on the engine's worker
        await asyncio.gather(*(long_turn(session) for session in sessions[1:]))  # committed, waiting for the worker
        await read_deltas(sessions[0], 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for session in sessions:
        session["client"].ws.transport.abort()

    states = dict(query(store_url, "SELECT id, status FROM turns"))
    for session in sessions:
        for turn_id, _ in (session["completed"], session["in_flight"]):
            assert states[turn_id] == "completed", "a user turn acknowledged with turn.created was committed"
        assert states[session["completed"][1]] == "completed"
        assert states[session["in_flight"][1]] == "in_progress", "killed mid-reply: nothing marked it yet"

    proc, url = serve(config)
    try:
        async with connect(url) as ws:
            client = Client(ws)
            for session in sessions:
                await client.start(session["conversation_id"])
                await client.send({"type": "conversation.get"})
                turns = (await client.recv_until("conversation.history"))[-1]["turns"]
                assert [(t["role"], t["status"]) for t in turns] == [
                    ("user", "completed"), ("assistant", "completed"), ("user", "completed"), ("assistant", "interrupted")]
                assert turns[1]["content"][0]["text"] == "done" and turns[2]["content"][0]["text"] == "count"
            assert (await client.say("quick"))[-1]["status"] == "completed", "the restarted server serves turns"
    finally:
        assert stop(proc) == 0
    assert query(store_url, "SELECT count(*) FROM turns WHERE status = 'in_progress'") == [(0,)]
    checked = ", integrity_check ok" if store_url.startswith("sqlite") else ""
    print(f"\ncrash ({store_url.partition(':')[0]}): SIGKILL with 1 reply streaming and {CLIENTS - 1} waiting for the engine; "
          f"{len(states)} turns before, all there after; {CLIENTS} replies interrupted{checked}")


async def test_sigkill_mid_reply_then_resume_never_reuses_a_seq(tmp_path):
    """Killed mid-reply, restarted, resumed with the last seq the client saw: the replay is complete and gapless or says it is not, and no seq is reused."""
    store_url = f"sqlite:///{tmp_path}/db.sqlite"  # the reservation's statements are the store's, tested on both databases in test_store
    config = write_config(tmp_path, CONFIG, url=store_url)
    proc, url = serve(config)
    try:
        client = Client(await connect(url))
        conversation_id = (await client.start())["conversation_id"]
        await client.say("quick")
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "count"}]})
        seen = []
        while sum(e["type"] == "response.text.delta" for e in seen) < 40:  # well into a seq block
            seen.append(await client.recv())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    client.ws.transport.abort()
    last_seq = seen[-1]["seq"]
    assert [e["seq"] for e in seen] == list(range(seen[0]["seq"], last_seq + 1))
    [(stored_last, reserved)] = query(store_url, "SELECT last_seq, seq_reserved FROM conversations WHERE id = :cid", cid=conversation_id)
    assert stored_last < last_seq <= reserved, "the reservation, not the last stored event, covers what the client saw"

    proc, url = serve(config)
    try:
        async with connect(url) as ws:
            resumed = Client(ws)
            await resumed.send({"type": "session.start", "conversation_id": conversation_id, "last_seq": last_seq})
            started = await resumed.recv()
            replay = started["replay"]
            replayed = [await resumed.recv() for _ in range(replay["events"])]
            if replay["complete"]:
                assert [e["seq"] for e in replayed] == list(range(last_seq + 1, last_seq + 1 + len(replayed)))
            events = await resumed.say("quick")
            assert all(e["seq"] > last_seq for e in events), "no event after the restart reuses a seq the client saw"
            assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[-1]["seq"] + 1))
    finally:
        assert stop(proc) == 0
    print(f"\ncrash: client saw seq {last_seq} (stored last_seq {stored_last}, reserved {reserved}); after SIGKILL and restart the resume "
          f"says complete={replay['complete']} with {replay['events']} events, and the next turn starts at seq {events[0]['seq']}")
