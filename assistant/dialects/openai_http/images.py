"""`POST /v1/images/generations`: images painted by the image generator, one after another.

With `response_format: b64_json` nothing is stored. With `url` (OpenAI's default) the images are stored
once all are painted, in one transaction, as a conversation of the caller's (the prompt, then one
assistant turn per image), and each URL is `/attachments/<sha256>` on this server: fetched with the
same bearer token, like every attachment. A request that fails stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from assistant.dialects.http import request_principal, request_slot
from assistant.dialects.openai_http.catalog import resolve_model
from assistant.dialects.openai_http.errors import OpenAIError
from assistant.dialects.openai_http.handling import finished_unless_gone, hold_for_shutdown, json_body
from assistant.dialects.openai_http.models import ImageGenerationRequest
from assistant.engines import EngineError, GeneratedImage, GenerationCancelled, ImageGenerator, ImageRequest
from assistant.errors import AssistantError
from assistant.scheduler import NoProgress, Relay

if TYPE_CHECKING:
    from starlette.requests import Request

    from assistant.app import App
    from assistant.dialects import ServerContext

SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


def image_size(size: str | None) -> tuple[int | None, int | None]:
    """(width, height) of `WIDTHxHEIGHT`; (None, None) for `auto` or none (the engine's default)."""
    if size is None or size == "auto":
        return None, None
    match = SIZE.fullmatch(size)
    if match is None:
        raise OpenAIError(400, f"size: {size!r} is not WIDTHxHEIGHT (such as 512x512) or auto", param="size", code="invalid_size")
    return int(match[1]), int(match[2])


def prepare(engine: ImageGenerator, prompt: str, width: int | None, height: int | None) -> ImageRequest:
    """The engine's validated request; a 400 naming `size` or `prompt` for what it refuses."""
    try:
        return engine.prepare(prompt, width=width, height=height)
    except EngineError as exc:
        param = "size" if re.search(r"width|height|pixels", str(exc)) else "prompt"
        raise OpenAIError(400, f"{param}: {exc}", param=param, code="invalid_size" if param == "size" else "invalid_value") from None


async def paint(app: App, engine: ImageGenerator, request: ImageRequest, cancelled: threading.Event) -> GeneratedImage:
    """One image, on the engine's worker, given up on when it makes no progress; AssistantError when it fails.

    Setting `cancelled` stops the engine at its next step.
    """
    if cancelled.is_set():
        raise AssistantError("unavailable", "the server is shutting down")
    app.scheduler.admit(engine)
    steps: Relay[int] = Relay()
    timeout = app.config.limits.engine_timeout_s
    try:
        future = app.scheduler.submit(engine, engine.generate, request, lambda step, total, preview: steps.push(step), cancelled)
    finally:
        app.scheduler.release_admissions()
    try:
        async for _ in steps.until(future, timeout):
            pass
    except NoProgress:
        await app.scheduler.give_up(engine, future, cancelled.set)
        raise AssistantError("internal", f"the image generator made no progress for {timeout:g} s") from None
    except BaseException:  # the request was cancelled (the client went away): stop the engine before going on
        cancelled.set()
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # GenerationCancelled, most likely: retrieved, so nothing logs it as lost
        raise
    try:
        result = future.result()
    except GenerationCancelled:
        raise AssistantError("unavailable", "the image was cancelled (the server is shutting down)") from None
    except EngineError as exc:
        raise AssistantError("bad_request" if exc.code == "bad_request" else "internal", f"the image generator failed: {exc}") from None
    if not isinstance(result, GeneratedImage):
        raise AssistantError("internal", f"the image generator returned {type(result).__name__} instead of a GeneratedImage")
    return result


async def paint_all(app: App, engine: ImageGenerator, requests: list[ImageRequest], cancelled: threading.Event) -> list[GeneratedImage]:
    """The images, one after another."""
    return [await paint(app, engine, one, cancelled) for one in requests]


async def generations(server: ServerContext, request: Request) -> Response:
    """`POST /v1/images/generations`."""
    app = server.app
    principal = await request_principal(server, request)
    async with request_slot(server, request, principal):
        body = await json_body(server, request, ImageGenerationRequest)
        engine = resolve_model(app, body.model, "image_generator")
        assert isinstance(engine, ImageGenerator)
        width, height = image_size(body.size)
        requests = [prepare(engine, body.prompt, width, height) for _ in range(body.n)]  # each its own seed
        cancelled = threading.Event()
        painting = asyncio.create_task(paint_all(app, engine, requests, cancelled))
        hold_for_shutdown(app, cancelled.set, painting)
        if not await finished_unless_gone(request, painting):
            return Response(status_code=499)  # the client went away: the engine was stopped, nothing is stored
        images = painting.result()
        data: list[dict[str, Any]]
        if body.response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(image.png).decode(), "revised_prompt": None} for image in images]
        else:
            assert app.store is not None
            _, shas = await app.store.add_generated_images(principal, body.prompt, [("image/png", image.png) for image in images])
            data = [{"url": f"{str(request.base_url).rstrip('/')}/attachments/{sha}", "revised_prompt": None} for sha in shas]
        first = images[0]
        return JSONResponse({"created": int(time.time()), "data": data, "output_format": "png", "size": f"{first.width}x{first.height}"})
