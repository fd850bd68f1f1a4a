"""Server tools over the native websocket: tool.call / tool.result inside one response, tool.confirm, replay, history."""

from __future__ import annotations

from assistant import ToolContext
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToolCallingDialogue


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def clock(ctx: ToolContext) -> dict:
    """The user's time zone and whether it is known."""
    return {"zone": str(ctx.timezone), "offset_known": ctx.now.utcoffset() is not None}


def fail() -> str:
    """Always raises."""
    raise ValueError("no luck")


def wipe(what: str) -> dict:
    """Wipe something (asks the user first).

    Args:
        what: what to wipe
    """
    return {"wiped": what}


TOOLS = [add, clock, fail, (wipe, {"requires_confirmation": True})]


async def tool_server(start_server, engine=None):
    return await start_server(plugins=(FakeEnginesPlugin(engine or ToolCallingDialogue(), tools=TOOLS),))


async def test_tool_events_stream_in_one_response_and_replay_and_appear_in_history(start_server, connect_client):
    """tool.call and tool.result come numbered between response.created and response.done; a reconnect replays them; history has them."""
    server = await tool_server(start_server)
    async with connect_client(server) as client:
        conversation_id = (await client.start())["conversation_id"]
        frames = await client.say('add {"a": 2, "b": 40}')
        types = [f["type"] for f in frames]
        assert types[:4] == ["turn.created", "response.created", "tool.call", "tool.result"] and types[-1] == "response.done"
        assert types.count("response.created") == 1 and types.count("response.done") == 1
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        call, result, done = frames[2], frames[3], frames[-1]
        assert call["name"] == "add" and call["arguments"] == {"a": 2, "b": 40} and call["needs_confirmation"] is False
        assert result["status"] == "ok" and result["result"] == 42 and result["call_id"] == call["call_id"] and "error" not in result
        assert done["status"] == "completed" and done["text"] == "The add tool said: 42"
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "conversation_id": conversation_id, "last_seq": frames[1]["seq"]})
        replayed = await client.recv_until("response.done")
        assert [f["type"] for f in replayed][1:3] == ["tool.call", "tool.result"] and replayed[1]["seq"] == call["seq"]
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        content = turns[-1]["content"]
        assert [p["type"] for p in content] == ["tool_call", "tool_result", "text"]
        assert content[0]["name"] == "add" and content[1]["result"] == 42 and content[2]["text"] == done["text"]


async def test_tool_confirm_over_the_wire_and_unknown_calls(start_server, connect_client):
    """A call that needs confirmation waits for tool.confirm; confirming an unknown call is not_found and the session goes on."""
    server = await tool_server(start_server)
    async with connect_client(server) as client, connect_client(server) as other:
        await client.start()
        await other.start()
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": 'wipe {"what": "disk"}'}]})
        frames = await client.recv_until("tool.call")
        assert frames[-1]["needs_confirmation"] is True
        assert (await other.say("hello"))[-1]["text"] == "You said: hello", "another session is served meanwhile"
        await client.send({"type": "tool.confirm", "call_id": "nope", "approved": True, "event_id": "e9"})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "not_found" and error["ref"] == "e9"
        await client.send({"type": "tool.confirm", "call_id": frames[-1]["call_id"], "approved": False})
        rest = await client.recv_until("response.done")
        result = next(f for f in rest if f["type"] == "tool.result")
        assert result["status"] == "declined" and rest[-1]["status"] == "completed"
        assert (await client.say("hello again"))[-1]["status"] == "completed"


async def test_a_failing_tool_and_a_session_time_zone(start_server, connect_client):
    """A raising tool gives tool.result error and a completed reply; session.start's timezone reaches tools; a bad one is refused."""
    server = await tool_server(start_server)
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "timezone": "Mars/Olympus", "event_id": "s1"})
        error = await client.recv()
        assert error["code"] == "bad_request" and "Mars/Olympus" in error["message"]
        await client.send({"type": "session.start", "timezone": "Asia/Tokyo"})
        await client.recv_until("session.started")
        frames = await client.say("fail")
        result = next(f for f in frames if f["type"] == "tool.result")
        assert result["status"] == "error" and "ValueError: no luck" in result["error"] and frames[-1]["status"] == "completed"
        frames = await client.say("clock")
        result = next(f for f in frames if f["type"] == "tool.result")
        assert result["result"] == {"zone": "Asia/Tokyo", "offset_known": True}


async def test_an_engine_without_tools_sees_no_tool_events(start_server, connect_client):
    """With an engine that cannot call tools, a turn naming a tool is a plain reply: no tool events."""
    server = await tool_server(start_server, ScriptedDialogue())
    async with connect_client(server) as client:
        await client.start()
        frames = await client.say("add 1 and 2")
        types = [f["type"] for f in frames]
        assert types[:2] == ["turn.created", "response.created"] and types[-1] == "response.done"
        assert set(types[2:-1]) == {"response.text.delta"}  # six engine deltas, those that piled up joined


async def test_only_the_conversations_principal_can_confirm_and_tool_confirm_needs_a_session(start_server, connect_client, tmp_path):
    """Another principal cannot answer a waiting call (not_found), tool.confirm before session.start is refused, the owner can."""
    from assistant.auth import TokenFile

    file = TokenFile(tmp_path / "data" / "tokens.json")
    alice, bob = file.create("alice")[1], file.create("bob")[1]
    server = await tool_server(start_server)
    async with connect_client(server, additional_headers={"Authorization": f"Bearer {alice}"}) as owner, \
            connect_client(server, additional_headers={"Authorization": f"Bearer {bob}"}) as other:
        await owner.start()
        await owner.send({"type": "turn.create", "content": [{"type": "text", "text": 'wipe {"what": "disk"}'}]})
        call = (await owner.recv_until("tool.call"))[-1]
        await other.send({"type": "tool.confirm", "call_id": call["call_id"], "approved": True, "event_id": "early"})
        early = await other.recv()
        assert (early["code"], early["ref"]) == ("unauthorized", "early") and "session.start" in early["message"]
        await other.start()
        await other.send({"type": "tool.confirm", "call_id": call["call_id"], "approved": True, "event_id": "x"})
        refused = await other.recv()
        assert (refused["code"], refused["ref"]) == ("not_found", "x")
        await owner.send({"type": "tool.confirm", "call_id": call["call_id"], "approved": True})
        rest = await owner.recv_until("response.done")
        assert next(f for f in rest if f["type"] == "tool.result")["result"] == {"wiped": "disk"}
