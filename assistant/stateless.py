"""The dialogue context of a stateless request: a whole chat history sent by the client, as OpenAI's and
Ollama's HTTP APIs do, turned into the engine's messages.

Nothing is stored as a conversation. User messages go through the same checks and decoding as a
conversation's turns (`decode_turn`: byte, text, image and audio limits, the media budget), their audio
is transcribed, and their images reach the engine as pixels (an engine that sees images) or as the
modalities' descriptions (late fusion), exactly as in a conversation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from assistant.context import user_message
from assistant.engines import AsrEngine, ChatMessage, EngineError, GenerationOptions, ToolCall
from assistant.errors import AssistantError, error_code
from assistant.fusion import encode_and_describe
from assistant.part_input import describe_plugin_parts, native_parts, part_labels, part_records
from assistant.store import PartRecord
from assistant.turns import PartIn, TextIn, TurnInput, decode_turn, release_media

if TYPE_CHECKING:
    from assistant.app import App


@dataclass(frozen=True)
class StatelessMessage:
    """One message of a client-sent history: its role, its parts (text, image and audio; only users send
    media), and the tool-call fields of assistant and tool messages."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Sequence[PartIn] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text parts, joined."""
        return "\n".join(part.text for part in self.content if isinstance(part, TextIn))


@asynccontextmanager
async def stateless_context(app: App, messages: Sequence[StatelessMessage], ref: str | None = None) -> AsyncIterator[list[ChatMessage]]:
    """The engine's messages for a client-sent history; the decoded media stays held (media budget) until exit.

    Raises AssistantError naming the message and part at fault (`messages.3.content.1: ...`).
    """
    engine = app.engines.get("dialogue")
    sees_images = engine is not None and engine.capabilities.accepts_images
    held: list[TurnInput] = []
    try:
        context: list[ChatMessage] = []
        for index, message in enumerate(messages):
            if message.role != "user" or all(isinstance(part, TextIn) for part in message.content):
                context.append(ChatMessage(message.role, message.text, (), message.tool_calls, message.tool_call_id, message.name))
                continue
            try:
                turn = await decode_turn(app, message.content, GenerationOptions(), ref)
            except AssistantError as exc:
                raise AssistantError(exc.code, f"messages.{index}.{exc.message}", ref) from None
            held.append(turn)
            context.append(await _user_context(app, turn, sees_images, f"messages.{index}", ref))
        yield context
    finally:
        for turn in held:
            release_media(app, turn)


async def _user_context(app: App, turn: TurnInput, sees_images: bool, where: str, ref: str | None) -> ChatMessage:
    """A decoded user message as the engine's message: transcribed speech, then its images as pixels or text."""
    spoken = [await transcribe_samples(app, samples, language, where, ref) for samples, language in turn.audio]
    text = "\n".join(t for t in (turn.text, *spoken) if t.strip())
    parts = [PartRecord(kind="image", attachment_sha256=image.sha256, mime=image.mime) for image in turn.images]
    parts += part_records(turn.plugin_parts, await describe_plugin_parts(app, turn.plugin_parts))  # plugin part types
    labels, native = part_labels(app), native_parts(app, turn.plugin_parts)
    if sees_images:
        return user_message(parts, text, {image.sha256: image.image for image in turn.images}, labels, native)
    described = await encode_and_describe(app, turn.images)
    parts += [PartRecord(kind="image_text", text=said, attachment_sha256=sha) for sha, said in described]
    return user_message(parts, text, None, labels, native)


async def transcribe_samples(app: App, samples: object, language: str | None, where: str, ref: str | None) -> str:
    """One audio part's transcript (16 kHz samples), through the ASR engine's worker; AssistantError naming `where`."""
    engine = app.engines.get("asr")
    if not isinstance(engine, AsrEngine):  # decode_turn refuses audio without an ASR engine; other callers may not
        raise AssistantError("unavailable", f"{where}: audio needs an ASR engine ([engines] asr)", ref)
    try:
        transcript = await app.scheduler.call(engine, app.config.limits.engine_timeout_s, engine.transcribe, samples, language)
    except TimeoutError:
        raise AssistantError("internal", f"{where}: transcription made no progress", ref) from None
    except EngineError as exc:
        raise AssistantError(error_code(exc.code), f"{where}: transcription failed: {exc}", ref) from None
    return transcript.text.strip()
