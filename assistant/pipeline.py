"""One turn, from the client's parts to the stored, streamed reply."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant import audio
from assistant.image_features import features_for, stored_image
from assistant.image_input import DecodedImage, ImageInputError, decode_image
from assistant.modalities import ImageInput, describe_images
from assistant.engines import (
    AsrEngine,
    ChatMessage,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    EngineError,
    GenerationOptions,
    ImageGenerator,
    Transcript,
)
from assistant.image_jobs import image_generator, prepare, start_job
from assistant.protocol import (
    AudioPart,
    ErrorBody,
    ImagePart,
    ProtocolError,
    ResponseCreated,
    ResponseDone,
    ResponseTextDelta,
    TextPart,
    TranscriptDone,
    TurnCreate,
    TurnCreated,
    error_code,
)
from assistant.routes import ImageRoute, first_route
from assistant.scheduler import NoProgress, QueueFull, Relay
from assistant.store import PartRecord, TurnRecord

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.session import Session

log = logging.getLogger("assistant.pipeline")


@dataclass(eq=False)
class Reply:
    """A reply in flight: what `response.cancel` and shutdown act on."""

    response_id: str
    conversation_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self) -> None:
        """Ask the engine to stop at its next token."""
        self.cancelled.set()


@dataclass
class TurnInput:
    """A turn's parts as stored, the attachments they name, and decoded audio waiting for ASR."""

    parts: list[PartRecord]
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    audio: list[tuple[Any, str | None]] = field(default_factory=list)  # (16 kHz samples, language)
    images: list[DecodedImage] = field(default_factory=list)
    turn_id: str | None = None  # chosen in advance for streamed speech (its partial transcripts name it)
    options: GenerationOptions = field(default_factory=GenerationOptions)

    @property
    def text(self) -> str:
        """The turn's typed text."""
        return "\n".join(p.text for p in self.parts if p.kind == "text" and p.text)


async def turn_input(session: Session, event: TurnCreate) -> TurnInput:
    """Validate and decode every part; raises ProtocolError (nothing is stored for a refused turn)."""
    app = session.app
    turn = TurnInput(parts=[], options=generation_options(event))
    limit = app.config.limits.max_turn_bytes
    size = sum(len(p.text.encode()) if isinstance(p, TextPart) else len(p.data) * 3 // 4 for p in event.content)
    if size > limit:  # checked before decoding anything: base64 is 4 characters per 3 bytes
        raise ProtocolError("too_large", f"the turn's parts are about {size} bytes; at most {limit} are accepted ([limits] max_turn_bytes)", event.event_id)
    for index, part in enumerate(event.content):
        where = f"content.{index}"
        if isinstance(part, TextPart):
            turn.parts.append(PartRecord(kind="text", text=part.text))
        elif isinstance(part, AudioPart):
            if not isinstance(app.engines.get("asr"), AsrEngine):
                raise ProtocolError("unavailable", f"{where}: audio needs an ASR engine ([engines] asr)", event.event_id)
            data = decode_base64(part.data, f"{where}.data", event.event_id)
            try:
                samples = await asyncio.to_thread(
                    audio.decode, data, part.format, part.sample_rate, app.config.speech.max_seconds
                )
            except audio.AudioError as exc:
                raise ProtocolError(exc.code, f"{where}: {exc}", event.event_id) from None  # type: ignore[arg-type]
            sha256 = None
            if app.config.speech.store_audio:
                turn.attachments.append((audio.MIME_TYPES[part.format], data))
                sha256 = audio.sha256(data)
            turn.parts.append(PartRecord(kind="audio", attachment_sha256=sha256))
            turn.audio.append((samples, part.language or app.config.speech.language))
        elif isinstance(part, ImagePart):
            image = await _image_part(session, part, where, len(turn.images), event.event_id)
            turn.attachments.append((image.mime, image.data))
            turn.parts.append(PartRecord(kind="image", attachment_sha256=image.sha256, mime=image.mime))
            turn.images.append(image)
    if not turn.audio and not turn.images and not turn.text.strip():
        raise ProtocolError("bad_request", "the turn has no text", event.event_id)
    return turn


async def _image_part(session: Session, part: ImagePart, where: str, images_so_far: int, ref: str | None) -> DecodedImage:
    """Decode and check one image part off the loop; ProtocolError with the part's index on any problem."""
    app = session.app
    limits = app.config.image_input
    if "dialogue" not in app.engines and "image_encoder" not in app.engines:
        raise ProtocolError("unavailable", f"{where}: images need a dialogue engine or an image encoder", ref)
    if images_so_far >= limits.max_images_per_turn:
        raise ProtocolError("too_large", f"{where}: at most {limits.max_images_per_turn} images per turn", ref)
    if part.mime is not None and not part.mime.startswith("image/"):
        raise ProtocolError("bad_request", f"{where}.mime: {part.mime!r} is not an image type", ref)
    data = decode_base64(part.data, f"{where}.data", ref)
    try:
        return await asyncio.to_thread(decode_image, data, limits.max_bytes, limits.max_pixels)
    except ImageInputError as exc:
        raise ProtocolError(exc.code, f"{where}: {exc}", ref) from None  # type: ignore[arg-type]


def admit(app: App, engine: Any, ref: str | None) -> None:
    """rate_limited when the engine's queue is full ([scheduler] max_queued)."""
    try:
        app.scheduler.admit(engine)
    except QueueFull as exc:
        raise ProtocolError("rate_limited", str(exc), ref) from None


def decode_base64(data: str, what: str, ref: str | None) -> bytes:
    """Bytes of a base64 field; ProtocolError(bad_request) naming `what` if it is not valid base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_request", f"{what}: not valid base64", ref) from None


async def transcribe(session: Session, turn_id: str, turn: TurnInput) -> str:
    """Transcribe each audio part, store and announce each transcript; returns them joined.

    A silent clip gives an empty transcript without troubling the engine.
    """
    app = session.app
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
                raise ProtocolError(error_code(exc.code), str(exc)) from None
            except TimeoutError:
                raise ProtocolError("internal", f"the ASR engine did not answer within {timeout:g} s") from None
            if not isinstance(result, Transcript):
                raise ProtocolError("internal", f"the ASR engine returned {type(result).__name__} instead of a Transcript")
            if result.duration_s > 0:
                app.metrics.asr_real_time_factor.observe((time.perf_counter() - began) / result.duration_s)
        await app.store.add_parts(turn_id, [PartRecord(kind="transcript", text=result.text)])
        await session.emit(TranscriptDone(turn_id=turn_id, text=result.text, language=result.language, duration_s=round(result.duration_s, 3)))
        texts.append(result.text)
    return "\n".join(t for t in texts if t)


async def fuse_images(session: Session, turn_id: str, turn: TurnInput) -> None:
    """Encode the turn's images (features stored once per image) and, for a text-only dialogue engine,
    store what each modality says about each image as `image_text` parts of the turn."""
    app = session.app
    assert app.store is not None
    if not turn.images:
        return
    try:
        features = await features_for(app, [(image.sha256, image.image) for image in turn.images])
    except EngineError as exc:
        log.warning("image encoder failed; the turn goes on without image features: %s", exc)
        features = {}
    if not app.late_fusion or not app.modalities:
        return
    encoder = app.engines.get("image_encoder")
    by_sha = {image.sha256: image for image in reversed(turn.images)}
    inputs = [  # an image sent twice in one turn is described once
        ImageInput(
            index=index, sha256=sha, mime=by_sha[sha].mime, data=by_sha[sha].data, image=by_sha[sha].image,
            features=features.get(sha), encoder_id=encoder.id if encoder is not None else None,
        )
        for sha, index in image_numbers([image.sha256 for image in turn.images]).items()
    ]
    described = await describe_images(app, inputs)
    if described:
        await app.store.add_parts(turn_id, [PartRecord(kind="image_text", text=text, attachment_sha256=sha) for sha, text in described])


def dialogue_context(
    system_prompt: str, history: list[TurnRecord], images: dict[str, Any] | None = None
) -> list[ChatMessage]:
    """The messages for the engine: system prompt, then stored turns that have something to say, oldest first.

    Assistant replies count when completed or cancelled (the user saw their text); failed and
    interrupted replies are left out. `images` (sha256 -> pixels) is given for an engine that sees
    images: user messages then carry those images. Otherwise each user image is rendered as the text
    the modalities stored for it (`[Image N: ...]`), before the turn's own words.
    """
    messages = [ChatMessage("system", system_prompt)] if system_prompt else []
    for turn in history:
        if turn.role == "user":
            message = _user_message(turn, images)
            if message.content or message.images:
                messages.append(message)
        elif turn.role == "assistant" and turn.status in ("completed", "cancelled") and turn.text:
            messages.append(ChatMessage("assistant", turn.text))
    return messages


def image_numbers(shas: list[str]) -> dict[str, int]:
    """Each distinct image's number in its turn: the 1-based position where it first appears, in order."""
    numbers: dict[str, int] = {}
    for index, sha in enumerate(shas, start=1):
        numbers.setdefault(sha, index)
    return numbers


def _user_message(turn: TurnRecord, images: dict[str, Any] | None) -> ChatMessage:
    shas = [p.attachment_sha256 for p in turn.parts if p.kind == "image" and p.attachment_sha256]
    if images is not None:
        return ChatMessage("user", turn.text, tuple(images[sha] for sha in shas if sha in images))
    number = image_numbers(shas)
    lines = [f"[Image {number.get(p.attachment_sha256 or '', len(shas))}: {p.text}]" for p in turn.parts if p.kind == "image_text" and p.text]
    described = {p.attachment_sha256 for p in turn.parts if p.kind == "image_text"}
    lines += [f"[Image {index}: no description available]" for sha, index in number.items() if sha not in described]
    return ChatMessage("user", "\n".join([*lines, turn.text]).strip())


async def context_images(session: Session, history: list[TurnRecord], turn: TurnInput) -> dict[str, Any]:
    """Pixels of the most recent user images in `history` (at most `[image_input] context_images`), by sha256."""
    app = session.app
    keep = app.config.image_input.context_images
    shas = [p.attachment_sha256 for t in history if t.role == "user" for p in t.parts if p.kind == "image" and p.attachment_sha256]
    wanted = list(dict.fromkeys(reversed(shas)))[:keep]
    have = {image.sha256: image.image for image in turn.images}
    try:
        loaded = await asyncio.gather(*(stored_image(app, sha) for sha in wanted if sha not in have))
    except Exception:  # the reply placeholder is committed: never leave it unfinished over an earlier image
        log.exception("loading earlier images for the context failed; they are left out")
        loaded = []
    have.update(pair for pair in loaded if pair is not None)
    return {sha: have[sha] for sha in wanted if sha in have}


def generation_options(event: TurnCreate) -> GenerationOptions:
    """Per-turn overrides from the event."""
    if event.options is None:
        return GenerationOptions()
    o = event.options
    return GenerationOptions(
        max_new_tokens=o.max_new_tokens,
        temperature=None if o.temperature is None else float(o.temperature),
        top_p=None if o.top_p is None else float(o.top_p),
    )


async def run_turn(session: Session, event: TurnCreate, conversation_id: str) -> None:
    """A `turn.create`: validate and decode its parts, then run it."""
    await run_turn_input(session, await turn_input(session, event), conversation_id, event.event_id)


async def run_turn_input(session: Session, turn: TurnInput, conversation_id: str, ref: str | None) -> None:
    """Store the user turn (transcribing its audio), then route it or stream and store the dialogue reply."""
    app = session.app
    assert app.store is not None
    text = turn.text
    user_turn_id: str | None = None
    if turn.audio:
        admit(app, app.engines["asr"], ref)
    if turn.audio or turn.images:
        user_turn_id = await app.store.add_user_turn(conversation_id, turn.parts, turn.attachments, turn_id=turn.turn_id)
        await session.emit(TurnCreated(turn_id=user_turn_id))
    if turn.audio:
        assert user_turn_id is not None
        try:
            spoken = await transcribe(session, user_turn_id, turn)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"transcription failed: {exc.message}", ref) from None
        text = "\n".join(t for t in (text, spoken) if t.strip())
        if not text.strip() and not turn.images:
            return  # only silence: the empty transcript is the answer
    if turn.images:
        assert user_turn_id is not None
        await fuse_images(session, user_turn_id, turn)
    route = _route(session, text)
    if route is not None:
        await _run_image_route(session, ref, conversation_id, turn.parts, route, user_turn_id)
        return
    engine = app.engines.get("dialogue")
    if not isinstance(engine, DialogueEngine):
        raise ProtocolError("unavailable", "no dialogue engine is configured ([engines] dialogue)", ref)
    admit(app, engine, ref)

    limit = app.config.dialogue.history_turns
    if user_turn_id is None:
        begun = await app.store.begin_turn(conversation_id, turn.parts, limit)
    else:
        begun = await app.store.begin_reply(conversation_id, user_turn_id, limit)
    reply = Reply(begun.reply_id, conversation_id)
    app.replies.add(reply)
    if app.cancelling_replies:
        reply.cancel()
    images = await context_images(session, begun.history, turn) if engine.capabilities.accepts_images else None
    request = DialogueRequest(dialogue_context(app.config.dialogue.system_prompt, begun.history, images), turn.options)
    try:
        await _stream_reply(session, engine, request, reply, begun.user_turn_id, announce_turn=user_turn_id is None)
    finally:
        app.replies.discard(reply)
        reply.done.set()


def _route(session: Session, text: str) -> ImageRoute | None:
    """The first router's claim on the turn; routers are asked only when an image generator is configured."""
    if not isinstance(session.app.engines.get("image_generator"), ImageGenerator):
        return None
    return first_route(session.app.registrations.routers, text)


async def _run_image_route(
    session: Session, ref: str | None, conversation_id: str, parts: list[PartRecord], route: ImageRoute,
    user_turn_id: str | None,
) -> None:
    """A turn claimed for an image: store it, acknowledge it as the reply, and start the job beside it.

    Events: turn.created, response.created, response.text.delta, image.started, response.done, then
    the job's image.progress and image.done."""
    app = session.app
    assert app.store is not None
    request = prepare(image_generator(session, ref), {"prompt": route.prompt}, ref)
    session.check_job_capacity(ref)
    if user_turn_id is None:
        begun = await app.store.begin_turn(conversation_id, parts, history_limit=1)
        await session.emit(TurnCreated(turn_id=begun.user_turn_id))
    else:
        begun = await app.store.begin_reply(conversation_id, user_turn_id, history_limit=1)
    response_id, text = begun.reply_id, route.acknowledgement
    await session.emit(ResponseCreated(response_id=response_id, turn_id=begun.user_turn_id))
    await session.emit(ResponseTextDelta(response_id=response_id, delta=text))
    try:
        # image.started comes before the acknowledgement's response.done, so a client that follows
        # the reply to its end knows a job is coming.
        await start_job(session, conversation_id, request, prompt_turn=False, reply_to=begun.user_turn_id)
    finally:
        done_seq = app.channels.reserve(conversation_id)
        try:
            await asyncio.shield(app.store.finish_reply(response_id, text=text, status="completed", last_seq=done_seq))
        finally:
            await session.emit(ResponseDone(response_id=response_id, status="completed", text=text), seq=done_seq)


async def _stream_reply(
    session: Session, engine: DialogueEngine, request: DialogueRequest, reply: Reply, turn_id: str, announce_turn: bool = True
) -> None:
    """Run the engine, relay its deltas, then store and announce how the reply ended, whatever happened."""
    app = session.app
    assert app.store is not None
    deltas: Relay[str] = Relay()
    started = time.perf_counter()
    first_token_at: float | None = None
    pieces: list[str] = []
    future: asyncio.Future[DialogueResult] | None = None
    broken: str | None = None  # why the engine's call was given up on (hung, or emitted something that is not text)
    timeout = app.config.limits.engine_timeout_s
    try:
        if announce_turn:
            await session.emit(TurnCreated(turn_id=turn_id))
        await session.emit(ResponseCreated(response_id=reply.response_id, turn_id=turn_id))
        gate = app.scheduler.gate

        def emit(delta: str) -> None:  # on the engine's thread, after each piece of text
            gate.pause_for_higher("dialogue", reply.cancelled)
            deltas.push(delta)

        future = app.scheduler.submit(engine, engine.generate, request, emit, reply.cancelled)
        async for item in deltas.until(future, timeout):
            if not isinstance(item, str):
                raise TypeError(f"the dialogue engine emitted {type(item).__name__} instead of text")
            if first_token_at is None:
                first_token_at = time.perf_counter()
            pieces.append(item)
            await session.emit(ResponseTextDelta(response_id=reply.response_id, delta=item))
    except asyncio.CancelledError:
        # The task itself was cancelled: stop the engine at its next token, then store how it ended.
        reply.cancel()
        if future is not None:
            await asyncio.wait([future])
        raise
    except (NoProgress, TypeError) as exc:
        broken = f"the dialogue engine made no progress for {timeout:g} s" if isinstance(exc, NoProgress) else str(exc)
        log.error("reply %s: %s", reply.response_id, broken)
        await app.scheduler.give_up(engine, future, reply.cancel)
    finally:
        text = "".join(pieces)
        if broken is not None:
            status, error, usage = "failed", ErrorBody(code="internal", message=broken), None
        else:
            status, error, usage = _outcome(future, reply)
        elapsed = time.perf_counter() - started
        timings = {"total_ms": round(elapsed * 1000, 3)}
        if first_token_at is not None:
            timings["time_to_first_token_ms"] = round((first_token_at - started) * 1000, 3)
        if usage and usage.get("completion_tokens") and elapsed > 0:
            timings["tokens_per_s"] = round(usage["completion_tokens"] / elapsed, 3)
        _record_reply(app, status, usage, timings)
        done_seq = app.channels.reserve(reply.conversation_id)
        try:
            await asyncio.shield(
                app.store.finish_reply(
                    reply.response_id, text=text, status=status, error=error.message if error else None,
                    usage=usage, last_seq=done_seq,
                )
            )
        except Exception:
            log.exception("storing reply %s failed", reply.response_id)
            status, error = "failed", ErrorBody(code="internal", message="the reply could not be stored")
        finally:  # the reserved seq is always published, or the conversation's later events would wait for it
            await session.emit(
                ResponseDone(response_id=reply.response_id, status=status, text=text, usage=usage, timings=timings, error=error),
                seq=done_seq,
            )


def _record_reply(app: App, status: str, usage: dict[str, int] | None, timings: dict[str, float]) -> None:
    """Metrics of an ended reply."""
    metrics = app.metrics
    metrics.replies.labels(status).inc()
    if usage:
        metrics.tokens.inc(usage.get("completion_tokens", 0))
    if "tokens_per_s" in timings:
        metrics.tokens_per_second.observe(timings["tokens_per_s"])
    if "time_to_first_token_ms" in timings:
        metrics.time_to_first_token.observe(timings["time_to_first_token_ms"] / 1000)


def _outcome(
    future: asyncio.Future[DialogueResult] | None, reply: Reply
) -> tuple[str, ErrorBody | None, dict[str, int] | None]:
    """Final status, error and usage of a finished, abandoned or never started engine call."""
    if future is None:
        return "failed", ErrorBody(code="internal", message="the reply could not be started"), None
    if not future.done() or future.cancelled():
        return "cancelled", None, None
    exc = future.exception()
    if exc is not None:
        if isinstance(exc, EngineError):
            return "failed", ErrorBody(code=error_code(exc.code), message=str(exc)), None
        log.error("dialogue engine failed", exc_info=exc)
        return "failed", ErrorBody(code="internal", message=f"the dialogue engine failed: {type(exc).__name__}: {exc}"), None
    result = future.result()
    if not isinstance(result, DialogueResult):
        return "failed", ErrorBody(code="internal", message=f"the dialogue engine returned {type(result).__name__} instead of a DialogueResult"), None
    usage = {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}
    status = "cancelled" if result.finish_reason == "cancelled" or reply.cancelled.is_set() else "completed"
    return status, None, usage
