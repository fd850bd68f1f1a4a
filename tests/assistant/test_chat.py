"""`assistant chat` as a user runs it: a subprocess fed typed lines, against a real server."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests import images
from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue


async def chat(server, lines: list[str], cwd) -> subprocess.CompletedProcess:
    """Run `assistant chat` with these lines on its standard input."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "assistant.cli", "chat", "--url", f"ws://127.0.0.1:{server.port}/ws", "--save-dir", "pictures"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=180, cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


async def test_image_attach_imagine_and_routed_drawing(start_server, tmp_path, tiny_sd):
    """/image goes with the next line; /imagine and "draw ..." show a progress bar and save their PNGs; bad paths are explained."""
    engine = ScriptedDialogue()
    config = make_config(
        tmp_path, engines={"dialogue": "fake", "image_generator": "diffusers"},
        plugins={"diffusers_image": {"model": str(tiny_sd), "default_steps": 5}},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    (tmp_path / "red.png").write_bytes(images.solid("red"))
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "fake.png").write_text("not a picture either")
    result = await chat(server, [
        "/image red.png", "What is this?", "/imagine a red bicycle", "draw a blue boat",
        "/image missing.png", "/image notes.txt", "/image fake.png", "and this?", "/audio", "/bogus", "/quit",
    ], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "attached red.png (" in out
    assert engine.requests[0].messages[-1].content == "[Image 1: no description available]\nWhat is this?"
    saved = re.findall(r"image saved: (\S+\.png) \(seed \d+\)", out)
    assert len(saved) == 2, out
    for path in saved:
        assert Image.open(tmp_path / path).size == (64, 64)
    assert result.stderr.count("painting: 100%|") >= 2 and "5/5" in result.stderr, "a progress bar per job, left at its end"
    assert "no such file: missing.png" in out and "not an image file: notes.txt" in out
    assert "error (bad_request): content.0: the data is not an image" in out
    assert "usage: /audio PATH" in out and "commands: /image PATH" in out
    assert len(engine.requests) == 1, "the refused turn never reached the engine"


def launch_rocket(target: str) -> dict:
    """Launch a rocket (asks the user first).

    Args:
        target: where to fly
    """
    return {"launched": target}


async def test_tool_calls_are_shown_and_confirmation_is_asked(start_server, tmp_path):
    """A tool call and its result are printed; a call that needs confirmation asks, and the answer goes to the server."""
    from tests.fakes import ToolCallingDialogue

    plugin = FakeEnginesPlugin(ToolCallingDialogue(), tools=[(launch_rocket, {"requires_confirmation": True})])
    server = await start_server(make_config(tmp_path), plugins=(plugin,))
    line = 'launch_rocket {"target": "mars"}'
    result = await chat(server, [line, "y", line, "n", "/quit"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count('(tool launch_rocket {"target": "mars"})') == 2 and out.count("run launch_rocket? [y/N]") == 2
    assert '(tool launch_rocket ok: {"launched": "mars"})' in out and 'The launch_rocket tool said: {"launched": "mars"}' in out
    assert "(tool launch_rocket declined: the user declined to run launch_rocket" in out


@pytest.mark.offline_model
async def test_audio_file_is_transcribed_and_answered(start_server, tmp_path):
    """/audio sends a WAV; the transcript and the reply are printed."""
    server = await start_server(make_config(tmp_path, engines={"asr": "faster_whisper"}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    wav = REPO / "tests" / "data" / "speech" / "what_is_the_capital_of_france.wav"
    (tmp_path / "song.xyz").write_bytes(b"\x00" * 64)
    result = await chat(server, [f"/audio {wav}", "/audio song.xyz", "/quit"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(you said) What is the capital of France?" in result.stdout
    assert "You said: What is the capital of France?" in result.stdout
    assert "not a recording this client sends: song.xyz" in result.stdout


async def test_a_reply_cut_at_the_token_limit_says_so(start_server, connect_client, tmp_path):
    """response.done carries finish_reason "length" for a reply cut at the token limit, and the terminal client (given the web page's http:// address) notes it."""
    from assistant.chat import LENGTH_NOTE

    server = await start_server(plugins=(FakeEnginesPlugin(ScriptedDialogue(finish_reason="length")),))
    async with connect_client(server) as client:
        await client.start()
        done = (await client.say("tell me everything"))[-1]
        assert done["status"] == "completed" and done["finish_reason"] == "length"
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "assistant.cli", "chat", "--url", f"http://127.0.0.1:{server.port}/"],
        input="tell me everything\n/quit\n", capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert f"You said: tell me everything  {LENGTH_NOTE}" in result.stdout


async def test_a_reply_that_ends_normally_says_stop(server, connect_client):
    """An ordinary reply's response.done says finish_reason "stop" and prints no note."""
    async with connect_client(server) as client:
        await client.start()
        assert (await client.say("hello"))[-1]["finish_reason"] == "stop"
