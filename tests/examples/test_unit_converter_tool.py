"""The example tool package under examples/: installed with pip, found through its entry point, called by a model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_config
from tests.fakes import FakeEnginesPlugin, ToolCallingDialogue


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """examples/unit-converter-tool installed by pip (from its own pyproject.toml) into a folder of its own."""
    source = tmp_path_factory.mktemp("src") / "unit-converter-tool"
    shutil.copytree(REPO / "examples" / "unit-converter-tool", source)  # the build leaves files beside the sources
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True, timeout=300,
    )
    assert list(target.glob("assistant_unit_converter_tool-*.dist-info/entry_points.txt"))
    return target


async def test_the_installed_package_adds_tools_a_model_calls(installed, monkeypatch, start_server, connect_client, tmp_path):
    """With the package on the path its tools are registered; the model's call runs and a bad conversion comes back as an error."""
    monkeypatch.syspath_prepend(str(installed))
    engine = ToolCallingDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    tools = server.app.tools
    assert {name: tool.plugin for name, tool in tools.items()} == {"convert_units": "unit_converter", "convert_temperature": "unit_converter"}
    assert tools["convert_units"].parameters["properties"]["from_unit"]["enum"][:3] == ["mm", "cm", "m"]
    async with connect_client(server) as client:
        await client.start()
        frames = await client.say('How far is convert_units {"value": 5, "from_unit": "km", "to_unit": "mi"}?')
        result = next(f for f in frames if f["type"] == "tool.result")
        assert result["status"] == "ok" and result["result"]["value"] == pytest.approx(3.106856)
        assert frames[-1]["text"].startswith('The convert_units tool said: {"value": 3.106856, "unit": "mi"')
        frames = await client.say('convert_units {"value": 5, "from_unit": "km", "to_unit": "kg"}')
        result = next(f for f in frames if f["type"] == "tool.result")
        assert result["status"] == "error" and "cannot convert km to kg" in result["error"] and frames[-1]["status"] == "completed"
        frames = await client.say('convert_temperature {"value": 100, "from_unit": "C", "to_unit": "F"}')
        assert next(f for f in frames if f["type"] == "tool.result")["result"]["value"] == 212.0


async def test_without_the_package_there_are_no_such_tools(start_server, tmp_path):
    """The tools come from the installed package alone: off the path, they are not there."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ToolCallingDialogue()),))
    assert "convert_units" not in server.app.tools
