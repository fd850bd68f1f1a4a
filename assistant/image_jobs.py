"""Image jobs: from a request (an image request or a routed turn) to a stored, announced image.

A job is an assistant turn of its own. It is committed `in_progress` before the engine starts,
announced with `ImageStarted`, reports `ImageProgress` after every step, and ends with `ImageDone`
once its PNG (or its cancelled or failed status) is committed. Jobs run on the image engine's own
workers, so the conversation's text turns go on while a job paints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant import events
from assistant.async_calls import async_variant
from assistant.engines import EngineError, GeneratedImage, GenerationCancelled, ImageGenerator, ImageRequest
from assistant.errors import AssistantError
from assistant.events import EndStatus, ErrorInfo
from assistant.reply import announce_end
from assistant.scheduler import NoProgress, Relay

if TYPE_CHECKING:
    from assistant.scope import ConversationScope

log = logging.getLogger("assistant.image_jobs")

HOW_TO_CONFIGURE = (
    "no image generator is configured: set [engines] image_generator = \"diffusers\" and "
    "[plugins.diffusers_image] model = a diffusers text-to-image pipeline folder or hub id"
)


@dataclass(eq=False)
class ImageJob:
    """A job in flight: what a cancel, a client leaving and shutdown act on."""

    job_id: str
    conversation: ConversationScope
    request: ImageRequest
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def conversation_id(self) -> str:
        """The conversation the job paints for."""
        return self.conversation.id

    def cancel(self) -> None:
        """Ask the engine to stop at its next step (or never start)."""
        self.cancelled.set()


def image_generator(engines: dict[str, Any], ref: str | None = None) -> ImageGenerator:
    """The configured image engine, or AssistantError(unavailable, about event `ref`) saying how to configure one."""
    engine = engines.get("image_generator")
    if not isinstance(engine, ImageGenerator):
        raise AssistantError("unavailable", HOW_TO_CONFIGURE, ref)
    return engine


def prepare(engine: ImageGenerator, params: dict[str, Any], ref: str | None) -> ImageRequest:
    """Validated request, or AssistantError(bad_request) naming every problem."""
    try:
        return engine.prepare(**params)
    except EngineError as exc:
        log.warning("image generator %s refused a request: code %s: %s", engine.id, exc.code, exc)
        raise AssistantError("bad_request", str(exc), ref) from None


def check_capacity(conversation: ConversationScope, ref: str | None) -> None:
    """rate_limited when this client already has its most image jobs, or the image engine's queue is full."""
    limit = conversation.app.config.images.max_jobs_per_connection
    if len(conversation.jobs) >= limit:
        raise AssistantError("rate_limited", f"{limit} image jobs are already queued or painting on this connection", ref)
    conversation.app.scheduler.admit(image_generator(conversation.app.engines, ref), ref)


async def start_job(
    conversation: ConversationScope, request: ImageRequest, *, prompt_turn: bool, reply_to: str | None = None
) -> ImageJob:
    """Commit the job's turn(s), announce it, and run it in the background; returns the job."""
    app = conversation.app
    assert app.store is not None
    engine = image_generator(app.engines)
    user_turn, job_id = await app.store.begin_image_job(conversation.id, request.prompt if prompt_turn else None, reply_to)
    job = ImageJob(job_id, conversation, request)
    app.image_jobs.add(job)
    conversation.jobs.add(job)
    if app.cancelling_replies:
        job.cancel()
    progress: Relay[events.ImageProgress] = Relay()

    on_loop = async_variant(engine, engine.generate) is not None  # never block the event loop

    def on_step(step: int, total: int, preview: bytes | None) -> None:
        if not on_loop:
            app.scheduler.gate.pause_for_higher("image_generator", job.cancelled)
        progress.push(events.ImageProgress(job_id=job.job_id, step=step, total=total, preview=preview or None))

    # submitted here, in the task that was admitted: the call takes the admitted place at once
    future = app.scheduler.submit(engine, engine.generate, job.request, on_step, job.cancelled)
    await conversation.publish(events.ImageStarted(
        job_id=job_id, turn_id=user_turn, prompt=request.prompt, width=request.width, height=request.height,
        steps=request.steps, seed=request.seed,
    ))
    task = asyncio.create_task(_run(engine, job, progress, future))
    app.turns.add(task)
    task.add_done_callback(app.turns.discard)
    return job


async def _run(engine: ImageGenerator, job: ImageJob, progress: Relay[events.ImageProgress], future: asyncio.Future[GeneratedImage]) -> None:
    """Paint (the engine call already submitted), relaying progress in order, then commit and announce how the job ended."""
    conversation = job.conversation
    app = conversation.app
    assert app.store is not None
    store = app.store
    began = time.perf_counter()
    timeout = app.config.limits.engine_timeout_s
    stalled = False
    try:
        async for event in progress.until(future, timeout):
            await conversation.publish(event)
    except NoProgress:
        stalled = True
        log.error("image job %s: no step for %g s; given up", job.job_id, timeout)
        await app.scheduler.give_up(engine, future, job.cancel)
    finally:
        if not future.done():  # the task itself was cancelled: stop the engine before recording the end
            job.cancel()
            await asyncio.wait([future])
        status: EndStatus
        error: ErrorInfo | None
        result: GeneratedImage | None
        if stalled:
            status, error, result = "failed", ErrorInfo("internal", f"the image generator made no progress for {timeout:g} s"), None
        else:
            status, error, result = _outcome(future, job, engine.id)
        app.metrics.image_job_seconds.labels(status).observe(time.perf_counter() - began)
        png = ("image/png", result.png) if result else None

        def end_event(sha256: str | None, stored: bool) -> events.Event:
            if not stored:
                return events.ImageDone(job.job_id, "failed", job.request.seed, error=ErrorInfo("internal", "the image could not be stored"))
            return events.ImageDone(
                job.job_id, status, job.request.seed, mime=png[0] if png else None,
                data=png[1] if png else None, sha256=sha256, error=error,
            )

        try:
            await announce_end(
                conversation, f"image job {job.job_id}",
                lambda seq: store.finish_reply(
                    job.job_id, text="", status=status, error=error.message if error else None, last_seq=seq, image=png,
                ),
                end_event,
            )
        finally:  # the job counts as in progress until its end is stored and announced
            app.image_jobs.discard(job)
            conversation.jobs.discard(job)


def _outcome(future: asyncio.Future[GeneratedImage], job: ImageJob, engine_id: str) -> tuple[EndStatus, ErrorInfo | None, GeneratedImage | None]:
    """Final status, error and image of a finished engine call."""
    if future.cancelled():
        return "cancelled", None, None
    exc = future.exception()
    if exc is None:
        result = future.result()
        if not isinstance(result, GeneratedImage):
            return "failed", ErrorInfo("internal", f"the image generator returned {type(result).__name__} instead of a GeneratedImage"), None
        return "completed", None, result
    if isinstance(exc, GenerationCancelled):
        return "cancelled", None, None
    if isinstance(exc, EngineError):
        log.warning("image generator %s refused job %s: code %s: %s", engine_id, job.job_id, exc.code, exc)
        return "failed", ErrorInfo("bad_request" if exc.code == "bad_request" else "internal", str(exc)), None
    log.error("image job %s failed", job.job_id, exc_info=exc)
    return "failed", ErrorInfo("internal", f"the image generator failed: {type(exc).__name__}: {exc}"), None
