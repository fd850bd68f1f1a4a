"""docs/architecture.md's example dialect is complete: it imports, serves its route, and answers a turn."""

from __future__ import annotations

import asyncio
import re
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

from assistant import dialects
from tests.conftest import make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


def example_source() -> str:
    """The python block of the 'Adding a dialect' section."""
    section = DOC.read_text().split("## Adding a dialect", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def post(port: int, path: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_the_documented_dialect_answers_a_turn(start_server, tmp_path, monkeypatch):
    """The example, loaded as a module and named in [server] dialects, answers POST /plain with the engine's reply."""
    module = types.ModuleType("example_plaintext_dialect")
    exec(compile(example_source(), str(DOC), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(dialects.DIALECTS, "plaintext", f"{module.__name__}:PlainTextDialect")
    config = make_config(tmp_path, server={"dialects": ["native", "plaintext"]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert await asyncio.to_thread(post, server.port, "/plain", b"hello docs") == (200, "You said: hello docs\n")
    status, _ = await asyncio.to_thread(post, server.port, "/plain", b"   ")
    assert status == 500
