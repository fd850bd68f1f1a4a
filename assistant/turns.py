"""One turn, top to bottom: decode its parts, store it, transcribe, fuse images, describe plugin parts, route, reply.

Dialects hand the core a turn's parts as `TextIn`, `ImageIn`, `AudioIn` and `PluginPartIn` (bytes,
no wire encoding); `decode_turn` checks and decodes them (nothing is stored for a refused turn) and
`run_turn` answers the decoded turn. Every problem a client can act on is an `AssistantError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from assistant import audio, events
from assistant.context import context_images, dialogue_context
from assistant.engines import (
    AsrEngine,
    DialogueEngine,
    DialogueRequest,
    EngineError,
    GenerationOptions,
    ImageGenerator,
    Transcript,
)
from assistant.errors import AssistantError, error_code
from assistant.fusion import fuse_images
from assistant.image_input import DecodedImage, ImageInputError, decode_cost, decode_image, image_size
from assistant.image_jobs import check_capacity, image_generator, prepare, start_job
from assistant.part_input import DecodedPluginPart, describe_parts, native_parts, part_labels
from assistant.part_types import DecodedPart, PartError, PartLimits
from assistant.reply import Reply, announce_end, stream_reply
from assistant.routes import ImageRoute, Route, ToolRoute, first_route
from assistant.store import PartRecord
from assistant.tool_loop import reply_with_route, reply_with_tools

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.scope import ConversationScope

log = logging.getLogger("assistant.turns")


@dataclass(frozen=True)
class TextIn:
    """A text part as a client sent it."""

    text: str


@dataclass(frozen=True)
class ImageIn:
    """An image part: the file's bytes and the type the client said it is (checked against the bytes)."""

    data: bytes
    mime: str | None = None


@dataclass(frozen=True)
class AudioIn:
    """An audio part: a file (`wav`, `ogg`, `webm`, `mp3`, `flac`) or raw `pcm16` at `sample_rate`."""

    data: bytes
    format: str
    sample_rate: int = 16000
    language: str | None = None


@dataclass(frozen=True)
class PluginPartIn:
    """A part of a type a plugin registered (`assistant.PartType`): its bytes, mime and other wire fields."""

    type: str
    data: bytes
    mime: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


PartIn = TextIn | ImageIn | AudioIn | PluginPartIn


@dataclass
class TurnInput:
    """A turn's parts as stored, the attachments they name, and decoded audio waiting for ASR."""

    parts: list[PartRecord]
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    audio: list[tuple[Any, str | None]] = field(default_factory=list)  # (16 kHz samples, language)
    images: list[DecodedImage] = field(default_factory=list)
    plugin_parts: list[DecodedPluginPart] = field(default_factory=list)
    turn_id: str | None = None  # chosen in advance for streamed speech (its partial transcripts name it)
    spoken_until: float | None = None  # time.perf_counter() when the server VAD heard the utterance end
    options: GenerationOptions = field(default_factory=GenerationOptions)
    media_bytes: int = 0  # of the app's media budget, held by the decoded audio and images until `release_media`

    @property
    def text(self) -> str:
        """The turn's typed text."""
        return "\n".join(p.text for p in self.parts if p.kind == "text" and p.text)


def check_turn_bytes(app: App, size: int, ref: str | None) -> None:
    """too_large when a turn's parts come to more than `[limits] max_turn_bytes`; dialects call it before decoding."""
    limit = app.config.limits.max_turn_bytes
    if size > limit:
        raise AssistantError("too_large", f"the turn's parts are about {size} bytes; at most {limit} are accepted ([limits] max_turn_bytes)", ref)


def check_turn_text(app: App, text: str, ref: str | None) -> None:
    """too_large when a turn's text alone is longer than `[dialogue] context_chars`: checked before anything is stored."""
    limit = app.config.dialogue.context_chars
    if len(text) > limit:
        raise AssistantError(
            "too_large", f"the turn's text is {len(text)} characters; at most {limit} fit the dialogue context ([dialogue] context_chars)", ref
        )


async def take_media(app: App, size: int, where: str, ref: str | None) -> int:
    """Take `size` bytes of the process's media budget for decoding; rate_limited when no room frees up in time."""
    limits = app.config.limits
    if not await app.media.acquire(size, limits.media_wait_s):
        raise AssistantError(
            "rate_limited", f"{where}: the server is decoding as much media as it may at once; try again shortly", ref
        )
    return size


def release_media(app: App, turn: TurnInput) -> None:
    """Give back the media budget a decoded turn holds (its pixels and samples are no longer needed)."""
    app.media.release(turn.media_bytes)
    turn.media_bytes = 0


async def decode_turn(app: App, parts: Sequence[PartIn], options: GenerationOptions, ref: str | None) -> TurnInput:
    """Check and decode every part off the event loop; AssistantError names the part at fault.

    Decoding takes from the process's media budget (`[limits] media_bytes_in_flight`) what it may hold
    at its peak and keeps what the decoded part holds; the caller gives it back with `release_media`.
    """
    turn = TurnInput(parts=[], options=options)
    check_turn_bytes(app, sum(len(p.text.encode()) if isinstance(p, TextIn) else len(p.data) for p in parts), ref)
    check_turn_text(app, "\n".join(p.text for p in parts if isinstance(p, TextIn)), ref)
    try:
        for index, part in enumerate(parts):
            where = f"content.{index}"
            if isinstance(part, TextIn):
                turn.parts.append(PartRecord(kind="text", text=part.text))
            elif isinstance(part, AudioIn):
                if not isinstance(app.engines.get("asr"), AsrEngine):
                    raise AssistantError("unavailable", f"{where}: audio needs an ASR engine ([engines] asr)", ref)
                speech = app.config.speech
                # at most max_seconds of 16 kHz float32 out, twice while the chunks are joined, and the input
                taken = await take_media(app, int(speech.max_seconds * audio.SAMPLE_RATE * 4 * 2) + len(part.data), where, ref)
                try:
                    samples = await app.scheduler.submit_named("media-decode", audio.decode, part.data, part.format, part.sample_rate, speech.max_seconds)
                except audio.AudioError as exc:
                    app.media.release(taken)
                    raise AssistantError(exc.code, f"{where}: {exc}", ref) from None  # type: ignore[arg-type]
                turn.media_bytes += app.media.shrink(taken, samples.nbytes)
                sha256 = None
                if speech.store_audio:
                    turn.attachments.append((audio.MIME_TYPES[part.format], part.data))
                    sha256 = audio.sha256(part.data)
                turn.parts.append(PartRecord(kind="audio", attachment_sha256=sha256))
                turn.audio.append((samples, part.language or speech.language))
            elif isinstance(part, PluginPartIn):
                decoded = await _decode_plugin_part(app, turn, part, where, ref)
                turn.attachments.append((decoded.mime, part.data))
                turn.parts.append(PartRecord(kind=part.type, attachment_sha256=decoded.sha256, mime=decoded.mime))
                turn.plugin_parts.append(decoded)
            else:
                image = await _decode_image(app, turn, part, where, len(turn.images), ref)
                turn.attachments.append((image.mime, image.data))
                turn.parts.append(PartRecord(kind="image", attachment_sha256=image.sha256, mime=image.mime))
                turn.images.append(image)
        if not turn.audio and not turn.images and not turn.plugin_parts and not turn.text.strip():
            raise AssistantError("bad_request", "the turn has no text", ref)
    except BaseException:
        release_media(app, turn)
        raise
    return turn


async def _decode_image(app: App, turn: TurnInput, part: ImageIn, where: str, images_so_far: int, ref: str | None) -> DecodedImage:
    """Decode and check one image part off the loop; AssistantError with the part's index on any problem."""
    limits = app.config.image_input
    if "dialogue" not in app.engines and "image_encoder" not in app.engines:
        raise AssistantError("unavailable", f"{where}: images need a dialogue engine or an image encoder", ref)
    if images_so_far >= limits.max_images_per_turn:
        raise AssistantError("too_large", f"{where}: at most {limits.max_images_per_turn} images per turn", ref)
    if part.mime is not None and not part.mime.startswith("image/"):
        raise AssistantError("bad_request", f"{where}.mime: {part.mime!r} is not an image type", ref)
    size = image_size(part.data) if len(part.data) <= limits.max_bytes else None
    taken = 0
    if size is not None and size[0] * size[1] <= limits.max_pixels:  # else decode_image refuses it before decoding pixels
        taken = await take_media(app, decode_cost(*size), where, ref)
    try:
        image = await app.scheduler.submit_named("media-decode", decode_image, part.data, limits.max_bytes, limits.max_pixels, limits.max_decoded_pixels)
    except ImageInputError as exc:
        app.media.release(taken)
        raise AssistantError(exc.code, f"{where}: {exc}", ref) from None  # type: ignore[arg-type]
    except BaseException:
        app.media.release(taken)
        raise
    width, height = image.size
    turn.media_bytes += app.media.shrink(taken, width * height * 3)
    return image


def known_part_types(app: App) -> str:
    """The part types a client may send, for error messages."""
    return ", ".join(["text", "image", "audio", *sorted(app.part_types)])


async def _decode_plugin_part(app: App, turn: TurnInput, part: PluginPartIn, where: str, ref: str | None) -> DecodedPluginPart:
    """Check and decode one part of a plugin's type off the loop: its fields, mime and size, then `decode` within the limits."""
    entry = app.part_types.get(part.type)
    if entry is None:
        raise AssistantError("bad_request", f"{where}.type: unknown part type {part.type!r}; known: {known_part_types(app)}", ref)
    part_type = entry.part_type
    options: BaseModel | None = None
    if part_type.fields is not None:
        try:
            options = part_type.fields.model_validate(part.fields)
        except ValidationError as exc:
            problems = "; ".join(f"{where}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
            raise AssistantError("bad_request", problems, ref) from None
    elif part.fields:
        raise AssistantError("bad_request", f"{where}: a {part.type} part has no field {sorted(part.fields)[0]!r}", ref)
    if part.mime is not None and part.mime not in part_type.mimes:
        raise AssistantError("unsupported", f"{where}.mime: {part.mime!r} is not a {part.type} type; accepted: {', '.join(part_type.mimes)}", ref)
    max_bytes = min(part_type.max_bytes, app.config.limits.max_turn_bytes)
    if len(part.data) > max_bytes:
        raise AssistantError("too_large", f"{where}: the {part.type} is {len(part.data)} bytes; at most {max_bytes} are accepted", ref)
    cost = max(part_type.decode_cost(len(part.data)), len(part.data))
    taken = await take_media(app, cost, where, ref)
    limits = PartLimits(
        max_bytes=max_bytes, max_decoded_bytes=cost,
        max_pixels=app.config.image_input.max_pixels, max_audio_seconds=app.config.speech.max_seconds,
    )
    try:
        decoded = await app.scheduler.submit_named("media-decode", part_type.decode, part.data, part.mime, options, limits)
    except PartError as exc:
        app.media.release(taken)
        raise AssistantError(exc.code, f"{where}: {exc}", ref) from None  # type: ignore[arg-type]
    except Exception as exc:
        app.media.release(taken)
        log.exception("part type %s (plugin %s) failed to decode %s", part.type, entry.plugin, where)
        raise AssistantError("internal", f"{where}: the {part.type} part type failed: {type(exc).__name__}", ref) from None
    except BaseException:
        app.media.release(taken)
        raise
    if not isinstance(decoded, DecodedPart) or not isinstance(decoded.nbytes, int):
        app.media.release(taken)
        log.error("part type %s (plugin %s) returned %s from decode instead of a DecodedPart", part.type, entry.plugin, type(decoded).__name__)
        raise AssistantError("internal", f"{where}: the {part.type} part type returned {type(decoded).__name__} instead of a DecodedPart", ref)
    turn.media_bytes += app.media.shrink(taken, max(0, min(decoded.nbytes, taken)))
    mime = decoded.mime or part.mime or part_type.mimes[0]
    return DecodedPluginPart(part.type, audio.sha256(part.data), mime, decoded)


async def transcribe(conversation: ConversationScope, turn_id: str, turn: TurnInput) -> str:
    """Transcribe each audio part, store and announce each transcript; returns them joined.

    A silent clip gives an empty transcript without troubling the engine.
    """
    app = conversation.app
    assert app.store is not None
    engine = app.engines["asr"]
    assert isinstance(engine, AsrEngine)
    texts = []
    for samples, language in turn.audio:
        if audio.is_silent(samples):
            result = Transcript("", None, audio.duration_s(samples))
        else:
            timeout = app.config.limits.engine_timeout_s
            began = time.perf_counter()
            try:
                result = await app.scheduler.call(engine, timeout, engine.transcribe, samples, language)
            except EngineError as exc:
                log.warning("asr engine %s refused turn %s: code %s: %s", engine.id, turn_id, exc.code, exc)
                raise AssistantError(error_code(exc.code), str(exc)) from None
            except TimeoutError:
                raise AssistantError("internal", f"the ASR engine did not answer within {timeout:g} s") from None
            if not isinstance(result, Transcript):
                raise AssistantError("internal", f"the ASR engine returned {type(result).__name__} instead of a Transcript")
            if result.duration_s > 0:
                app.metrics.asr_real_time_factor.observe((time.perf_counter() - began) / result.duration_s)
        await app.store.add_parts(turn_id, [PartRecord(kind="transcript", text=result.text)])
        await conversation.publish(events.TranscriptDone(
            turn_id=turn_id, text=result.text, language=result.language, duration_s=round(result.duration_s, 3),
        ))
        texts.append(result.text)
    return "\n".join(t for t in texts if t)


async def run_turn(conversation: ConversationScope, turn: TurnInput, ref: str | None) -> None:
    """Store the user turn (transcribing its audio), then route it or stream and store the dialogue reply."""
    app = conversation.app
    assert app.store is not None
    text = turn.text
    user_turn_id: str | None = None
    if turn.audio:
        app.scheduler.admit(app.engines["asr"], ref)
    if turn.audio or turn.images or turn.plugin_parts:
        user_turn_id = await app.store.add_user_turn(conversation.id, turn.parts, turn.attachments, turn_id=turn.turn_id)
        await conversation.publish(events.TurnCreated(turn_id=user_turn_id))
    if turn.audio:
        assert user_turn_id is not None
        try:
            spoken = await transcribe(conversation, user_turn_id, turn)
        except AssistantError as exc:
            raise AssistantError(exc.code, f"transcription failed: {exc.message}", ref) from None
        text = "\n".join(t for t in (text, spoken) if t.strip())
        if not text.strip() and not turn.images:
            return  # only silence: the empty transcript is the answer
    if turn.images:
        assert user_turn_id is not None
        await fuse_images(app, user_turn_id, turn.images)
    if turn.plugin_parts:
        assert user_turn_id is not None
        await describe_parts(app, user_turn_id, turn.plugin_parts)
    route = _route(app, text)
    if isinstance(route, ImageRoute):
        await _run_image_route(conversation, ref, turn.parts, route, user_turn_id)
        return
    engine = app.engines.get("dialogue")
    if isinstance(engine, DialogueEngine):
        app.scheduler.admit(engine, ref)
    elif route is None:
        raise AssistantError("unavailable", "no dialogue engine is configured ([engines] dialogue)", ref)
    else:
        engine = None  # a tool route answers with its result alone

    limit = app.config.dialogue.history_turns
    if user_turn_id is None:
        begun = await app.store.begin_turn(conversation.id, turn.parts, limit)
    else:
        begun = await app.store.begin_reply(conversation.id, user_turn_id, limit)
    reply = Reply(begun.reply_id, conversation.id)
    app.replies.add(reply)
    if app.cancelling_replies:
        reply.cancel()
    try:
        request: DialogueRequest | None = None
        if engine is not None:
            images = await context_images(app, begun.history, turn.images) if engine.capabilities.accepts_images else None
            dialogue = app.config.dialogue
            messages = dialogue_context(
                dialogue.system_prompt, begun.history, images, dialogue.context_chars, part_labels(app), native_parts(app, turn.plugin_parts),
                tools=engine.capabilities.accepts_tools,
            )
            request = DialogueRequest(messages, turn.options)
        announce = user_turn_id is None
        if isinstance(route, ToolRoute):
            await reply_with_route(
                conversation, engine, request, reply, begun.user_turn_id, route.name, route.arguments, announce, turn.spoken_until,
            )
        elif engine is not None and request is not None and engine.capabilities.accepts_tools and app.tools:
            await reply_with_tools(conversation, engine, request, reply, begun.user_turn_id, announce, turn.spoken_until)
        elif engine is not None and request is not None:
            await stream_reply(conversation, engine, request, reply, begun.user_turn_id, announce_turn=announce, spoken_until=turn.spoken_until)
    finally:
        app.replies.discard(reply)
        reply.done.set()


def _route(app: App, text: str) -> Route | None:
    """The first router's usable claim on the turn: an image needs an image generator, a tool route a registered tool."""
    has_generator = isinstance(app.engines.get("image_generator"), ImageGenerator)

    def usable(route: Route) -> bool:
        return has_generator if isinstance(route, ImageRoute) else route.name in app.tools

    return first_route(app.registrations.routers, text, usable)


async def _run_image_route(
    conversation: ConversationScope, ref: str | None, parts: list[PartRecord], route: ImageRoute, user_turn_id: str | None,
) -> None:
    """A turn claimed for an image: store it, acknowledge it as the reply, and start the job beside it.

    Events: TurnCreated, ReplyStarted, TextDelta, ImageStarted, ReplyDone, then the job's
    ImageProgress and ImageDone."""
    app = conversation.app
    assert app.store is not None
    store = app.store
    request = prepare(image_generator(app.engines, ref), {"prompt": route.prompt}, ref)
    check_capacity(conversation, ref)
    if user_turn_id is None:
        begun = await store.begin_turn(conversation.id, parts, history_limit=1)
        await conversation.publish(events.TurnCreated(turn_id=begun.user_turn_id))
    else:
        begun = await store.begin_reply(conversation.id, user_turn_id, history_limit=1)
    response_id, text = begun.reply_id, route.acknowledgement
    await conversation.publish(events.ReplyStarted(response_id=response_id, turn_id=begun.user_turn_id))
    await conversation.publish(events.TextDelta(response_id=response_id, delta=text))
    try:
        # ImageStarted comes before the acknowledgement's ReplyDone, so a client that follows the
        # reply to its end knows a job is coming.
        await start_job(conversation, request, prompt_turn=False, reply_to=begun.user_turn_id)
    finally:
        await announce_end(
            conversation, f"reply {response_id}",
            lambda seq: store.finish_reply(response_id, text=text, status="completed", last_seq=seq),
            lambda _, stored: events.ReplyDone(response_id, "completed", text) if stored else events.ReplyDone(
                response_id, "failed", text, error=events.ErrorInfo("internal", "the reply could not be stored"),
            ),
        )
