"""What a Realtime client sends, checked and decoded: its items (text, audio, images, function calls) and its tools.

Every problem is a `RealtimeProblem` naming the parameter at fault. Audio is bounded by `[speech] max_buffer_bytes`
and `max_seconds`, images by `[limits] max_turn_bytes` and decoded once (as a turn's would be) to check them.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from assistant.dialects.openai_realtime import protocol as wire
from assistant.dialects.openai_realtime.items import Content, Item
from assistant.dialects.openai_realtime.protocol import SAMPLE_RATE, RealtimeProblem, new_id
from assistant.engines import DialogueEngine, GenerationOptions, ToolChoice, ToolSpec
from assistant.errors import AssistantError
from assistant.turns import AudioIn, ImageIn, decode_turn, release_media

if TYPE_CHECKING:
    from assistant.app import App

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.-]+)*;base64,(?P<data>.*)$", re.DOTALL)


def audio_bytes(app: App, data: str, param: str, ref: str | None) -> bytes:
    """Base64 PCM16, refused past `[speech] max_buffer_bytes` before it is decoded."""
    limit = app.config.speech.max_buffer_bytes
    if len(data) * 3 // 4 > limit:
        raise RealtimeProblem("too_large", f"{param}: more than {limit} bytes of audio in one event ([speech] max_buffer_bytes)", param, ref)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeProblem("invalid_value", f"{param}: not valid base64", param, ref) from None


async def client_item(app: App, spec: wire.ItemIn, where: str, ref: str | None) -> tuple[Item, Any]:
    """An Item from a client's, and the 16 kHz samples of its audio part (None: none)."""
    item_id = spec.id or new_id("item")
    if spec.type == "function_call":
        if not (spec.call_id and spec.name and spec.arguments is not None):
            raise RealtimeProblem("missing_required_parameter", "a function_call item needs call_id, name and arguments", where, ref)
        return Item(item_id, "function_call", call_id=spec.call_id, name=spec.name, arguments=spec.arguments), None
    if spec.type == "function_call_output":
        if not spec.call_id or spec.output is None:
            raise RealtimeProblem("missing_required_parameter", "a function_call_output item needs call_id and output", where, ref)
        return Item(item_id, "function_call_output", call_id=spec.call_id, output=spec.output), None
    if spec.role is None or not spec.content:
        raise RealtimeProblem("missing_required_parameter", "a message item needs a role and content", f"{where}.role", ref)
    allowed = {"user": ("input_text", "input_audio", "input_image"), "system": ("input_text",), "assistant": ("output_text", "output_audio", "text")}
    content: list[Content] = []
    speech = None
    for index, part in enumerate(spec.content):
        param = f"{where}.content.{index}"
        if part.type not in allowed[spec.role]:
            raise RealtimeProblem("invalid_value", f"a {spec.role} message cannot hold {part.type}", f"{param}.type", ref)
        if part.type == "input_audio":
            if speech is not None or part.audio is None:
                raise RealtimeProblem("invalid_value", "a message holds one input_audio part, with its audio", f"{param}.audio", ref)
            pcm = audio_bytes(app, part.audio, f"{param}.audio", ref)
            try:  # as a turn's audio part: the same limits, the media budget, decoded on the media worker
                turn = await decode_turn(app, [AudioIn(pcm, "pcm16", SAMPLE_RATE)], GenerationOptions(), ref)
            except AssistantError as exc:
                raise RealtimeProblem(exc.code, f"{param}.audio: {exc.message.removeprefix('content.0: ')}", f"{param}.audio", ref) from None
            release_media(app, turn)
            speech = turn.audio[0][0]
            content.append(Content("input_audio"))
        elif part.type == "input_image":
            content.append(await image_content(app, part.image_url, f"{param}.image_url", ref))
        elif part.type == "output_audio":
            content.append(Content("output_audio", transcript=part.transcript or ""))
        else:
            if part.text is None:
                raise RealtimeProblem("missing_required_parameter", f"{part.type} needs text", f"{param}.text", ref)
            content.append(Content("output_text" if part.type == "text" else part.type, text=part.text))
    return Item(item_id, "message", spec.role, content), speech


async def image_content(app: App, url: str | None, param: str, ref: str | None) -> Content:
    """An input_image part: a data URL, decoded once to check it is an image this server takes."""
    match = DATA_URL.match(url or "")
    if match is None:
        raise RealtimeProblem("unsupported", "image_url must be a base64 data: URL (this server fetches nothing)", param, ref)
    limit = app.config.limits.max_turn_bytes
    if len(match["data"]) * 3 // 4 > limit:
        raise RealtimeProblem("too_large", f"the image is over {limit} bytes ([limits] max_turn_bytes)", param, ref)
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeProblem("invalid_value", "the image's data URL is not valid base64", param, ref) from None
    try:
        turn = await decode_turn(app, [ImageIn(data, match["mime"])], GenerationOptions(), ref)
    except AssistantError as exc:
        raise RealtimeProblem(exc.code, f"{param}: {exc.message}", param, ref) from None
    release_media(app, turn)
    return Content("input_image", image=data, mime=match["mime"])


def tool_specs(app: App, tools: list[wire.FunctionTool], where: str, ref: str | None) -> tuple[ToolSpec, ...]:
    """The tools as the engine's ToolSpecs; each schema must be JSON Schema, the names unique, the engine able to call tools."""
    specs = []
    for index, tool in enumerate(tools):
        try:
            validator_for(tool.parameters).check_schema(tool.parameters)
        except SchemaError as exc:
            raise RealtimeProblem(
                "invalid_value", f"tool {tool.name!r}: parameters is not a JSON Schema: {exc.message}", f"{where}.{index}.parameters", ref
            ) from None
        specs.append(ToolSpec(tool.name, tool.description, tool.parameters))
    if len({spec.name for spec in specs}) != len(specs):
        raise RealtimeProblem("invalid_value", "tool names must be unique", where, ref)
    engine = app.engines.get("dialogue")
    if specs and isinstance(engine, DialogueEngine) and not engine.capabilities.accepts_tools:
        raise RealtimeProblem("unsupported", f"the dialogue engine {engine.id} cannot call tools", where, ref)
    return tuple(specs)


def tool_choice_of(choice: str | wire.ToolChoiceFunction, tools: tuple[ToolSpec, ...], param: str, ref: str | None) -> tuple[ToolChoice, str | None]:
    """(tool_choice, the one tool forced or None)."""
    if isinstance(choice, wire.ToolChoiceFunction):
        if choice.name not in {tool.name for tool in tools}:
            raise RealtimeProblem("invalid_value", f"tool_choice names {choice.name!r}, which is not among the tools", param, ref)
        return "required", choice.name
    return choice, None  # type: ignore[return-value]
