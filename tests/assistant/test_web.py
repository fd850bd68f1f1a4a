"""The web client in a real browser: Debian's headless Chromium driven by Playwright against a server on a free port.

A screenshot of each run is saved under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import re
import shutil
import wave
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests import images
from tests.conftest import REPO, make_config
from assistant import ToolContext
from tests.fakes import ColourNamer, FakeEnginesPlugin, ScriptedDialogue, ToneVoice, echo_script

CHROMIUM = os.environ.get("ASSISTANT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]
SPEECH = REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav"


def story_or_echo(request):
    """A long story when asked for one (to have something to stop), else the echo."""
    if "long story" in request.messages[-1].content:
        return [f"word{i} " for i in range(400)]
    return echo_script(request)


async def launch(playwright, extra_flags=()):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make setup` installs Debian's chromium package (or set ASSISTANT_CHROMIUM)")
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *extra_flags])


async def watch_page(page):
    """Fail on any script error; record every value the progress bars take (they may live only milliseconds)."""
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.add_init_script("""
        window.__progress = [];
        new MutationObserver((records) => {
          for (const r of records) if (r.target.tagName === 'PROGRESS') window.__progress.push([r.target.value, r.target.max]);
        }).observe(document, {subtree: true, attributes: true, attributeFilter: ['value']});
    """)
    return errors


async def test_chat_upload_paint_stop_and_resume_in_chromium(start_server, tmp_path, tiny_sd):
    """Text streams in, an uploaded image shows in its turn, /imagine shows progress then the picture, Stop stops, reload restores."""
    engine = ScriptedDialogue(script=story_or_echo, delay_s=0.03)
    config = make_config(
        tmp_path, engines={"dialogue": "fake", "image_generator": "diffusers"},
        plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 12, "max_steps": 100}},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page(viewport={"width": 1100, "height": 800})
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        assistant = page.locator(".message.assistant")

        await page.fill("#input", "Hello there")
        await page.press("#input", "Enter")
        await expect(assistant.last.locator(".text")).to_have_text("You said: Hello there")

        await page.set_input_files("#file-input", files=[{"name": "red.png", "mimeType": "image/png", "buffer": images.solid("red", (120, 90))}])
        await expect(page.locator(".attachment img")).to_have_count(1)
        await page.fill("#input", "What is in this picture?")
        await page.click("#send")
        await expect(page.locator(".message.user img")).to_have_count(1)
        await expect(page.locator(".attachment")).to_have_count(0)
        await expect(assistant.last.locator(".text")).to_have_text("You said: [Image 1: no description available]\nWhat is in this picture?")

        await page.fill("#input", "/imagine a red bicycle by the sea")
        await page.press("#input", "Enter")
        generated = page.locator(".image-job img.generated")
        await expect(generated).to_be_visible(timeout=60_000)
        assert await generated.evaluate("img => img.complete && img.naturalWidth") == 64
        progress = await page.evaluate("window.__progress")
        assert [value for value, _ in progress][-1] == 12 and len(progress) >= 2, progress

        await page.fill("#input", "Tell me a long story")
        await page.press("#input", "Enter")
        await expect(page.locator("#stop")).to_be_visible()
        await expect(assistant.last.locator(".text")).to_contain_text("word3")
        await page.click("#stop")
        await expect(assistant.last.locator(".note")).to_have_text("Stopped.")
        await expect(page.locator("#stop")).to_be_hidden()
        stopped_text = await assistant.last.locator(".text").inner_text()
        assert 0 < len(stopped_text.split()) < 400

        conversation_id = await page.locator("#conversation-id").inner_text()
        assert f"c={conversation_id}" in page.url
        await page.reload()
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(page.locator(".message")).to_have_count(9)
        await expect(page.locator(".message.user").first.locator(".text")).to_have_text("Hello there")
        await expect(page.locator(".message.user img")).to_have_count(1)
        await expect(page.locator(".message.assistant img")).to_have_count(1)
        await expect(assistant.last.locator(".note")).to_have_text("Stopped.")
        await expect(page.locator("#recent a.current")).to_have_text("Hello there")
        await page.screenshot(path=str(ARTIFACTS / "web-client.png"), full_page=True)
        assert errors == []
        await browser.close()
    history = await server.app.store.history(conversation_id)
    assert [t.status for t in history if t.role == "assistant"] == ["completed", "completed", "completed", "completed", "cancelled"]


async def test_errors_are_shown_in_words(start_server, tmp_path, engine):
    """A damaged image is refused in the page, a server error (too many images) is shown in words, and the page goes on."""
    server = await start_server(make_config(tmp_path, image_input={"max_images_per_turn": 1}), plugins=(FakeEnginesPlugin(engine),))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        broken = images.solid("blue", (64, 64))[:-40]
        await page.set_input_files("#file-input", files=[{"name": "broken.png", "mimeType": "image/png", "buffer": broken}])
        await expect(page.locator("#error-text")).to_have_text("Could not read broken.png: The source image could not be decoded.")
        await expect(page.locator(".attachment")).to_have_count(0)
        await page.click("#error-close")
        await expect(page.locator("#error")).to_be_hidden()
        two = [{"name": f"{c}.png", "mimeType": "image/png", "buffer": images.solid(c)} for c in ("red", "green")]
        await page.set_input_files("#file-input", files=two)
        await page.fill("#input", "look")
        await page.press("#input", "Enter")
        await expect(page.locator("#error-text")).to_have_text("Too large: content.1: at most 1 images per turn")
        await expect(page.locator(".message.user .note")).to_have_text("Not sent.")
        await page.fill("#input", "/imagine a cat")
        await page.press("#input", "Enter")
        await expect(page.locator("#error-text")).to_contain_text("Not available: this server has no image generator")
        await page.fill("#input", "still here?")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .text")).to_have_text("You said: still here?")
        await browser.close()


def padded_speech(target: Path) -> Path:
    """The spoken capital question with silence around it (so the server's VAD hears it end), as 16-bit WAV."""
    with wave.open(str(SPEECH), "rb") as source:
        rate, width, frames = source.getframerate(), source.getsampwidth(), source.readframes(source.getnframes())
    silence = lambda seconds: b"\x00" * int(rate * seconds) * width  # noqa: E731
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(silence(0.8) + frames + silence(3.0))
    target.write_bytes(buffer.getvalue())
    return target


@pytest.mark.offline_model
async def test_microphone_speech_shows_its_transcript(start_server, tmp_path):
    """With Chromium's fake microphone playing a WAV, the page streams PCM16, the server's VAD commits, and the transcript appears."""
    engine = ScriptedDialogue()
    server = await start_server(make_config(tmp_path, engines={"asr": "faster_whisper"}), plugins=(FakeEnginesPlugin(engine),))
    wav = padded_speech(tmp_path / "speech.wav")
    flags = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    async with async_playwright() as playwright:
        browser = await launch(playwright, flags)
        page = await browser.new_page()
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(page.locator("#mic")).to_be_enabled()
        await page.click("#mic")
        await expect(page.locator("#mic")).to_have_attribute("aria-pressed", "true")
        transcript = page.locator(".message.user .transcript").first
        await expect(transcript).to_have_text("What is the capital of France?", timeout=60_000)
        await expect(page.locator(".message.assistant .text").first).to_have_text("You said: What is the capital of France?")
        await page.click("#mic")
        await page.screenshot(path=str(ARTIFACTS / "web-client-microphone.png"))
        assert errors == []
        await browser.close()


def _get(port: int, path: str):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers, response.read()  # header names are case-insensitive
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


async def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    """/ serves the page, its files come with their types and a same-origin Content-Security-Policy; unknown paths 404."""
    import asyncio

    status, headers, body = await asyncio.to_thread(_get, server.port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b'src="/app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for path, kind in [("/app.js", "text/javascript"), ("/pcm-worklet.js", "text/javascript"), ("/style.css", "text/css"), ("/icon.svg", "image/svg+xml")]:
        status, headers, body = await asyncio.to_thread(_get, server.port, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    status, _, _ = await asyncio.to_thread(_get, server.port, "/secrets.txt")
    assert status == 404


async def test_a_server_with_tokens_asks_for_one_and_shows_stored_images_with_it(start_server, tmp_path):
    """The page asks for the token, remembers it, and loads stored images with it after a reload."""
    from assistant.auth import TokenFile

    _, token = TokenFile(tmp_path / "data" / "tokens.json").create("alice")
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page()
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#token-form")).to_be_visible()
        await expect(page.locator("#error-text")).to_have_text("This server needs an access token.")
        await page.fill("#token-input", "ast_wrong")
        await page.click("#token-form button")
        await expect(page.locator("#error-text")).to_contain_text("was refused")
        await page.fill("#token-input", token)
        await page.click("#token-form button")
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(page.locator("#token-form")).to_be_hidden()
        await page.set_input_files("#file-input", files=[{"name": "red.png", "mimeType": "image/png", "buffer": images.solid("red", (50, 40))}])
        await page.fill("#input", "mine")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .text")).to_have_text("You said: [Image 1: no description available]\nmine")
        await page.reload()
        await expect(page.locator("#status")).to_have_text("Connected")
        stored = page.locator(".message.user img")
        await expect(stored).to_have_count(1)
        await page.wait_for_function("img => img.complete && img.naturalWidth === 50", arg=await stored.element_handle())
        assert errors == []
        await browser.close()


async def test_the_capability_list_names_the_modalities_that_read_images(start_server, tmp_path, engine):
    """With the offline ImageNet labels on, the page's capability list says which modalities read images."""
    server = await start_server(make_config(tmp_path, plugins={"deny": ["rapid_ocr", "clip_image"]}), plugins=(FakeEnginesPlugin(engine),))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(page.locator("#capabilities")).to_contain_text("images read by: labels")
        await browser.close()


def record_frames(page) -> tuple[list[dict], list[dict]]:
    """The JSON events the page sends and receives over its websockets, as they go (binary audio frames left out)."""
    sent: list[dict] = []
    received: list[dict] = []

    def keep(into, payload):
        if isinstance(payload, str):
            into.append(json.loads(payload))

    def on_websocket(ws):
        ws.on("framesent", lambda payload: keep(sent, payload))
        ws.on("framereceived", lambda payload: keep(received, payload))

    page.on("websocket", on_websocket)
    return sent, received


async def eventually(check, timeout: float = 30.0):
    """Wait until `check()` gives something truthy, and return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return result


async def assert_heard(server, conversation_id: str, response_id: str, words: list[str], timeout: float = 10.0) -> None:
    """The stored reply gets a `heard` part of these words (within `timeout`: the page's report may still be on its way)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        turns = await server.app.store.history(conversation_id)
        heard = [(p.text or "").split() for t in turns if t.id == response_id for p in t.parts if p.kind == "heard"]
        if heard == [words] or loop.time() > deadline:
            assert heard == [words]
            return
        await asyncio.sleep(0.1)


TAP_AUDIO = """
    window.__chunks = [];  // every AudioBufferSourceNode started: [when, seconds]
    const start = AudioBufferSourceNode.prototype.start;
    AudioBufferSourceNode.prototype.start = function (when = 0, ...rest) {
      window.__chunks.push([when, this.buffer ? this.buffer.duration : 0]);
      return start.call(this, when, ...rest);
    };
"""


def spoken_sessions(received: list[dict]) -> list[dict]:
    """The session.started events that granted spoken replies."""
    return [e for e in received if e["type"] == "session.started" and "audio" in e["output_modalities"]]


async def test_the_speaker_switch_reads_replies_aloud_without_gaps(start_server, tmp_path):
    """Speaker on: the reply's speech chunks play back to back on one AudioContext, the played-ms counter reaches its length, the switch is remembered."""
    sentences = [
        "One two three four five. ", "Six seven eight nine ten eleven. ",
        "Twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty.",
    ]
    engine = ScriptedDialogue(script=lambda request: sentences, delay_s=0.01)
    config = make_config(tmp_path, engines={"speech_synthesizer": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, voice=ToneVoice()),))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page(viewport={"width": 1000, "height": 640})
        errors = await watch_page(page)
        await page.add_init_script(TAP_AUDIO)
        sent, received = record_frames(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        speaker = page.locator("#speaker")
        await expect(speaker).to_have_attribute("aria-pressed", "false")
        await expect(speaker).to_have_attribute("aria-label", "Read replies aloud")
        assert "output_modalities" not in sent[0]
        await speaker.click()  # also the gesture that lets the page play sound
        await expect(speaker).to_have_attribute("aria-pressed", "true")
        await expect(speaker).to_have_attribute("title", "Speaker on: replies are read aloud (click to turn off)")
        await eventually(lambda: spoken_sessions(received))  # the session restarted on the same conversation, asking for audio
        restart = [e for e in sent if e["type"] == "session.start"][-1]
        assert restart["output_modalities"] == ["text", "audio"] and restart["conversation_id"] == spoken_sessions(received)[0]["conversation_id"]

        await page.fill("#input", "Count to twenty")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .text")).to_have_text("".join(sentences))
        await page.wait_for_function("() => Number(document.body.dataset.audioPlayedMs) > 300 && document.body.dataset.audioPlaying === 'true'")
        await expect(page.locator("#speech-state")).to_contain_text("Speaking")
        await expect(page.locator(".message.assistant.speaking")).to_have_count(1)
        await expect(page.locator("#stop")).to_be_visible()  # the text is done, the speech goes on: Stop stops it
        await page.screenshot(path=str(ARTIFACTS / "speech-out.png"))
        done = await eventually(lambda: [e for e in received if e["type"] == "response.audio.done"])
        assert done[0]["status"] == "completed" and done[0]["duration_ms"] == 2000  # 20 words of 100 ms tone
        await expect(page.locator("body")).to_have_attribute("data-audio-playing", "false", timeout=10_000)
        assert abs(int(await page.evaluate("document.body.dataset.audioPlayedMs")) - 2000) <= 1
        await expect(page.locator("#speech-state")).to_have_text("Spoke 2.0 s")
        await expect(page.locator("#stop")).to_be_hidden()
        chunks = await page.evaluate("window.__chunks")
        deltas = [e for e in received if e["type"] == "response.audio.delta"]
        assert len(chunks) == len(deltas) == 20 and all(e["sample_rate"] == 16000 for e in deltas)
        for (start, length), (next_start, _) in itertools.pairwise(chunks):
            assert next_start == pytest.approx(start + length, abs=1e-6)  # each chunk starts where the last one ends
        assert not [e for e in sent if e["type"] == "response.audio.played"]  # played to the end: nothing to report

        await page.reload()
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(speaker).to_have_attribute("aria-pressed", "true")
        assert [e for e in sent if e["type"] == "session.start"][-1]["output_modalities"] == ["text", "audio"]

        await page.fill("#input", "Once more")  # Stop while the page still plays speech the server has all sent
        await page.press("#input", "Enter")
        await page.wait_for_function("() => Number(document.body.dataset.audioPlayedMs) > 300 && document.body.dataset.audioPlaying === 'true'")
        again = await page.evaluate("document.body.dataset.audioResponse")
        await page.click("#stop")
        await expect(page.locator("body")).to_have_attribute("data-audio-playing", "false")
        await expect(page.locator("#stop")).to_be_hidden()
        report = (await eventually(lambda: [e for e in sent if e["type"] == "response.audio.played"]))[-1]
        assert report["response_id"] == again and 300 < report["ms"] < 2000
        conversation_id = await page.locator("#conversation-id").inner_text()
        words = " ".join(sentences).split()[: report["ms"] // 100]  # ToneVoice says a word in 100 ms
        await assert_heard(server, conversation_id, again, words)
        assert errors == []
        await browser.close()


@pytest.mark.offline_model
async def test_talking_over_a_spoken_reply_stops_it_in_the_page(start_server, tmp_path):
    """Chromium's fake microphone talks over a reply read aloud: playback stops, the page reports what it played (stored as heard), the question is answered."""
    story = [f"Sentence number {i} is here. " for i in range(1, 21)]  # 100 words: 10 s of speech
    engine = ScriptedDialogue(script=lambda request: story if "story" in request.messages[-1].content else echo_script(request))
    config = make_config(tmp_path, engines={"asr": "faster_whisper", "speech_synthesizer": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine, voice=ToneVoice(pace_s=0.1)),))
    wav = padded_speech(tmp_path / "speech.wav")
    flags = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    async with async_playwright() as playwright:
        browser = await launch(playwright, flags)
        page = await browser.new_page(viewport={"width": 1000, "height": 720})
        errors = await watch_page(page)
        sent, received = record_frames(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await page.click("#speaker")
        await eventually(lambda: spoken_sessions(received))
        await page.fill("#input", "Tell me a story")
        await page.press("#input", "Enter")
        await page.wait_for_function("() => Number(document.body.dataset.audioPlayedMs) > 500 && document.body.dataset.audioPlaying === 'true'")
        story_id = await page.evaluate("document.body.dataset.audioResponse")

        await page.click("#mic")  # the fake microphone's WAV: 0.8 s of silence, then the question
        await eventually(lambda: [e for e in received if e["type"] == "speech.started"], timeout=60)
        await expect(page.locator("body")).to_have_attribute("data-audio-playing", "false")
        await expect(page.locator("#speech-state")).to_contain_text("Stopped after")
        reports = await eventually(lambda: [e for e in sent if e["type"] == "response.audio.played"])
        assert reports[0]["response_id"] == story_id and 500 < reports[0]["ms"] < 10_000
        played_ms = reports[0]["ms"]
        assert played_ms == int(await page.evaluate("document.body.dataset.audioPlayedMs"))
        cut = await eventually(lambda: [e for e in received if e["type"] == "response.audio.done"])
        assert cut[0]["response_id"] == story_id and cut[0]["status"] == "cancelled" and cut[0]["duration_ms"] < 10_000
        stopped = page.locator(".message.assistant .heard")
        await expect(stopped).to_have_text(re.compile(r"Stopped reading aloud after \d+\.\d s\."))
        assert float((await stopped.inner_text()).split()[-2]) == pytest.approx(played_ms / 1000, abs=0.051)

        transcript = page.locator(".message.user .transcript").first
        await expect(transcript).to_have_text("What is the capital of France?", timeout=60_000)
        await expect(page.locator(".message.assistant .text").last).to_have_text("You said: What is the capital of France?")
        await page.click("#mic")
        reports = [e for e in sent if e["type"] == "response.audio.played" and e["response_id"] == story_id]
        assert {e["ms"] for e in reports} == {played_ms}  # said at the cut, and again after its response.audio.done
        conversation_id = await page.locator("#conversation-id").inner_text()
        # What the page played, in words: ToneVoice says a word in 100 ms, so the stored heard part has
        # ms // 100 words when it comes from the page's report (the server alone stores what it had sent).
        words = "".join(story).split()[: played_ms // 100]
        await assert_heard(server, conversation_id, story_id, words)

        await page.reload()
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(stopped).to_have_text(f"Read aloud until you spoke: “{'… ' if len(words) > 8 else ''}{' '.join(words[-8:])}”")
        await page.screenshot(path=str(ARTIFACTS / "speech-out-barge-in.png"))
        assert errors == []
        await browser.close()


async def test_the_speaker_switch_is_disabled_without_a_speech_synthesizer(start_server, tmp_path, engine):
    """On a server that cannot speak, the switch is disabled with a title saying why, even when it was left on, and text goes on."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page()
        errors = await watch_page(page)
        sent, received = record_frames(page)
        await page.add_init_script("localStorage.setItem('assistant.speaker', 'on')")  # left on, e.g. on another server
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        speaker = page.locator("#speaker")
        await expect(speaker).to_be_disabled()
        await expect(speaker).to_have_attribute("title", "No speech synthesizer on this server, so replies cannot be read aloud")
        await expect(speaker).to_have_attribute("aria-pressed", "false")
        starts = [e for e in sent if e["type"] == "session.start"]
        assert starts[0]["output_modalities"] == ["text", "audio"] and "output_modalities" not in starts[-1]
        assert [e["code"] for e in received if e["type"] == "error"] == ["unavailable"]
        assert received[-1]["type"] == "session.started" and received[-1]["voices"] == [] and received[-1]["capabilities"]["speech_synthesizer"] is None
        await expect(page.locator("#error")).to_be_hidden()
        await page.fill("#input", "still fine?")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .text")).to_have_text("You said: still fine?")
        await expect(page.locator("body")).to_have_attribute("data-audio-playing", "false")
        assert errors == []
        await browser.close()


class SlowNamer(ColourNamer):
    """A modality that takes a while, so that the reply to an image starts after the user's next message was sent."""

    def describe(self, image):
        import time

        time.sleep(1.0)
        return super().describe(image)


async def test_replies_stay_below_their_questions_and_a_cut_reply_says_so(start_server, tmp_path):
    """A message sent before the previous reply started is drawn after that reply, and a reply cut at the token limit carries a note."""
    engine = ScriptedDialogue(delay_s=0.02, finish_reason="length")
    server = await start_server(plugins=(FakeEnginesPlugin(engine, modalities={"slow": SlowNamer()}),))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page(viewport={"width": 1000, "height": 700})
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await page.set_input_files("#file-input", files=[{"name": "red.png", "mimeType": "image/png", "buffer": images.solid("red")}])
        await expect(page.locator(".attachment")).to_have_count(1)
        await page.fill("#input", "first question")
        await page.press("#input", "Enter")
        await page.fill("#input", "second question")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant:not(.streaming)")).to_have_count(2)
        texts = await page.locator(".message > .text").all_text_contents()
        assert texts == ["first question", "You said: [Image 1: mostly red, 48x40]\nfirst question", "second question", "You said: second question"]
        await expect(page.locator(".message.assistant .note").first).to_have_text("Cut off at the token limit: ask it to go on for more.")
        await page.screenshot(path=str(ARTIFACTS / "web-order-and-length.png"))
        await browser.close()
    assert not errors, errors


async def test_at_phone_width_a_menu_opens_the_sidebar_and_errors_clear_on_a_new_start(start_server, tmp_path, engine):
    """At 390x844 the menu button opens the conversations; an error banner goes when a new conversation starts and when the page reconnects."""
    config = make_config(tmp_path)
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    port = server.port
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await expect(page.locator("#sidebar")).to_be_hidden()
        await page.fill("#input", "/imagine a cat")
        await page.press("#input", "Enter")
        await expect(page.locator("#error")).to_be_visible()
        await page.click("#menu")
        await expect(page.locator("#sidebar")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "web-phone-sidebar.png"))
        await page.mouse.click(350, 420)  # beside it: closes it
        await expect(page.locator("#sidebar")).to_be_hidden()
        await page.click("#menu")
        await page.click("#new-conversation")
        await expect(page.locator("#sidebar")).to_be_hidden()
        await expect(page.locator("#error")).to_be_hidden()

        await page.fill("#input", "/imagine a dog")
        await page.press("#input", "Enter")
        await expect(page.locator("#error")).to_be_visible()
        await server.shutdown(grace_s=0)
        await expect(page.locator("#status")).to_have_text("Disconnected; reconnecting…")
        await start_server(make_config(tmp_path, server={"port": port}), plugins=(FakeEnginesPlugin(engine),))
        await expect(page.locator("#status")).to_have_text("Connected", timeout=30000)
        await expect(page.locator("#error")).to_be_hidden()
        await page.screenshot(path=str(ARTIFACTS / "web-phone-reconnected.png"))
        await browser.close()
    assert not [e for e in errors if "WebSocket" not in e], errors  # the refused reconnection attempts are logged by the browser


def launch_rocket(target: str) -> dict:
    """Launch a rocket (asks the user first).

    Args:
        target: where to fly
    """
    return {"launched": target}


def user_zone(ctx: ToolContext) -> str:
    """The user's time zone."""
    return str(ctx.timezone)


async def test_tool_calls_show_as_cards_with_approve_and_decline(start_server, tmp_path):
    """A tool call that needs confirmation shows as a card with Approve/Decline; approving shows its result; reload keeps the card."""
    from tests.fakes import ToolCallingDialogue

    plugin = FakeEnginesPlugin(ToolCallingDialogue(), tools=[(launch_rocket, {"requires_confirmation": True}), user_zone])
    server = await start_server(make_config(tmp_path), plugins=(plugin,))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await browser.new_page(viewport={"width": 900, "height": 600}, timezone_id="Asia/Tokyo")
        errors = await watch_page(page)
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await expect(page.locator("#status")).to_have_text("Connected")
        await page.fill("#input", 'Please launch_rocket {"target": "the moon"}')
        await page.press("#input", "Enter")
        card = page.locator(".message.assistant .tool-card").first
        await expect(card.locator(".tool-title")).to_contain_text("launch_rocket")
        await expect(card.locator(".tool-args")).to_have_text('{"target":"the moon"}')
        await expect(card.locator(".tool-status")).to_have_text("needs your approval")
        await expect(card.locator("button.decline")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "tool-card.png"))
        await card.locator("button.approve").click()
        await expect(card.locator(".tool-status")).to_have_text("done")
        await expect(card.locator(".tool-result")).to_have_text('{"launched":"the moon"}')
        await expect(card.locator("button")).to_have_count(0)
        reply = page.locator(".message.assistant .text").last
        await expect(reply).to_have_text('The launch_rocket tool said: {"launched": "the moon"}')
        await page.screenshot(path=str(ARTIFACTS / "tool-card-done.png"))

        await page.fill("#input", "What is my user_zone?")
        await page.press("#input", "Enter")
        await expect(page.locator(".message.assistant .tool-card .tool-result").last).to_have_text("Asia/Tokyo")

        await page.reload()
        await expect(page.locator(".message.assistant .tool-card .tool-result").first).to_have_text('{"launched":"the moon"}')
        assert errors == []
        await browser.close()
