"""The `assistant` command: plugins, models, serve and chat as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from assistant.cli import main
from tests.conftest import REPO, make_config
from tests.processes import serve as _serve
from tests.processes import stop as _stop
from tests.processes import write_config


SLOW_COUNTER = '[engines]\ndialogue = "slow-counter"\n[plugins]\nmodules = ["tests.sample_plugin"]\n'


def test_plugins_command_lists_a_plugin_loaded_from_config(tmp_path, capsys):
    """`assistant plugins` shows a plugin named in [plugins] modules with its hooks and engine."""
    config = write_config(tmp_path, '[plugins]\nmodules = ["tests.sample_plugin"]\n')
    assert main(["plugins", "--config", config]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tests\.sample_plugin .*\n  hooks: register_engines\n  engines: dialogue:shouting-echo, dialogue:slow-counter", out, re.M)
    assert re.search(r"^transformers_dialogue 0\.1\.0\n  hooks: register_engines\n  engines: dialogue:transformers", out, re.M)


async def test_a_plugin_loaded_from_config_serves_a_turn(tmp_path, start_server, connect_client):
    """The sample plugin's engine, selected in [engines], answers a websocket turn."""
    config = make_config(tmp_path, engines={"dialogue": "shouting-echo"}, plugins={"modules": ["tests.sample_plugin"]})
    server = await start_server(config)
    async with connect_client(server) as client:
        assert (await client.start())["capabilities"]["dialogue"] == "sample:shouting-echo"
        assert (await client.say("quiet please"))[-1]["text"] == "QUIET PLEASE"


def test_models_command_reports_resolved_paths_and_failures(tmp_path, capsys):
    """`assistant models` prints each role; an unresolvable model exits 1 with what was tried."""
    config = write_config(tmp_path, '[plugins.transformers_dialogue]\nmodel = "no/such-model"\n')
    assert main(["models", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "asr: faster_whisper model 'tiny.en' -> " in out and "image_generator: no engine configured" in out
    assert "NOT FOUND" in out and "- huggingface_hub:" in out
    assert main(["models", "--config", write_config(tmp_path)]) == 0
    assert "SmolLM2-135M-Instruct" in capsys.readouterr().out


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    """A config error is printed with its key and exit status 2, without a traceback."""
    config = write_config(tmp_path, "[dialogue]\nhistory_turns = 'many'\n")
    assert main(["plugins", "--config", config]) == 2
    assert "dialogue.history_turns" in capsys.readouterr().err


def test_chat_reports_an_unreachable_server(capsys):
    """`assistant chat` against a closed port says it cannot reach the server."""
    assert main(["chat", "--url", "ws://127.0.0.1:9/ws", "--timeout", "2"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def _chat(url: str, lines: list[str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "chat", "--url", url, *args],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=180, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.offline_model
def test_new_user_flow_serve_chat_restart_resume(tmp_path):
    """serve + chat get a streamed SmolLM2 answer mentioning Paris; after a restart the conversation resumes."""
    config = write_config(tmp_path, "[plugins.transformers_dialogue]\nmax_new_tokens = 48\n")
    proc, url = _serve(config)
    try:
        out = _chat(url, ["What is the capital of France?", "/history", "/quit"])
    finally:
        assert _stop(proc) == 0
    conversation_id = re.search(r"conversation ([0-9a-f]{32})", out).group(1)
    reply = out.split("> ", 2)[1]
    assert "Paris" in reply
    assert "user: What is the capital of France?" in out and "assistant: " in out

    proc, url = _serve(config)
    try:
        out = _chat(url, ["/history", "/quit"], "--conversation", conversation_id)
    finally:
        assert _stop(proc) == 0
    assert f"conversation {conversation_id}" in out
    assert "user: What is the capital of France?" in out and re.search(r"assistant: .*Paris", out)


def test_sigint_mid_reply_cancels_it_stores_it_and_exits_cleanly(tmp_path):
    """SIGINT to `assistant serve` while a reply streams: past the grace it ends cancelled, is stored, exit 0."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    from assistant.store import Store

    proc, url = _serve(write_config(tmp_path, SLOW_COUNTER, server="shutdown_grace_s = 0.5\n"))

    async def client() -> tuple[str, dict, list]:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            conversation_id = json.loads(await ws.recv())["conversation_id"]
            await ws.send(json.dumps({"type": "turn.create", "content": [{"type": "text", "text": "count"}]}))
            events = []
            while (event := json.loads(await ws.recv()))["type"] != "response.text.delta":
                events.append(event)
            proc.send_signal(signal.SIGINT)
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                events.append(event)
            return conversation_id, event, events

    try:
        conversation_id, done, _ = asyncio.run(asyncio.wait_for(client(), 60))
    finally:
        code = proc.wait(timeout=60)
    assert code == 0
    assert done["status"] == "cancelled" and done["text"].startswith(" 1 2")
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    stored = store.history(conversation_id)
    store.close()
    assert [(t.role, t.status) for t in stored] == [("user", "completed"), ("assistant", "cancelled")]
    assert stored[1].text == done["text"]


def test_ctrl_c_in_chat_cancels_the_streaming_reply(tmp_path):
    """Ctrl-C (SIGINT) in `assistant chat` while a reply streams cancels it; the client carries on."""
    proc, url = _serve(write_config(tmp_path, SLOW_COUNTER))
    chat = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "chat", "--url", url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        chat.stdin.write("count please\n")
        chat.stdin.flush()
        seen = ""
        while " 1 2 3" not in seen:  # the reply is counting (a bare " 3" could be in the conversation id)
            seen += chat.stdout.read(1)
        chat.send_signal(signal.SIGINT)
        chat.stdin.write("/history\n/quit\n")
        chat.stdin.flush()
        out, err = chat.communicate(timeout=60)
    finally:
        chat.kill()
        _stop(proc)
    out = seen + out
    assert chat.returncode == 0, f"exit {chat.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "[cancelled]" in out
    assert re.search(r"assistant \[cancelled\]:\s+1 2 3", out)
