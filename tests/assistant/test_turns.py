"""The turn core with no socket: a Conversation whose events land in a list.

Each test starts a real App (SQLite store, fake engines, the built-in keyword router; the `make_conversation`
fixture in tests/assistant/conftest.py, the recorder in tests/conversations.py) and drives
`assistant.conversation.Conversation` directly, as a dialect would.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from assistant import events
from assistant.audio import wav_bytes
from assistant.engines import GenerationOptions
from assistant.turns import AudioIn, ImageIn, TextIn
from tests import images
from tests.conversations import kinds, settle
from tests.fakes import ColourNamer, FakeEnginesPlugin, FixedAsr, ScriptedDialogue, StepPainter


async def test_a_text_turn_is_stored_and_streamed_as_events(make_conversation):
    """A text turn gives TurnCreated, ReplyStarted, deltas and ReplyDone (system prompt and turn: 2 messages), and both turns are stored."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue()))
    conversation.create_turn(lambda: [TextIn("hello there")], GenerationOptions(), "t1")
    await settle(conversation)
    # four engine deltas; those produced while the last one was being published come joined (same text, fewer events)
    assert kinds(recorder)[:2] == ["TurnCreated", "ReplyStarted"] and kinds(recorder)[-1] == "ReplyDone"
    assert 1 <= kinds(recorder).count("TextDelta") == len(kinds(recorder)) - 3 <= 4
    done = recorder.of(events.ReplyDone)[0]
    assert done.status == "completed" and done.text == "You said: hello there" == "".join(d.delta for d in recorder.of(events.TextDelta))
    assert done.usage == {"prompt_tokens": 2, "completion_tokens": 4} and recorder.told == []
    stored = await conversation.app.store.history(conversation.id)
    assert [(t.role, t.status, t.text) for t in stored] == [("user", "completed", "hello there"), ("assistant", "completed", done.text)]


async def test_cancel_mid_reply_ends_it_cancelled_with_its_partial_text(make_conversation):
    """Cancelling a streaming reply stops the engine; ReplyDone says cancelled and the partial text is stored."""
    engine = ScriptedDialogue(script=lambda request: [f" w{i}" for i in range(200)], delay_s=0.01)
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine))
    conversation.create_turn(lambda: [TextIn("count")], GenerationOptions(), "t1")
    await recorder.wait_for(events.TextDelta, 3)
    conversation.cancel_reply(recorder.of(events.ReplyStarted)[0].response_id, "c1")
    await settle(conversation)
    done = recorder.of(events.ReplyDone)[0]
    assert done.status == "cancelled" and 3 <= len(recorder.of(events.TextDelta)) < 200
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert stored.status == "cancelled" and stored.text == done.text
    with pytest.raises(Exception) as unknown:
        conversation.cancel_reply(done.response_id, "c2")
    assert getattr(unknown.value, "code", None) == "not_found" and unknown.value.ref == "c2"


async def test_a_failing_engine_fails_its_reply_and_the_next_turn_works(make_conversation):
    """An engine that raises gives ReplyDone failed (internal); the next turn of the conversation completes."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(fail_times=1)))
    conversation.create_turn(lambda: [TextIn("first")], GenerationOptions(), "t1")
    conversation.create_turn(lambda: [TextIn("second")], GenerationOptions(), "t2")
    await settle(conversation)
    failed, ok = recorder.of(events.ReplyDone)
    assert failed.status == "failed" and failed.error.code == "internal" and "scripted engine failure" in failed.error.message
    assert ok.status == "completed" and ok.text == "You said: second"
    statuses = [t.status for t in await conversation.app.store.history(conversation.id)]
    assert statuses == ["completed", "failed", "completed", "completed"]


async def test_a_bad_turn_is_told_to_its_client_and_nothing_is_stored(make_conversation):
    """A turn with no text is refused with bad_request through `tell`, naming its event; no event is published."""
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue()))
    conversation.create_turn(lambda: [TextIn("   ")], GenerationOptions(), "t1")
    conversation.create_turn(lambda: [ImageIn(b"not an image", "image/png")], GenerationOptions(), "t2")
    await settle(conversation)
    assert recorder.events == []
    assert [(e.code, e.ref) for e in recorder.told] == [("bad_request", "t1"), ("bad_request", "t2")]
    assert await conversation.app.store.history(conversation.id) == []


async def test_an_audio_turn_is_transcribed_and_the_transcript_answered(make_conversation):
    """An audio part reaches the ASR engine; TranscriptDone comes before the reply, which answers the transcript."""
    asr, engine = FixedAsr("what is the weather like"), ScriptedDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, asr=asr))
    tone = (0.3 * np.sin(np.linspace(0, 2 * np.pi * 440, 16000))).astype(np.float32)
    conversation.create_turn(lambda: [AudioIn(wav_bytes(tone), "wav")], GenerationOptions(), "a1")
    await settle(conversation)
    assert kinds(recorder)[:3] == ["TurnCreated", "TranscriptDone", "ReplyStarted"] and kinds(recorder)[-1] == "ReplyDone"
    transcript = recorder.of(events.TranscriptDone)[0]
    assert transcript.text == "what is the weather like" and transcript.language == "en" and transcript.duration_s == 1.0
    assert asr.heard == [16000] and engine.requests[-1].messages[-1].content == "what is the weather like"
    assert recorder.of(events.ReplyDone)[0].text == "You said: what is the weather like"


async def test_an_image_turn_reaches_a_text_engine_as_what_the_modality_says(make_conversation):
    """With a text-only engine, the modality's description of the image comes before the turn's words."""
    namer, engine = ColourNamer(), ScriptedDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, modalities={"colours": namer}))
    parts = [ImageIn(images.solid("red"), "image/png"), TextIn("what is this?")]
    conversation.create_turn(lambda: parts, GenerationOptions(), "i1")
    await settle(conversation)
    assert kinds(recorder)[:2] == ["TurnCreated", "ReplyStarted"] and recorder.of(events.ReplyDone)[0].status == "completed"
    assert len(namer.seen) == 1 and namer.seen[0].index == 1
    assert engine.requests[-1].messages[-1].content == "[Image 1: mostly red, 48x40]\nwhat is this?"


async def test_a_routed_drawing_is_acknowledged_then_painted_with_progress(make_conversation):
    """'draw ...' is claimed by the keyword router: the reply acknowledges it, then the job reports each step and its PNG."""
    engine = ScriptedDialogue()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, painter=StepPainter(steps=3)))
    conversation.create_turn(lambda: [TextIn("draw a red bicycle by the sea")], GenerationOptions(), "d1")
    await settle(conversation)
    assert kinds(recorder) == [
        "TurnCreated", "ReplyStarted", "TextDelta", "ImageStarted", "ReplyDone",
        "ImageProgress", "ImageProgress", "ImageProgress", "ImageDone",
    ]
    started, done = recorder.of(events.ImageStarted)[0], recorder.of(events.ImageDone)[0]
    assert started.prompt and "bicycle" in started.prompt and started.steps == 3 and engine.requests == []
    assert [(p.step, p.total) for p in recorder.of(events.ImageProgress)] == [(1, 3), (2, 3), (3, 3)]
    assert done.status == "completed" and done.mime == "image/png" and done.data.startswith(b"\x89PNG") and done.sha256
    assert await conversation.app.store.attachment(done.sha256) == ("image/png", done.data)


async def test_an_image_job_is_cancelled_at_its_next_step(make_conversation):
    """Cancelling a painting job ends it with ImageDone cancelled and no picture; an unknown job is not_found."""
    gate = threading.Event()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(), painter=StepPainter(steps=5, gate=gate)))
    job = await conversation.generate_image({"prompt": "a lighthouse"}, "g1")
    await recorder.wait_for(events.ImageProgress, 1)
    conversation.cancel_image(job.job_id, "x1")
    gate.set()
    await settle(conversation)
    done = recorder.of(events.ImageDone)[0]
    assert done.status == "cancelled" and done.data is None and len(recorder.of(events.ImageProgress)) == 1
    with pytest.raises(Exception) as unknown:
        conversation.cancel_image(job.job_id, "x2")
    assert getattr(unknown.value, "code", None) == "not_found"
    history = await conversation.app.store.history(conversation.id)
    assert [(t.role, t.status) for t in history] == [("user", "completed"), ("assistant", "cancelled")]


async def test_what_several_modalities_say_about_an_image_is_one_line(make_conversation):
    """Two modalities describing one image reach the engine as one `[Image 1: a; b]` line, in modality order."""
    engine = ScriptedDialogue()
    plugin = FakeEnginesPlugin(engine, modalities={"first": ColourNamer(), "second": ColourNamer()})
    conversation, _ = await make_conversation(plugin)
    parts = [ImageIn(images.solid("blue"), "image/png"), ImageIn(images.solid("red"), "image/png"), TextIn("and these?")]
    conversation.create_turn(lambda: parts, GenerationOptions(), "m1")
    await settle(conversation)
    assert engine.requests[-1].messages[-1].content == (
        "[Image 1: mostly blue, 48x40; mostly blue, 48x40]\n[Image 2: mostly red, 48x40; mostly red, 48x40]\nand these?"
    )
