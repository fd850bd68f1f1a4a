"""Running `assistant serve` as a separate process, as a user (or a crash) would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import MODEL_CACHE, REPO


def write_config(tmp_path, body: str = "", server: str = "", url: str | None = None) -> str:
    """A config file on port 0 with its database in tmp_path (or at `url`); `server` adds [server] keys, `body` more tables."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[server]\nport = 0\n{server}[store]\nurl = "{url or f"sqlite:///{tmp_path}/db.sqlite"}"\n'
        f'[models]\ncache_dir = "{MODEL_CACHE}"\n' + body
    )
    return str(path)


def serve(config: str) -> tuple[subprocess.Popen, str]:
    """Start `assistant serve --config CONFIG`; returns the process and its websocket URL once it listens."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "serve", "--config", config],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"listening on (ws://\S+/ws)", line)
        if match:
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the server did not start")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, as a service manager would; returns the exit status."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)
