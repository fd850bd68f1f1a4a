"""Tools as plugins register them: schemas from type hints and docstrings, toolboxes, argument checks, bad registrations."""

from __future__ import annotations

import datetime
from typing import Literal

import pytest
from pydantic import BaseModel

from assistant import ToolContext
from assistant.tools import ToolError, add_tools, make_tools, toolbox_name


class Point(BaseModel):
    x: float
    y: float


def plot(points: list[Point], title: str | None = None, style: Literal["line", "dots"] = "line", when: datetime.date | None = None) -> str:
    """Plot some points.

    More words that are not the description.

    Args:
        points: the points, in order
        title: a title for the plot
        style: how to draw them
        when: the day the data is from
    """
    return f"{len(points)} {type(points[0]).__name__} {style} {when!r}"


def test_a_function_schema_comes_from_its_hints_and_docstring():
    """Types, enums, defaults, optional values, nested models and argument docs make the JSON Schema; the first paragraph the description."""
    (tool,) = make_tools(plot, plugin="p")
    assert tool.name == "plot" and tool.description == "Plot some points.\n\nMore words that are not the description."
    schema = tool.parameters
    assert schema["required"] == ["points"] and schema["additionalProperties"] is False
    assert schema["properties"]["style"] == {"default": "line", "description": "how to draw them", "enum": ["line", "dots"], "type": "string"}
    assert schema["properties"]["points"]["items"] == {"$ref": "#/$defs/Point"} and "title" not in schema
    assert schema["properties"]["title"]["description"] == "a title for the plot"
    assert schema["properties"]["when"]["anyOf"][0] == {"format": "date", "type": "string"}


def test_arguments_are_checked_against_the_schema_then_converted():
    """Valid JSON arguments become Python values (models, dates); invalid ones raise a message naming the fields."""
    (tool,) = make_tools(plot)
    arguments = tool.check_arguments({"points": [{"x": 1, "y": 2}], "when": "2026-01-02"})
    assert isinstance(arguments["points"][0], Point) and arguments["when"] == datetime.date(2026, 1, 2) and arguments["style"] == "line"
    assert tool.function(**arguments) == "1 Point line datetime.date(2026, 1, 2)"
    with pytest.raises(ValueError, match=r"points.0: 'y' is a required property"):
        tool.check_arguments({"points": [{"x": 1}]})
    with pytest.raises(ValueError, match="when: time data|when: Input should be a valid date"):
        tool.check_arguments({"points": [], "when": "not a date"})
    with pytest.raises(ValueError, match="must be a JSON object, not list"):
        tool.check_arguments([1])
    with pytest.raises(ValueError, match=r"plot takes: points \(array, required\), title \(string or null\), style \(string\), when \(string or null\)"):
        tool.check_arguments({})


class SmartHome:
    """A toolbox with two tools and a private helper."""

    def lights(self, on: bool, ctx: ToolContext) -> str:
        """Switch the lights.

        Args:
            on: lights on or off
        """
        return f"{ctx.principal}: {on}"

    async def temperature(self) -> float:
        """The room temperature."""
        return 21.5

    def _helper(self) -> None:
        """Not a tool."""


class Named:
    name = "garden"

    def water(self, minutes: int) -> str:
        """Water the garden.

        Args:
            minutes: for how long
        """
        return "ok"


def test_a_toolbox_gives_one_tool_per_public_method():
    """Public methods become `<toolbox>_<method>`; the toolbox name is the class attribute or the class name in snake_case."""
    tools = make_tools(SmartHome(), timeout_s=3, requires_confirmation=True, plugin="home")
    assert [t.name for t in tools] == ["smart_home_lights", "smart_home_temperature"]
    assert all(t.timeout_s == 3 and t.requires_confirmation and t.plugin == "home" for t in tools)
    assert tools[0].context_parameter == "ctx" and list(tools[0].parameters["properties"]) == ["on"]
    assert toolbox_name(Named()) == "garden" and [t.name for t in make_tools(Named())] == ["garden_water"]
    assert [t.name for t in make_tools(Named(), name="yard")] == ["yard_water"]


def no_doc(x: int) -> int:
    return x


def no_hint(x) -> int:
    """No hint."""
    return x


def star(*values: int) -> int:
    """Star args."""
    return 0


def same(x: int) -> int:
    """Same name."""
    return x


@pytest.mark.parametrize(
    ("obj", "options", "needle"),
    [
        (no_doc, {}, "has no docstring"),
        (no_hint, {}, "parameter 'x' has no type hint"),
        (star, {}, r"\*values cannot be described"),
        (same, {"name": "bad name!"}, "a tool name is 1 to 64 letters"),
        (same, {"timeout_s": 0}, "timeout_s must be a positive number"),
        (SmartHome, {}, "register a toolbox instance, not the class SmartHome"),
        (object(), {}, "has no public methods"),
    ],
)
def test_bad_registrations_are_refused_with_a_clear_error(obj, options, needle):
    """Functions the model could not call well, bad names and timeouts, and classes instead of instances are refused."""
    with pytest.raises(ToolError, match=needle):
        make_tools(obj, plugin="p", **options)


def test_duplicate_names_are_refused():
    """Adding a tool whose name is taken names both plugins."""
    registry: dict = {}
    add_tools(registry, make_tools(same, plugin="one"))
    with pytest.raises(ToolError, match="tool 'same' registered twice: by 'one' and by 'two'"):
        add_tools(registry, make_tools(same, plugin="two"))


def test_the_documented_example_plugin_registers_and_runs(tmp_path):
    """The register_tools example in docs/plugins.md is a working plugin: its function and toolbox register and run."""
    import re
    import types
    from zoneinfo import ZoneInfo

    from assistant.app import App
    from tests.conftest import REPO, make_config

    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = docs.split("### `register_tools(register)`", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("documented_tools")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    app = App.prepare(make_config(tmp_path), [module])
    assert list(app.tools) == ["days_until", "thermostat_set", "thermostat_read"]
    assert app.tools["thermostat_set"].requires_confirmation and app.tools["thermostat_set"].timeout_s == 5
    zone = ZoneInfo("UTC")
    ctx = ToolContext("me", None, zone, datetime.datetime(2026, 1, 1, tzinfo=zone), app)
    days = app.tools["days_until"]
    assert days.function(**days.check_arguments({"date": "2026-01-11"}), ctx=ctx) == {"days": 10, "confirmation": "10 days to go."}
    thermostat = app.tools["thermostat_set"]
    assert thermostat.function(**thermostat.check_arguments({"celsius": 22})) == "living set to 22.0 °C"
    assert app.tools["thermostat_read"].function() == 22.0
