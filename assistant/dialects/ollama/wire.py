"""The Ollama API's JSON, as its clients send and parse it: request models, and the translation of a chat request
into the core's stateless messages and of the engine's answer back into Ollama's response objects.

Shapes follow Ollama's API (docs/api.md of ollama/ollama) and what the official `ollama` Python client's `_types.py`
reads: `message.tool_calls[].function.arguments` is an object, tool results come back as `role: "tool"` messages
without ids (paired here, in order, with the calls of the assistant message before them), images are base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.engines import DialogueResult, Engine, GenerationOptions, ToolCall, ToolSpec
from assistant.errors import AssistantError
from assistant.stateless import StatelessMessage
from assistant.tool_calls import new_call_id
from assistant.turns import ImageIn, PartIn, TextIn

API_VERSION = "0.12.0"
"""The Ollama API version `GET /api/version` reports: the release whose API this dialect follows."""


class _Loose(BaseModel):
    """Fields Ollama clients send that we do not use are accepted and ignored, as Ollama does."""

    model_config = ConfigDict(extra="ignore")


class FunctionIn(_Loose):
    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCallIn(_Loose):
    id: str | None = None
    function: FunctionIn


class MessageIn(_Loose):
    """One message of `messages`: text, base64 images (users only), an assistant's tool calls, a tool's result."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ToolFunctionIn(_Loose):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolIn(_Loose):
    type: Literal["function"] = "function"
    function: ToolFunctionIn


class ChatRequest(_Loose):
    """`POST /api/chat`. `format`, `keep_alive`, `think` and the options we have no use for are accepted and ignored."""

    model: str = Field(min_length=1, max_length=300)
    messages: list[MessageIn] = Field(default_factory=list)
    tools: list[ToolIn] | None = None
    stream: bool = True
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: bool | str | None = None


class ModelRequest(_Loose):
    """`POST /api/show` and `/api/pull`: the model by `model` (or `name`, as older clients send it)."""

    model: str | None = None
    name: str | None = None
    stream: bool = True

    @property
    def wanted(self) -> str:
        """The model asked for."""
        return self.model or self.name or ""


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a parsed JSON body; bad_request naming the first field at fault."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(body)"
        raise AssistantError("bad_request", f"{where}: {error['msg']}") from None


def model_name(engine: Engine) -> str:
    """The Ollama-style name (`name:tag`) a dialogue engine is listed under: its id without the plugin prefix, lowercased."""
    return f"{engine.id.rpartition(':')[2].lower()}:latest"


def names_of(engine: Engine) -> set[str]:
    """Every name a request may use for the engine: `name:latest`, `name`, and the engine id itself."""
    name = model_name(engine)
    return {name, name.removesuffix(":latest"), engine.id, engine.id.lower()}


def model_entry(engine: Engine, modified_at: str) -> dict[str, Any]:
    """The engine as one entry of `GET /api/tags` (and, with more fields, of `/api/ps`)."""
    name = model_name(engine)
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": 0,
        "digest": hashlib.sha256(engine.id.encode()).hexdigest(),
        "details": details(engine),
    }


def details(engine: Engine) -> dict[str, Any]:
    """Ollama's `details` object; we know the engine's id and little else about its weights."""
    family = engine.id.partition(":")[0]
    return {"parent_model": "", "format": "", "family": family, "families": [family], "parameter_size": "", "quantization_level": ""}


def capabilities(engine: Engine) -> list[str]:
    """What `/api/show` says the model can do: `completion`, plus `tools` and `vision` when the engine takes them."""
    found = ["completion"]
    if engine.capabilities.accepts_tools:
        found.append("tools")
    if engine.capabilities.accepts_images:
        found.append("vision")
    return found


def generation_options(options: dict[str, Any] | None) -> GenerationOptions:
    """Ollama's `options` the engines understand (`num_predict`, `temperature`, `top_p`); the others are accepted and ignored."""
    options = options or {}

    def number(key: str, kind: type) -> Any:
        value = options.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AssistantError("bad_request", f"options.{key}: must be a number")
        return kind(value)

    num_predict = number("num_predict", int)
    temperature = number("temperature", float)
    top_p = number("top_p", float)
    if temperature is not None and not 0 <= temperature <= 2:
        raise AssistantError("bad_request", "options.temperature: must be between 0 and 2")
    if top_p is not None and not 0 < top_p <= 1:
        raise AssistantError("bad_request", "options.top_p: must be above 0 and at most 1")
    return GenerationOptions(max_new_tokens=num_predict if num_predict and num_predict > 0 else None, temperature=temperature, top_p=top_p)


def tool_specs(tools: list[ToolIn] | None) -> tuple[ToolSpec, ...]:
    """The request's tools as the engine takes them."""
    return tuple(ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in tools or ())


def stateless_messages(messages: list[MessageIn]) -> list[StatelessMessage]:
    """The chat history as the core's stateless messages, one for each (so errors name the client's indexes).

    Each `tool` message is paired, in order, with a call of the assistant message before it: its
    `tool_call_id` and, unless the message names its tool, its name.
    """
    out: list[StatelessMessage] = []
    pending: list[ToolCall] = []
    for index, message in enumerate(messages):
        text = message.content or ""
        if message.images and message.role != "user":
            raise AssistantError("bad_request", f"messages.{index}.images: only user messages may carry images")
        if message.role == "assistant":
            calls = tuple(_tool_call(call, f"messages.{index}.tool_calls.{n}") for n, call in enumerate(message.tool_calls or ()))
            pending = list(calls)
            out.append(StatelessMessage("assistant", [TextIn(text)] if text else [], tool_calls=calls))
        elif message.role == "tool":
            paired = pending.pop(0) if pending else None
            name = message.tool_name or (paired.name if paired else None)
            out.append(StatelessMessage("tool", [TextIn(text)], tool_call_id=paired.id if paired else new_call_id(), name=name))
        else:
            parts: list[PartIn] = [TextIn(text)] if text else []
            parts += [ImageIn(_base64(data, f"messages.{index}.images.{n}")) for n, data in enumerate(message.images or ())]
            out.append(StatelessMessage(message.role, parts))
    return out


def _tool_call(call: ToolCallIn, where: str) -> ToolCall:
    arguments = call.function.arguments
    if isinstance(arguments, str):  # some clients send the JSON text, as OpenAI's API does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise AssistantError("bad_request", f"{where}.function.arguments: not a JSON object") from None
        if not isinstance(arguments, dict):
            raise AssistantError("bad_request", f"{where}.function.arguments: not a JSON object")
    return ToolCall(call.id or new_call_id(), call.function.name, arguments)


def _base64(data: str, where: str) -> bytes:
    if data.startswith("data:"):  # a data URL, as some clients send
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AssistantError("bad_request", f"{where}: not base64") from None


def now() -> str:
    """The current time as Ollama writes it (RFC 3339, UTC)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def chunk(model: str, content: str) -> dict[str, Any]:
    """One streamed piece of the answer."""
    return {"model": model, "created_at": now(), "message": {"role": "assistant", "content": content}, "done": False}


def tool_calls_out(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """The engine's calls as `message.tool_calls`: `function.name` and `function.arguments` (an object)."""
    return [{"function": {"name": call.name, "arguments": call.arguments}} for call in calls]


def final(
    model: str, result: DialogueResult, content: str, started_ns: int, first_ns: int | None, ended_ns: int, tool_calls: bool = True,
) -> dict[str, Any]:
    """The last object of an answer (the only one without streaming): `done`, why, token counts and durations (ns).

    A stream has sent the text and the tool calls before it: then `content` is empty and `tool_calls` False."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if result.tool_calls and tool_calls:
        message["tool_calls"] = tool_calls_out(result.tool_calls)
    first = first_ns if first_ns is not None else ended_ns
    return {
        "model": model,
        "created_at": now(),
        "message": message,
        "done": True,
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": ended_ns - started_ns,
        "load_duration": 0,
        "prompt_eval_count": result.usage.prompt_tokens,
        "prompt_eval_duration": first - started_ns,
        "eval_count": result.usage.completion_tokens,
        "eval_duration": ended_ns - first,
    }
