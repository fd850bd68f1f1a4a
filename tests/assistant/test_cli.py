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


def test_a_taken_port_is_one_clear_line_before_any_model_loads(tmp_path):
    """`assistant serve` on a port another socket holds exits 2 with one line saying what to do, having loaded no model."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, "[plugins.transformers_dialogue]\nmodel = \"/no/such/model/would/fail/to/load\"\n")
        run = subprocess.run([sys.executable, "-m", "assistant.cli", "serve", "--config", config, "--port", str(port)],
                             capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith(f"assistant: cannot listen on 127.0.0.1:{port}: ") and "choose another port with --port or [server] port" in lines[0]


def test_serve_prints_the_web_pages_address(tmp_path):
    """The startup line names the web page (http://HOST:PORT/) besides the websocket."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    config = write_config(tmp_path, '[engines]\ndialogue = "shouting-echo"\nasr = ""\nspeech_synthesizer = ""\n'
                                    '[plugins]\nmodules = ["tests.sample_plugin"]\ndeny = ["rapid_ocr", "imagenet_labels", "clip_image"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "assistant.cli", "serve", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
    finally:
        proc.kill()  # (its clean stop is test_sigint_mid_reply_...'s subject)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert re.fullmatch(r"assistant: listening on ws://127\.0\.0\.1:(\d+)/ws; web page http://127\.0\.0\.1:\1/ \(Ctrl-C to stop\)\n", line), line


@pytest.mark.parametrize(("given", "expected"), [
    ("http://127.0.0.1:8765/", "ws://127.0.0.1:8765/ws"),
    ("https://assistant.example:443", "wss://assistant.example:443/ws"),
    ("http://host:1/ws?x=1", "ws://host:1/ws?x=1"),
    ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765/ws"),
])
def test_chat_takes_the_web_pages_http_address(given, expected):
    """`assistant chat --url http://...` (the address the server prints for the web page) is turned into its websocket URL."""
    from assistant.chat import websocket_url

    assert websocket_url(given) == expected


def test_chat_refuses_a_url_it_cannot_use_in_one_line(capsys):
    """A URL with another scheme or no host is one clear line and exit 2, no traceback."""
    assert main(["chat", "--url", "ftp://127.0.0.1/ws"]) == 2
    assert main(["chat", "--url", "127.0.0.1:8765"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("give the server's address as ws://HOST:PORT/ws" in line for line in err)


def test_every_option_has_help_and_shows_its_default():
    """Each option of each command has help text, and a default (where there is one) shows in --help."""
    import argparse

    from assistant.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    for parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{parser.prog} {action.option_strings or action.dest}: no help text"
        assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter, parser.prog
        help_text = "".join(parser.format_help().split())  # wrapped lines joined
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.dest != "token":
                assert f"(default:{action.default})".replace(" ", "") in help_text, f"{parser.prog} {action.option_strings}: default not shown"


def test_the_readme_shows_the_chat_banner_the_client_prints():
    """README.md's sample `assistant chat` session opens with the banner `assistant chat` prints today."""
    from assistant.chat import HELP

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    banner = f"conversation 4a878c8f3de2483eb304e7810677e93d  ({HELP.removeprefix('commands: ')}; Ctrl-C stops a reply)"
    assert banner in readme
