"""Server-side tools: what plugins register with `register_tools`, as the core keeps and checks them.

A plugin registers plain functions, or a toolbox (an object whose public methods are tools), in the
style of simonw/llm. A function's type hints and its Google-style docstring become the tool's JSON
Schema: pydantic builds the schema from the signature, and transformers' docstring parser supplies
the description of the tool and of each argument. A parameter annotated `ToolContext` is filled by
the core with the call's context and is not part of the schema.

The tool-call loop (`assistant.tool_loop`) validates a call's arguments against the schema with
`jsonschema`, then converts them with the same pydantic model before calling the function.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema

from assistant.engines import ToolSpec
from assistant.events import Event
from assistant.types import AppView, ConversationView

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a tool name may be: what the OpenAI API and chat templates accept."""
DEFAULT_TIMEOUT_S = 10.0


class ToolError(ValueError):
    """A tool could not be registered: the message says which and why."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool learns about the call it serves; declare a parameter of this type to receive it.

    `app` is the running app (an `assistant.app.App`; typed as the plugin view `AppView`, so use
    `typing.cast(App, ctx.app)` for its store or scheduler). `conversation` is the conversation the
    call is made in (an `assistant.scope.ConversationScope`), or None outside one. `now` is aware,
    in `timezone` (the session's, else `[dialogue] timezone`, else UTC), taken when the call started.
    """

    principal: str
    conversation_id: str | None
    timezone: ZoneInfo
    now: datetime
    app: AppView
    conversation: ConversationView | None = None
    call_id: str = ""

    async def emit(self, event: Event) -> None:
        """Publish a domain event to the conversation (to every follower, numbered); nothing outside one."""
        if self.conversation is not None:
            await self.conversation.publish(event)


class _NoTitles(GenerateJsonSchema):
    """JSON Schema without pydantic's generated titles (the model reads names and descriptions)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@dataclass(frozen=True)
class Tool:
    """One registered tool: name, description, JSON Schema of its arguments, and the function that runs it.

    `function` is sync (run on a worker thread of its own) or async; it returns JSON-serialisable data.
    A dict result with the key `"confirmation"` carries the sentence a fast-path route says to the user.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    timeout_s: float = DEFAULT_TIMEOUT_S
    requires_confirmation: bool = False
    plugin: str = ""
    context_parameter: str | None = None  # the function's ToolContext parameter, if it has one
    arguments_model: type[BaseModel] | None = field(default=None, repr=False, compare=False)

    def spec(self) -> ToolSpec:
        """The tool as the dialogue engine is offered it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def check_arguments(self, arguments: Any) -> dict[str, Any]:
        """The arguments converted for the function; ValueError saying what is wrong (and which fields exist)."""
        if not isinstance(arguments, dict):
            raise ValueError(f"the arguments must be a JSON object, not {type(arguments).__name__}")
        errors = sorted(jsonschema.Draft202012Validator(self.parameters).iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors[:5])
            raise ValueError(f"{problems}. {self.describe_fields()}")
        if self.arguments_model is None:
            return dict(arguments)
        try:
            checked = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"{problems}. {self.describe_fields()}") from None
        return {name: getattr(checked, name) for name in type(checked).model_fields}

    def describe_fields(self) -> str:
        """A sentence naming the tool's argument fields and which are required, for error messages to the model."""
        properties = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        if not properties:
            return f"{self.name} takes no arguments."
        listed = ", ".join(f"{name} ({_type_name(prop)}{', required' if name in required else ''})" for name, prop in properties.items())
        return f"{self.name} takes: {listed}."


def _type_name(schema: dict[str, Any]) -> str:
    """A property's JSON type for people and models: `string`, `integer or null`, `object` for a model."""
    if "type" in schema:
        return str(schema["type"])
    if "anyOf" in schema:
        return " or ".join(_type_name(option) for option in schema["anyOf"])
    return "object" if "$ref" in schema else "any"


def tool_from_function(
    function: Callable[..., Any], *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
    requires_confirmation: bool = False, plugin: str = "",
) -> Tool:
    """A Tool for a plain function (or bound method): schema from its type hints, descriptions from its docstring.

    Raises ToolError for a function the model could not call well: no docstring, a parameter without a
    type hint, `*args`/`**kwargs`, a bad name or timeout.
    """
    from transformers.utils.chat_template_utils import parse_google_format_docstring

    tool_name: str = name or str(getattr(function, "__name__", ""))
    where = f"plugin {plugin!r}: tool {tool_name!r}" if plugin else f"tool {tool_name!r}"
    if not TOOL_NAME.match(tool_name):
        raise ToolError(f"{where}: a tool name is 1 to 64 letters, digits, '_' or '-'")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ToolError(f"{where}: timeout_s must be a positive number of seconds, got {timeout_s!r}")
    doc = inspect.getdoc(function)
    if not doc:
        raise ToolError(f"{where}: the function has no docstring; its first paragraph is the description the model reads")
    description, argument_docs, _ = parse_google_format_docstring(doc)
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:
        raise ToolError(f"{where}: its type hints cannot be resolved: {exc}") from None
    context_parameter = None
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolError(f"{where}: *{parameter.name} cannot be described to a model; name each argument")
        hint = hints.get(parameter.name)
        if hint is ToolContext or (typing.get_origin(hint) in (typing.Union, types.UnionType) and ToolContext in typing.get_args(hint)):
            context_parameter = parameter.name
            continue
        if hint is None:
            raise ToolError(f"{where}: parameter {parameter.name!r} has no type hint")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hint, Field(default, description=(argument_docs or {}).get(parameter.name)))
    try:
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema(schema_generator=_NoTitles)
    except Exception as exc:
        raise ToolError(f"{where}: its arguments cannot be described as JSON Schema: {exc}") from None
    schema.pop("title", None)
    schema.setdefault("properties", {})
    return Tool(
        name=tool_name, description=(description or doc).strip(), parameters=schema, function=function,
        timeout_s=float(timeout_s), requires_confirmation=requires_confirmation, plugin=plugin,
        context_parameter=context_parameter, arguments_model=model,
    )


def toolbox_name(toolbox: object) -> str:
    """A toolbox's name: its class attribute `name`, else its class name in snake_case."""
    declared = getattr(type(toolbox), "name", None)
    if isinstance(declared, str) and declared:
        return declared
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(toolbox).__name__).lower()


def tools_from_toolbox(
    toolbox: object, *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
    requires_confirmation: bool = False, plugin: str = "",
) -> list[Tool]:
    """One Tool per public method of `toolbox` (in the order the class defines them), named `<toolbox name>_<method>`."""
    prefix = name or toolbox_name(toolbox)
    names = dict.fromkeys(name for cls in reversed(type(toolbox).__mro__[:-1]) for name in vars(cls))  # definition order
    methods = [
        (method_name, getattr(toolbox, method_name)) for method_name in names
        if not method_name.startswith("_") and inspect.ismethod(getattr(toolbox, method_name, None))
    ]
    if not methods:
        raise ToolError(f"plugin {plugin!r}: toolbox {prefix!r} has no public methods to offer as tools")
    return [
        tool_from_function(member, name=f"{prefix}_{method_name}", timeout_s=timeout_s, requires_confirmation=requires_confirmation, plugin=plugin)
        for method_name, member in methods
    ]


def make_tools(
    obj: Any, *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, requires_confirmation: bool = False, plugin: str = "",
) -> list[Tool]:
    """What one `register(...)` call adds: a function becomes one tool, a toolbox instance one per public method."""
    if isinstance(obj, type):
        raise ToolError(f"plugin {plugin!r}: register a toolbox instance, not the class {obj.__name__}")
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return [tool_from_function(obj, name=name, timeout_s=timeout_s, requires_confirmation=requires_confirmation, plugin=plugin)]
    if callable(obj) and not inspect.getmembers(obj, inspect.ismethod):
        raise ToolError(f"plugin {plugin!r}: {obj!r} is neither a function nor a toolbox")
    return tools_from_toolbox(obj, name=name, timeout_s=timeout_s, requires_confirmation=requires_confirmation, plugin=plugin)


def tool_message_content(status: str, result: Any, error: str | None) -> str:
    """What the model reads for a tool's outcome: the result (a string as it is, else JSON), or an error it can act on."""
    if status == "ok":
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    return f"Error ({status}): {error}"


def add_tools(registry: dict[str, Tool], tools: list[Tool]) -> None:
    """Add tools to a registry by name; ToolError naming both plugins when a name is taken."""
    for tool in tools:
        other = registry.get(tool.name)
        if other is not None:
            raise ToolError(f"tool {tool.name!r} registered twice: by {other.plugin!r} and by {tool.plugin!r}")
        registry[tool.name] = tool
