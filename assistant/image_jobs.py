"""Image jobs: from a request (an `image.generate` event or a routed turn) to a stored, streamed image.

A job is an assistant turn of its own. It is committed `in_progress` before the engine starts,
announced with `image.started`, reports `image.progress` after every step, and ends with
`image.done` once its PNG (or its cancelled or failed status) is committed. Jobs run on the image
engine's own workers, so the connection's text turns go on while a job paints.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.engines import EngineError, GeneratedImage, GenerationCancelled, ImageGenerator, ImageRequest
from assistant.protocol import ErrorBody, ImageDone, ImageProgress, ImageStarted, ProtocolError
from assistant.scheduler import NoProgress, Relay

if TYPE_CHECKING:
    from assistant.session import Session

log = logging.getLogger("assistant.image_jobs")

HOW_TO_CONFIGURE = (
    "no image generator is configured: set [engines] image_generator = \"diffusers\" and "
    "[plugins.diffusers_image] model = a diffusers text-to-image pipeline folder or hub id"
)


@dataclass(eq=False)
class ImageJob:
    """A job in flight: what `image.cancel`, disconnects and shutdown act on."""

    job_id: str
    conversation_id: str
    session: Session
    request: ImageRequest
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the engine to stop at its next step (or never start)."""
        self.cancelled.set()


def image_generator(session: Session, ref: str | None = None) -> ImageGenerator:
    """The configured image engine, or ProtocolError(unavailable, about event `ref`) saying how to configure one."""
    engine = session.app.engines.get("image_generator")
    if not isinstance(engine, ImageGenerator):
        raise ProtocolError("unavailable", HOW_TO_CONFIGURE, ref)
    return engine


def prepare(engine: ImageGenerator, params: dict[str, Any], ref: str | None) -> ImageRequest:
    """Validated request, or ProtocolError(bad_request) naming every problem."""
    try:
        return engine.prepare(**params)
    except EngineError as exc:
        raise ProtocolError("bad_request", str(exc), ref) from None


async def start_job(
    session: Session, conversation_id: str, request: ImageRequest, *, prompt_turn: bool, reply_to: str | None = None
) -> ImageJob:
    """Commit the job's turn(s), announce it, and run it in the background; returns the job."""
    app = session.app
    assert app.store is not None
    engine = image_generator(session)
    user_turn, job_id = await app.store.begin_image_job(conversation_id, request.prompt if prompt_turn else None, reply_to)
    job = ImageJob(job_id, conversation_id, session, request)
    app.image_jobs.add(job)
    session.jobs.add(job)
    if app.cancelling_replies:
        job.cancel()
    await session.emit(ImageStarted(
        job_id=job_id, turn_id=user_turn, prompt=request.prompt, width=request.width, height=request.height,
        steps=request.steps, seed=request.seed,
    ))
    task = asyncio.create_task(_run(engine, job))
    app.turns.add(task)
    task.add_done_callback(app.turns.discard)
    return job


async def _run(engine: ImageGenerator, job: ImageJob) -> None:
    """Paint, relaying progress in order, then commit and announce how the job ended."""
    app = job.session.app
    assert app.store is not None
    progress: Relay[ImageProgress] = Relay()

    def on_step(step: int, total: int, preview: bytes | None) -> None:
        app.scheduler.gate.pause_for_higher("image_generator", job.cancelled)
        progress.push(ImageProgress(job_id=job.job_id, step=step, total=total,
                                    preview=base64.b64encode(preview).decode() if preview else None))

    began = time.perf_counter()
    future = app.scheduler.submit(engine, engine.generate, job.request, on_step, job.cancelled)
    timeout = app.config.limits.engine_timeout_s
    stalled = False
    try:
        async for event in progress.until(future, timeout):
            await job.session.emit(event)
    except NoProgress:
        stalled = True
        log.error("image job %s: no step for %g s; given up", job.job_id, timeout)
        await app.scheduler.give_up(engine, future, job.cancel)
    finally:
        if not future.done():  # the task itself was cancelled: stop the engine before recording the end
            job.cancel()
            await asyncio.wait([future])
        app.image_jobs.discard(job)
        job.session.jobs.discard(job)
        if stalled:
            status, error, result = "failed", ErrorBody(code="internal", message=f"the image generator made no progress for {timeout:g} s"), None
        else:
            status, error, result = _outcome(future, job)
        app.metrics.image_job_seconds.labels(status).observe(time.perf_counter() - began)
        done_seq = app.channels.reserve(job.conversation_id)
        sha256 = None
        try:
            sha256 = await asyncio.shield(app.store.finish_reply(
                job.job_id, text="", status=status, error=error.message if error else None, last_seq=done_seq,
                image=("image/png", result.png) if result else None,
            ))
        except Exception:
            log.exception("storing image job %s failed", job.job_id)
            status, error, result = "failed", ErrorBody(code="internal", message="the image could not be stored"), None
        finally:  # the reserved seq is always published, or the conversation's later events would wait for it
            await job.session.emit(
                ImageDone(
                    job_id=job.job_id, status=status, seed=job.request.seed, error=error, sha256=sha256,
                    mime="image/png" if result else None, data=base64.b64encode(result.png).decode() if result else None,
                ),
                seq=done_seq,
            )


def _outcome(future: asyncio.Future[GeneratedImage], job: ImageJob) -> tuple[str, ErrorBody | None, GeneratedImage | None]:
    """Final status, error and image of a finished engine call."""
    if future.cancelled():
        return "cancelled", None, None
    exc = future.exception()
    if exc is None:
        result = future.result()
        if not isinstance(result, GeneratedImage):
            return "failed", ErrorBody(code="internal", message=f"the image generator returned {type(result).__name__} instead of a GeneratedImage"), None
        return "completed", None, result
    if isinstance(exc, GenerationCancelled):
        return "cancelled", None, None
    if isinstance(exc, EngineError):
        code = "bad_request" if exc.code == "bad_request" else "internal"
        return "failed", ErrorBody(code=code, message=str(exc)), None  # type: ignore[arg-type]
    log.error("image job %s failed", job.job_id, exc_info=exc)
    return "failed", ErrorBody(code="internal", message=f"the image generator failed: {type(exc).__name__}: {exc}"), None
