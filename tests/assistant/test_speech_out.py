"""Speech out: replies spoken sentence by sentence as audio events, in the core and over the native protocol."""

from __future__ import annotations

import asyncio
import threading

import pytest

from assistant import events
from assistant.engines import GenerationOptions
from assistant.speech import MAX_CLAUSE_CHARS, speech_out, split_speakable
from assistant.turns import TextIn
from tests.conftest import make_config
from tests.conversations import kinds, settle
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue, ToneVoice

STORY = ["The sea was calm.", " The keeper lit the lamp!", " Would the ship see it?", " It did"]


def story(request) -> list[str]:
    return list(STORY)


def test_sentences_are_split_as_they_finish_and_long_ones_by_clause():
    """Finished sentences leave the buffer at once; the rest waits unless final; a long sentence goes clause by clause."""
    assert split_speakable("Hello there. How are") == (["Hello there."], "How are")
    assert split_speakable("Is it? Yes!\nNext") == (["Is it?", "Yes!"], "Next")
    assert split_speakable("one two", final=True) == (["one two"], "")
    assert split_speakable("... 🙂 ... ", final=True) == ([], "")
    long = "word " * 40 + ", and then more"
    pieces, rest = split_speakable(long.strip())
    assert pieces and len(pieces[0]) <= len(long) and len(pieces[0]) > MAX_CLAUSE_CHARS // 2 and rest.startswith("and then")


async def test_a_reply_is_spoken_sentence_by_sentence_and_speech_starts_before_the_text_ends(make_conversation):
    """With speech on, audio of the first sentence is published before ReplyDone, then AudioDone after all of it."""
    voice = ToneVoice()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(script=story, delay_s=0.05), voice=voice))
    conversation.speech = speech_out(conversation.app, None, None)
    conversation.create_turn(lambda: [TextIn("tell me")], GenerationOptions(), "t1")
    await settle(conversation)
    order = kinds(recorder)
    assert order.index("AudioDelta") < order.index("ReplyDone") < order.index("AudioDone") == len(order) - 1
    assert voice.spoken == ["The sea was calm.", "The keeper lit the lamp!", "Would the ship see it?", "It did"]
    done = recorder.of(events.AudioDone)[0]
    words = sum(len(s.split()) for s in voice.spoken)
    assert done.status == "completed" and done.duration_ms == words * 100 and done.error is None
    assert sum(len(d.audio) for d in recorder.of(events.AudioDelta)) == words * 3200
    assert {d.sample_rate for d in recorder.of(events.AudioDelta)} == {16000}


async def test_without_speech_requested_nothing_is_spoken(make_conversation):
    """A conversation that did not ask for audio gets no audio events, even with a synthesizer configured."""
    voice = ToneVoice()
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(script=story), voice=voice))
    conversation.create_turn(lambda: [TextIn("tell me")], GenerationOptions(), "t1")
    await settle(conversation)
    assert "AudioDelta" not in kinds(recorder) and "AudioDone" not in kinds(recorder) and voice.spoken == []


async def test_cancelling_the_reply_stops_its_speech(make_conversation):
    """response.cancel stops the text and the speech: AudioDone says cancelled and the rest is never spoken."""
    voice = ToneVoice()
    engine = ScriptedDialogue(script=lambda request: [f"Sentence {i}." for i in range(100)], delay_s=0.02)
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, voice=voice))
    conversation.speech = speech_out(conversation.app, "high", None)
    conversation.create_turn(lambda: [TextIn("go on")], GenerationOptions(), "t1")
    await recorder.wait_for(events.AudioDelta, 2)
    conversation.cancel_reply(recorder.of(events.ReplyStarted)[0].response_id, "c1")
    await settle(conversation)
    assert recorder.of(events.ReplyDone)[0].status == "cancelled"
    assert recorder.of(events.AudioDone)[0].status == "cancelled" and len(voice.spoken) < 100


@pytest.mark.parametrize("broken", ["fail", "hang"])
async def test_a_broken_synthesizer_fails_only_the_audio(make_conversation, broken):
    """A synthesizer that raises or hangs ends the audio as failed; the text reply completes and is stored whole."""
    voice = ToneVoice(**{broken: True})
    conversation, recorder = await make_conversation(
        FakeEnginesPlugin(ScriptedDialogue(script=story), voice=voice), limits={"engine_timeout_s": 1}
    )
    conversation.speech = speech_out(conversation.app, None, None)
    conversation.create_turn(lambda: [TextIn("tell me")], GenerationOptions(), "t1")
    await settle(conversation)
    reply, audio = recorder.of(events.ReplyDone)[0], recorder.of(events.AudioDone)[0]
    assert reply.status == "completed" and reply.text == "".join(STORY)
    assert audio.status == "failed" and audio.error.code == "internal" and "speech failed" in audio.error.message
    assert (await conversation.app.store.history(conversation.id))[-1].text == "".join(STORY)


async def test_voices_and_missing_synthesizer_are_refused_clearly(make_conversation):
    """An unknown voice is bad_request naming the voices; asking for audio without a synthesizer is unavailable."""
    conversation, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(), voice=ToneVoice()))
    with pytest.raises(Exception) as unknown:
        speech_out(conversation.app, "whisper", "s1")
    assert unknown.value.code == "bad_request" and "low, high" in unknown.value.message and unknown.value.ref == "s1"
    plain, _ = await make_conversation(FakeEnginesPlugin(ScriptedDialogue()))
    with pytest.raises(Exception) as missing:
        speech_out(plain.app, None, "s2")
    assert missing.value.code == "unavailable"


async def test_the_native_protocol_speaks_replies(start_server, connect_client, tmp_path):
    """Over /ws: session.start asks for audio in a voice, response.audio.delta comes before response.done, then response.audio.done."""
    import base64

    voice = ToneVoice()
    server = await start_server(
        make_config(tmp_path, engines={"speech_synthesizer": "fake"}),
        plugins=(FakeEnginesPlugin(ScriptedDialogue(script=story, delay_s=0.05), voice=voice),),
    )
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "output_modalities": ["text", "audio"], "voice": "nobody"})
        refused = await client.recv()
        assert refused["type"] == "error" and refused["code"] == "bad_request" and "low, high" in refused["message"]
        await client.send({"type": "session.start", "voice": "high"})
        assert (await client.recv())["code"] == "bad_request"
        await client.send({"type": "session.start", "output_modalities": ["text", "audio"], "voice": "high"})
        started = await client.recv()
        assert started["output_modalities"] == ["text", "audio"] and [v["name"] for v in started["voices"]] == ["low", "high"]
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "tell me"}]})
        seen = []
        while not seen or seen[-1]["type"] != "response.audio.done":
            seen.append(await client.recv())
        types = [event["type"] for event in seen]
        assert types.index("response.audio.delta") < types.index("response.done")
        audio = b"".join(base64.b64decode(e["data"]) for e in seen if e["type"] == "response.audio.delta")
        done = seen[-1]
        assert done["status"] == "completed" and done["duration_ms"] == len(audio) // 2 * 1000 // 16000
        assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)


async def test_audio_without_a_synthesizer_is_unavailable_over_the_wire(server, connect_client):
    """session.start asking for audio on a server with no speech synthesizer answers unavailable, and text still works."""
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "output_modalities": ["text", "audio"]})
        assert (await client.recv())["code"] == "unavailable"
        assert (await client.start())["output_modalities"] == ["text"]
        assert (await client.say("hi"))[-1]["status"] == "completed"
        await asyncio.sleep(0)


LONG = [f"Sentence number {i} is here." for i in range(1, 30)]


async def test_a_new_turn_cuts_a_talking_reply_and_the_next_context_has_what_was_heard(make_conversation):
    """Barge-in by a new turn: the talking reply stops (AudioDone cancelled), its heard part is stored, and the next turn's context gives only that."""
    voice = ToneVoice(pace_s=0.05)
    engine = ScriptedDialogue(script=lambda request: [" " + s for s in LONG] if "story" in request.messages[-1].content else ["ok"])
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, voice=voice))
    conversation.speech = speech_out(conversation.app, None, None)
    conversation.create_turn(lambda: [TextIn("a long story")], GenerationOptions(), "t1")
    await recorder.wait_for(events.AudioDelta, 6)  # a sentence and a bit into the next
    conversation.create_turn(lambda: [TextIn("stop, what else?")], GenerationOptions(), "t2")
    await settle(conversation)
    first = recorder.of(events.AudioDone)[0]
    assert first.status == "cancelled" and first.duration_ms < 29 * 500
    stored = (await conversation.app.store.history(conversation.id))[1]
    heard = [p.text for p in stored.parts if p.kind == "heard"]
    assert stored.status in ("completed", "cancelled") and len(heard) == 1 and heard[0].startswith("Sentence number 1 is here.")
    assert len(heard[0]) < len(stored.text)
    assert engine.requests[-1].messages[-2].content == heard[0]


async def test_the_client_says_how_much_it_played(make_conversation):
    """response.audio.played after a cut: the heard part becomes the words of the audio played, proportionally."""
    voice = ToneVoice(pace_s=0.05)
    engine = ScriptedDialogue(script=lambda request: [" " + s for s in LONG])
    conversation, recorder = await make_conversation(FakeEnginesPlugin(engine, voice=voice))
    conversation.speech = speech_out(conversation.app, None, None)
    conversation.create_turn(lambda: [TextIn("a long story")], GenerationOptions(), "t1")
    await recorder.wait_for(events.AudioDelta, 8)
    assert conversation.barge_in()
    await settle(conversation)
    response_id = recorder.of(events.ReplyStarted)[0].response_id
    await conversation.audio_played(response_id, 700, "p1")  # 5 words of "Sentence number 1 is here." and 2 of the next
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert [p.text for p in stored.parts if p.kind == "heard"] == ["Sentence number 1 is here. Sentence number"]
    with pytest.raises(Exception) as unknown:
        await conversation.audio_played("nope", 10, "p2")
    assert unknown.value.code == "not_found"


async def test_talking_over_a_spoken_reply_with_the_microphone_stops_it(start_server, connect_client, tmp_path):
    """A streamed utterance that starts while a reply talks: speech.started, then the reply's audio stops (delay logged), it is stored cut with its heard text, and the utterance is answered."""
    import base64
    import time

    from tests.assistant.test_audio_stream import pcm16, utterance

    voice = ToneVoice(pace_s=0.1)
    engine = ScriptedDialogue(script=lambda request: [" " + s for s in LONG] if "story" in request.messages[-1].content else [" Paris."])
    config = make_config(tmp_path, engines={"asr": "faster_whisper", "speech_synthesizer": "fake"}, speech={"partial_interval_s": 0})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, voice=voice),))
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "output_modalities": ["text", "audio"]})
        await client.recv_until("session.started")
        await client.send({"type": "turn.create", "content": [{"type": "text", "text": "tell me a story"}]})
        seen = [await client.recv()]
        while seen[-1]["type"] != "response.audio.delta":
            seen.append(await client.recv())
        data, chunk = pcm16(utterance()), 3200
        started_at = audio_stopped_at = None
        for start in range(0, len(data), chunk):
            await client.send({"type": "audio.append", "data": base64.b64encode(data[start:start + chunk]).decode()})
            await asyncio.sleep(0.1)
            while True:
                try:
                    event = await client.recv(timeout=0.001)
                except TimeoutError:
                    break
                seen.append(event)
                if event["type"] == "speech.started":
                    started_at = time.perf_counter()
                if event["type"] == "response.audio.done" and audio_stopped_at is None:
                    audio_stopped_at = time.perf_counter()
        while [e["type"] for e in seen].count("response.done") < 2:  # the story's, then the answer's
            seen.append(await client.recv())
        answer = seen[len(seen) - 1 - [e["type"] for e in reversed(seen)].index("transcript.done"):]
        cut = next(e for e in seen if e["type"] == "response.audio.done")
        assert cut["status"] == "cancelled" and started_at is not None and audio_stopped_at is not None
        print(f"\naudio stopped {1000 * (audio_stopped_at - started_at):.0f} ms after speech.started reached the client")
        from tests.assistant.test_metrics import scrape

        metrics = await asyncio.to_thread(scrape, server.port)
        assert metrics[("assistant_voice_to_voice_seconds_count", ())] == 1, "the answer to the utterance was spoken and timed"
        assert answer[0]["type"] == "transcript.done" and "capital" in answer[0]["text"].lower()
        assert next(e for e in answer if e["type"] == "response.done")["text"] == " Paris."
        await client.send({"type": "conversation.get"})
        turns = (await client.recv_until("conversation.history"))[-1]["turns"]
        heard = [p for p in turns[1]["content"] if p["type"] == "heard"]
        assert len(heard) == 1 and heard[0]["text"].startswith("Sentence number 1")


@pytest.mark.offline_model
async def test_the_offline_voice_speaks_replies_over_the_wire_and_whisper_hears_them(start_server, connect_client, tmp_path):
    """Offline defaults' voice over /ws: five multi-sentence replies are spoken (audio before each response.done), and
    Whisper tiny.en transcribes the audio back at a mean word error rate of at most 0.25."""
    import base64

    import jiwer

    from assistant import audio
    from tests.plugins.test_piper_voice import REPLIES, normalized

    replies = [f"{REPLIES[i]} {REPLIES[(i + 3) % len(REPLIES)]}" for i in range(5)]
    config = make_config(tmp_path, engines={"speech_synthesizer": "piper"})
    first_audio = threading.Event()

    def words(request):  # a model's pace: a word every 30 ms; after its first sentence it waits for that sentence's audio
        waited = False
        for i, word in enumerate(replies.pop(0).split()):
            yield (" " if i else "") + word
            if not waited and word[-1] in ".!?":
                waited = first_audio.wait(30)  # speech streams while the text does: no deadline, no race

    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(script=words, delay_s=0.03)),))
    asr = server.app.build_engine("asr", "faster_whisper")
    spoken = list(replies)
    rates = []
    async with connect_client(server) as client:
        await client.send({"type": "session.start", "output_modalities": ["text", "audio"]})
        started = await client.recv_until("session.started")
        assert started[-1]["voices"][0]["name"] == "en_US-joe-medium"
        for text in spoken:
            first_audio.clear()
            await client.send({"type": "turn.create", "content": [{"type": "text", "text": "say something"}]})
            seen = [await client.recv()]
            while seen[-1]["type"] != "response.audio.done":
                seen.append(await client.recv())
                if seen[-1]["type"] == "response.audio.delta":
                    first_audio.set()
            types = [e["type"] for e in seen]
            assert types.index("response.audio.delta") < types.index("response.done") and seen[-1]["status"] == "completed"
            pcm = b"".join(base64.b64decode(e["data"]) for e in seen if e["type"] == "response.audio.delta")
            rate = next(e for e in seen if e["type"] == "response.audio.delta")["sample_rate"]
            heard = asr.transcribe(audio.decode(pcm, "pcm16", rate)).text
            rates.append(jiwer.wer(normalized(text), normalized(heard)))
            print(f"\nWER {rates[-1]:.2f} {text!r} -> {heard!r}")
    asr.close()
    print(f"mean WER {sum(rates) / len(rates):.3f} over {len(rates)} replies")
    assert sum(rates) / len(rates) <= 0.25


async def test_a_report_that_comes_before_the_speech_has_ended_is_kept(make_conversation):
    """The client's played report, sent the moment the user talks, is what is stored, not the server's later estimate."""
    voice = ToneVoice(pace_s=0.05)
    conversation, recorder = await make_conversation(FakeEnginesPlugin(ScriptedDialogue(script=lambda request: [" " + s for s in LONG]), voice=voice))
    conversation.speech = speech_out(conversation.app, None, None)
    conversation.create_turn(lambda: [TextIn("a long story")], GenerationOptions(), "t1")
    await recorder.wait_for(events.AudioDelta, 8)
    response_id = recorder.of(events.ReplyStarted)[0].response_id
    assert conversation.barge_in()
    await conversation.audio_played(response_id, 300, "p1")  # before AudioDone
    await settle(conversation)
    stored = (await conversation.app.store.history(conversation.id))[-1]
    assert [p.text for p in stored.parts if p.kind == "heard"] == ["Sentence number 1"]
