"""A chat completion request's history and tools, translated into the core's stateless messages and tool specs.

Images arrive as `data:` URLs and audio as base64 `input_audio` parts; both become the core's parts
(`ImageIn`, `AudioIn`) so that `stateless_context` decodes them with a turn's limits. A remote image URL
is refused: the server fetches nothing. Tool schemas are checked against the JSON Schema meta-schema.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from assistant.dialects.openai_http.errors import OpenAIError
from assistant.dialects.openai_http.models import (
    AssistantMessage,
    ChatCompletionRequest,
    ImageUrlPart,
    InputAudioPart,
    Message,
    NamedToolChoice,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from assistant.engines import ToolCall, ToolChoice, ToolSpec
from assistant.stateless import StatelessMessage
from assistant.turns import AudioIn, ImageIn, PartIn, TextIn

DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.DOTALL)


def decode_base64(data: str, param: str) -> bytes:
    """Standard base64 (whitespace allowed), or a 400 naming `param`."""
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIError(400, f"{param}: not valid base64", param=param, code="invalid_value") from None


def image_part(part: ImageUrlPart, param: str) -> ImageIn:
    """An `image_url` part's image: a base64 `data:` URL; anything else is a 400."""
    url = part.image_url.url
    if url.startswith(("http://", "https://")):
        raise OpenAIError(
            400, f"{param}: remote image URLs are not fetched (this server has no network access); send the image as a data URL "
            "(data:image/png;base64,...)", param=param, code="invalid_image_url",
        )
    match = DATA_URL.fullmatch(url)
    if match is None or "base64" not in match["params"].split(";"):
        raise OpenAIError(400, f"{param}: expected a base64 data URL (data:image/png;base64,...)", param=param, code="invalid_image_url")
    return ImageIn(decode_base64(match["data"], param), match["mime"] or None)


def _text(content: str | Sequence[TextPart | RefusalPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text if isinstance(part, TextPart) else part.refusal for part in content)


def _user_parts(message: UserMessage, where: str) -> list[PartIn]:
    if isinstance(message.content, str):
        return [TextIn(message.content)]
    parts: list[PartIn] = []
    for index, part in enumerate(message.content):
        param = f"{where}.content.{index}"
        if isinstance(part, TextPart):
            parts.append(TextIn(part.text))
        elif isinstance(part, ImageUrlPart):
            parts.append(image_part(part, f"{param}.image_url.url"))
        elif isinstance(part, InputAudioPart):
            parts.append(AudioIn(decode_base64(part.input_audio.data, f"{param}.input_audio.data"), part.input_audio.format))
    return parts


def _tool_calls(message: AssistantMessage, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for index, call in enumerate(message.tool_calls or ()):
        param = f"{where}.tool_calls.{index}.function.arguments"
        try:
            arguments = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise OpenAIError(400, f"{param}: not valid JSON ({exc.msg})", param=param, code="invalid_value") from None
        if not isinstance(arguments, dict):
            raise OpenAIError(400, f"{param}: must be a JSON object", param=param, code="invalid_value")
        calls.append(ToolCall(call.id, call.function.name, arguments))
    return tuple(calls)


def stateless_messages(messages: Sequence[Message]) -> list[StatelessMessage]:
    """The history as the core's stateless messages; a 400 naming the message at fault.

    `developer` messages are system messages; a tool message must answer a call an earlier assistant
    message made (its function's name is taken from there).
    """
    out: list[StatelessMessage] = []
    called: dict[str, str] = {}  # tool call id -> function name
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if isinstance(message, SystemMessage):
            out.append(StatelessMessage("system", [TextIn(_text(message.content))]))
        elif isinstance(message, UserMessage):
            out.append(StatelessMessage("user", _user_parts(message, where)))
        elif isinstance(message, AssistantMessage):
            calls = _tool_calls(message, where)
            called.update((call.id, call.name) for call in calls)
            text = _text(message.content) or (message.refusal or "")
            out.append(StatelessMessage("assistant", [TextIn(text)] if text else [], calls))
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in called:
                param = f"{where}.tool_call_id"
                raise OpenAIError(
                    400, f"{param}: no earlier assistant message made a tool call with id {message.tool_call_id!r}", param=param, code="invalid_value"
                )
            out.append(StatelessMessage("tool", [TextIn(_text(message.content))], tool_call_id=message.tool_call_id, name=called[message.tool_call_id]))
    return out


def tool_specs(request: ChatCompletionRequest) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    """The tools offered and the choice asked for; a 400 for a schema that is not JSON Schema or a choice naming no tool.

    A `tool_choice` naming one function offers only that function and requires a call.
    """
    specs = []
    for index, tool in enumerate(request.tools or ()):
        parameters = tool.function.parameters
        param = f"tools.{index}.function.parameters"
        try:
            validator_for(parameters).check_schema(parameters)
        except SchemaError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise OpenAIError(
                400, f"{param}: not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else ""), param=param, code="invalid_function_parameters"
            ) from None
        specs.append(ToolSpec(tool.function.name, tool.function.description, parameters))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise OpenAIError(400, "tools: two tools have the same name", param="tools", code="invalid_value")
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        chosen = [spec for spec in specs if spec.name == choice.function.name]
        if not chosen:
            raise OpenAIError(400, f"tool_choice: no tool named {choice.function.name!r} is offered", param="tool_choice", code="invalid_value")
        return tuple(chosen), "required"
    if choice == "required" and not specs:
        raise OpenAIError(400, "tool_choice: `required` needs tools", param="tool_choice", code="invalid_value")
    return tuple(specs), choice or "auto"
