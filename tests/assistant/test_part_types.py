"""Part types from plugins: a registered type is accepted on the wire, decoded within limits, stored and described."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from assistant import DecodedPart, MessagePart, PartError, PartType, hookimpl
from assistant.app import App
from assistant.engines import Capabilities
from assistant.plugins import PluginError
from tests.conftest import make_config
from tests.fakes import ColourNamer, FakeEnginesPlugin, FixedAsr, ScriptedDialogue


class NoteFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    picture: bool = False
    sound: bool = False


@dataclass(frozen=True)
class Note:
    text: str
    picture: object | None
    sound: np.ndarray | None


class NotePart(PartType):
    """A test part type: UTF-8 text, optionally with a red picture and a second of sound for the tools."""

    name = "note"
    mimes = ("text/plain",)
    max_bytes = 64
    fields = NoteFields

    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure
        self.decoded = 0

    def decode(self, data, mime, options, limits):
        self.decoded += 1
        if self.failure == "crash":
            raise RuntimeError("the note decoder broke")
        if self.failure == "garbage":
            return "not a DecodedPart"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PartError("not UTF-8") from None
        picture = Image.new("RGB", (8, 8), "red") if options.picture else None
        sound = np.full(16_000, 0.1, dtype=np.float32) if options.sound else None
        return DecodedPart(value=Note(text, picture, sound), text=f"note says: {text}", nbytes=len(data))

    async def describe(self, part, tools):
        if self.failure == "describe":
            raise RuntimeError("the note describer broke")
        note = part.value
        said = [part.text]
        if note.picture is not None:
            said += await tools.describe_images([note.picture])
        if note.sound is not None:
            transcript = await tools.transcribe(note.sound)
            said.append(f"heard {transcript.text!r}" if transcript else "no ASR")
        return "; ".join(s or "-" for s in said)


class NotePlugin:
    __name__ = "notes"

    def __init__(self, part_type: PartType) -> None:
        self.part_type = part_type

    @hookimpl
    def register_part_types(self, register):
        register(self.part_type)


def note(text: str | bytes, mime: str | None = "text/plain", **fields) -> dict:
    """A `note` part as a client sends it."""
    data = text.encode() if isinstance(text, str) else text
    part = {"type": "note", "data": base64.b64encode(data).decode(), **fields}
    if mime is not None:
        part["mime"] = mime
    return part


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def notes_server(start_server, engine, part_type=None, config=None, **engines):
    """A server with the fake dialogue engine and the `note` part type."""
    return await start_server(config, plugins=(FakeEnginesPlugin(engine, **engines), NotePlugin(part_type or NotePart())))


async def test_a_plugin_part_reaches_the_context_and_the_stored_turn(start_server, connect_client, engine):
    """The note is stored as an attachment plus its `note_text`, and the engine reads `[Note 1: ...]` before the words."""
    server = await notes_server(start_server, engine)
    async with connect_client(server) as client:
        assert (await client.start())["part_types"] == ["note"]
        events = await client.say_parts([note("buy milk"), {"type": "text", "text": "What does it say?"}])
        assert events[-1]["status"] == "completed"
        assert engine.requests[-1].messages[-1].content == "[Note 1: note says: buy milk]\nWhat does it say?"
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
    digest = sha(b"buy milk")
    assert turn["content"] == [
        {"type": "note", "sha256": digest, "mime": "text/plain", "url": f"/attachments/{digest}"},
        {"type": "text", "text": "What does it say?"},
        {"type": "note_text", "text": "note says: buy milk", "sha256": digest, "mime": "text/plain", "url": f"/attachments/{digest}"},
    ]
    assert await server.app.store.attachment(digest) == ("text/plain", b"buy milk")
    assert server.app.media.used == 0, "the decoded note's share of the media budget is given back"


async def test_a_turn_of_only_a_plugin_part_is_answered_and_later_turns_still_see_it(start_server, connect_client, engine):
    """A part alone makes a turn; the next turn's context still has its description."""
    server = await notes_server(start_server, engine)
    async with connect_client(server) as client:
        await client.start()
        assert (await client.say_parts([note("first"), note("second")]))[-1]["status"] == "completed"
        await client.say("and?")
    roles = [(m.role, m.content) for m in engine.requests[-1].messages[1:]]
    assert roles[0] == ("user", "[Note 1: note says: first]\n[Note 2: note says: second]") and roles[1][0] == "assistant"
    assert engine.requests[-1].messages[-1].content == "and?"


@pytest.mark.parametrize(
    ("part", "code", "message"),
    [
        ({"type": "spreadsheet", "data": ""}, "bad_request", "content.0.type: unknown part type 'spreadsheet'; known: text, image, audio, note"),
        (note("x", colour="red"), "bad_request", "content.0.colour: Extra inputs are not permitted"),
        (note("x", picture="yes"), "bad_request", "content.0.picture: Input should be a valid boolean"),
        (note("x", mime="application/pdf"), "unsupported", "content.0.mime: 'application/pdf' is not a note type; accepted: text/plain"),
        (note("x" * 65), "too_large", "content.0: the note is 65 bytes; at most 64 are accepted"),
        ({"type": "note", "data": "not base64!"}, "bad_request", "content.0.data: not valid base64"),
        ({"type": "note"}, "bad_request", "invalid turn.create: turn.create.content.0.plugin.data: Field required"),
        (note(b"\xff\xfe"), "bad_request", "content.0: not UTF-8"),
    ],
)
async def test_bad_parts_are_refused_with_a_clear_error(start_server, connect_client, engine, part, code, message):
    """Unknown types, bad fields, wrong mimes, oversize data and undecodable bytes each get their error; nothing is stored."""
    part_type = NotePart()
    server = await notes_server(start_server, engine, part_type)
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [part], "event_id": "e1"})
        error = await client.recv()
        assert (error["type"], error["code"], error["message"], error["ref"]) == ("error", code, message, "e1")
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []
        assert (await client.say("still here?"))[-1]["status"] == "completed"
    assert part_type.decoded == (1 if message == "content.0: not UTF-8" else 0), "limits and fields are checked before decoding"
    assert server.app.media.used == 0


@pytest.mark.parametrize("failure", ["crash", "garbage"])
async def test_a_broken_decoder_fails_its_turn_and_not_the_server(start_server, connect_client, engine, failure):
    """A decode that raises or returns the wrong type is `internal` for that turn; the connection and server go on."""
    server = await notes_server(start_server, engine, NotePart(failure))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [note("x")]})
        error = await client.recv()
        assert error["code"] == "internal" and error["message"].startswith("content.0: the note part type")
        assert (await client.say("still here?"))[-1]["status"] == "completed"
    assert server.app.media.used == 0


async def test_a_failing_describe_leaves_the_part_undescribed(start_server, connect_client, engine):
    """When `describe` raises, the turn goes on and the engine reads `[Note 1: no description available]`."""
    server = await notes_server(start_server, engine, NotePart("describe"))
    async with connect_client(server) as client:
        await client.start()
        assert (await client.say_parts([note("x"), {"type": "text", "text": "hm"}]))[-1]["status"] == "completed"
    assert engine.requests[-1].messages[-1].content == "[Note 1: no description available]\nhm"


async def test_describe_reaches_the_image_path_and_asr(start_server, connect_client, engine, tmp_path):
    """The tools a part type gets run the loaded modalities on its pictures and the ASR engine on its sound."""
    namer = ColourNamer()
    config = make_config(tmp_path, engines={"asr": "fake"})
    server = await notes_server(start_server, engine, config=config, modalities={"colour": namer}, asr=FixedAsr("hello there"))
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([note("look", picture=True, sound=True)])
    assert engine.requests[-1].messages[-1].content == "[Note 1: note says: look; mostly red, 8x8; heard 'hello there']"
    assert len(namer.seen) == 1 and namer.seen[0].mime == "image/png"


async def test_an_engine_that_takes_the_type_natively_gets_the_decoded_part(start_server, connect_client):
    """An engine whose capabilities list `note` finds the decoded Note in ChatMessage.parts, and nothing is described."""
    engine = ScriptedDialogue()
    engine.capabilities = Capabilities(accepts_parts=frozenset({"note"}))
    server = await notes_server(start_server, engine)
    async with connect_client(server) as client:
        await client.start()
        await client.say_parts([note("native"), {"type": "text", "text": "read it"}])
        await client.send({"type": "conversation.get"})
        turn = (await client.recv_until("conversation.history"))[-1]["turns"][0]
    message = engine.requests[-1].messages[-1]
    assert message.content == "read it"
    assert message.parts == (MessagePart("note", "text/plain", Note("native", None, None)),)
    assert [p["type"] for p in turn["content"]] == ["note", "text"]


@pytest.mark.parametrize("name", ["text", "image", "audio", "transcript", "image_text", "pdf_text", "Bad Name", ""])
def test_a_part_type_may_not_take_a_core_name_or_an_odd_one(tmp_path, name):
    """Core types, stored kinds, names ending in `_text` and malformed names stop startup."""
    part_type = NotePart()
    part_type.name = name
    with pytest.raises(PluginError, match="part type name"):
        App.prepare(make_config(tmp_path), [NotePlugin(part_type)])


def test_a_part_type_registered_twice_stops_startup(tmp_path):
    """Two plugins registering one name is an error naming both."""
    other = NotePlugin(NotePart())
    other.__name__ = "other_notes"
    with pytest.raises(PluginError, match=r"part type 'note' registered twice: by '(other_)?notes' and by '(other_)?notes'"):
        App.prepare(make_config(tmp_path), [NotePlugin(NotePart()), other])
    with pytest.raises(PluginError, match=r"is not an assistant\.PartType"):
        App.prepare(make_config(tmp_path), [NotePlugin(object())])  # type: ignore[arg-type]


async def test_a_stateless_history_renders_plugin_parts_as_turns_do(tmp_path):
    """A client-sent history (the stateless HTTP wires) decodes and describes plugin parts like a conversation turn, storing nothing."""
    from assistant.stateless import StatelessMessage, stateless_context
    from assistant.turns import PluginPartIn, TextIn

    app = await App.start(make_config(tmp_path), [FakeEnginesPlugin(ScriptedDialogue()), NotePlugin(NotePart())])
    try:
        history = [StatelessMessage("user", [PluginPartIn("note", b"call Bob", "text/plain"), TextIn("Who?")])]
        async with stateless_context(app, history) as messages:
            assert messages[-1].content == "[Note 1: note says: call Bob]\nWho?"
        assert app.media.used == 0
        assert await app.store.attachment(sha(b"call Bob")) is None
    finally:
        await app.stop()
