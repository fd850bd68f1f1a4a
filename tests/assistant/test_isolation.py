"""A plugin that raises, hangs or returns garbage fails its own turn with a clear error; other sessions go on."""

from __future__ import annotations

import base64
import threading
import time

import numpy as np

from assistant import AsrEngine, DialogueEngine, DialogueResult, Transcript, Usage, hookimpl
from assistant.audio import wav_bytes
from tests import images
from tests.conftest import make_config
from tests.fakes import ColourNamer, FakeEnginesPlugin


class Misbehaving(DialogueEngine):
    """Hangs (ignoring cancel), returns garbage, emits garbage or raises, as the prompt says; else echoes."""

    def __init__(self) -> None:
        self.id = "fake:misbehaving"
        self.release = threading.Event()

    def generate(self, request, emit, cancelled):
        said = request.messages[-1].content
        if said == "hang":
            self.release.wait(30)
            return DialogueResult("", Usage(0, 0), "stop")
        if said == "garbage":
            return {"text": "not a result"}
        if said == "emit garbage":
            emit(b"bytes")
            return DialogueResult("", Usage(0, 0), "stop")
        if said == "raise":
            raise ValueError("broken plugin")
        emit(f"ok: {said}")
        return DialogueResult(f"ok: {said}", Usage(1, 1), "stop")


async def test_a_hung_engine_fails_its_turn_and_others_go_on(start_server, connect_client, tmp_path):
    """An engine call with no progress past engine_timeout_s fails (internal, says why); its worker is abandoned so the next turns run."""
    engine = Misbehaving()
    server = await start_server(make_config(tmp_path, limits={"engine_timeout_s": 0.5}), plugins=(FakeEnginesPlugin(engine),))
    try:
        async with connect_client(server) as stuck, connect_client(server) as other:
            await stuck.start()
            await other.start()
            began = time.monotonic()
            done = (await stuck.say("hang"))[-1]
            assert done["status"] == "failed" and done["error"]["code"] == "internal"
            assert "no progress for 0.5 s" in done["error"]["message"] and time.monotonic() - began < 5
            assert (await other.say("hello"))[-1]["text"] == "ok: hello", "the next call gets a fresh worker"
            assert (await stuck.say("again"))[-1]["text"] == "ok: again"
            assert server.app.scheduler.stuck_threads() == 1
    finally:
        engine.release.set()


async def test_garbage_and_exceptions_fail_only_their_turn(start_server, connect_client, tmp_path):
    """A wrong return type, a non-text delta and an exception each fail their turn, naming what went wrong."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(Misbehaving()),))
    async with connect_client(server) as client:
        await client.start()
        for said, words in [("garbage", "returned dict instead of a DialogueResult"), ("emit garbage", "emitted bytes instead of text"),
                            ("raise", "ValueError: broken plugin")]:
            done = (await client.say(said))[-1]
            assert done["status"] == "failed" and words in done["error"]["message"], done
        assert (await client.say("fine"))[-1]["status"] == "completed"
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        assert [t["status"] for t in turns if t["role"] == "assistant"] == ["failed", "failed", "failed", "completed"]


class HangingAsr(AsrEngine):
    def __init__(self) -> None:
        self.id = "fake:hanging-asr"
        self.release = threading.Event()

    def transcribe(self, samples, language=None):
        self.release.wait(30)
        return Transcript("late", None, 1.0)


class HangingModality(ColourNamer):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def describe(self, image):
        self.release.wait(30)
        return super().describe(image)


class WithAsr(FakeEnginesPlugin):
    def __init__(self, asr, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asr = asr

    @hookimpl
    def register_engines(self, register):
        """The fake dialogue engine and the given ASR engine."""
        register("dialogue", self.name, lambda app: self.engine)
        register("asr", "hanging", lambda app: self.asr)


async def test_a_hung_asr_engine_and_a_hung_modality_are_given_up_on(start_server, connect_client, tmp_path):
    """ASR past the timeout answers an internal error; a modality past it is skipped and the reply still comes."""
    asr, slow = HangingAsr(), HangingModality()
    plugin = WithAsr(asr, Misbehaving(), modalities={"slow": slow, "colour": ColourNamer()})
    server = await start_server(make_config(tmp_path, engines={"asr": "hanging"}, limits={"engine_timeout_s": 0.5}), plugins=(plugin,))
    tone = wav_bytes((np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32))
    try:
        async with connect_client(server) as client:
            await client.start()
            await client.send({"type": "turn.create", "content": [{"type": "audio", "format": "wav", "data": base64.b64encode(tone).decode()}]})
            created, error = await client.recv(), await client.recv()
            assert created["type"] == "turn.created" and error["code"] == "internal"
            assert "did not answer within 0.5 s" in error["message"]
            done = (await client.say_parts([images.image_part(images.solid("blue")), {"type": "text", "text": "x"}]))[-1]
            assert done["text"] == "ok: [Image 1: mostly blue, 48x40]\nx", "the hung modality was skipped"
    finally:
        asr.release.set()
        slow.release.set()


async def test_engine_errors_are_logged_with_the_engine_id_and_code(start_server, connect_client, caplog):
    """An EngineError fails the turn with its code and leaves a WARNING naming the engine and the code for the operator."""
    from assistant import EngineError
    from tests.fakes import ScriptedDialogue

    def refuse(request):
        raise EngineError("the context does not fit", code="too_large")

    server = await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue(script=refuse, engine_id="fake:refuser")),))
    async with connect_client(server) as client:
        await client.start()
        done = (await client.say("hello"))[-1]
    assert done["status"] == "failed" and done["error"]["code"] == "too_large"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("fake:refuser" in message and "too_large" in message and "the context does not fit" in message for message in warnings), warnings


async def test_an_image_generators_refusal_is_logged_with_its_id_and_code(start_server, connect_client, tmp_path, caplog):
    """An image request the generator refuses (steps=0) answers bad_request and leaves a WARNING naming the engine and the code."""
    from tests.fakes import ScriptedDialogue, StepPainter

    config = make_config(tmp_path, engines={"dialogue": "fake", "image_generator": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(), painter=StepPainter()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "image.generate", "prompt": "a cat", "steps": 0, "event_id": "paint"})
        error = await client.recv()
    assert error["type"] == "error" and error["code"] == "bad_request" and error["ref"] == "paint"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("fake:painter" in message and "code bad_request" in message for message in warnings), warnings
