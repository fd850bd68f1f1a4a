"""Fusion of a turn's images: features from the image encoder, and text from modalities for text-only engines."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from assistant.context import image_numbers
from assistant.engines import EngineError
from assistant.image_features import features_for
from assistant.modalities import ImageInput, RegisteredModality
from assistant.store import PartRecord

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.image_input import DecodedImage

log = logging.getLogger("assistant.fusion")

MAX_DESCRIPTION_CHARS = 4000
"""A longer description is cut: one plugin must not flood the context."""


async def fuse_images(app: App, turn_id: str, images: list[DecodedImage]) -> None:
    """Encode the turn's images (features stored once per image) and, for a text-only dialogue engine,
    store what each modality says about each image as `image_text` parts of the turn."""
    assert app.store is not None
    described = await encode_and_describe(app, images)
    if described:
        await app.store.add_parts(turn_id, [PartRecord(kind="image_text", text=text, attachment_sha256=sha) for sha, text in described])


async def encode_and_describe(app: App, images: list[DecodedImage]) -> list[tuple[str, str]]:
    """Encode images (features stored once per image) and, for a text-only dialogue engine, what each
    modality says about each one, as (sha256, text) pairs; nothing to say for an engine that sees images."""
    if not images:
        return []
    try:
        features = await features_for(app, [(image.sha256, image.image) for image in images])
    except EngineError as exc:
        encoder_id = getattr(app.engines.get("image_encoder"), "id", None)
        log.warning("image encoder %s failed (code %s); the turn goes on without image features: %s", encoder_id, exc.code, exc)
        features = {}
    if not app.late_fusion or not app.modalities:
        return []
    encoder = app.engines.get("image_encoder")
    by_sha = {image.sha256: image for image in reversed(images)}
    inputs = [  # an image sent twice in one turn is described once
        ImageInput(
            index=index, sha256=sha, mime=by_sha[sha].mime, data=by_sha[sha].data, image=by_sha[sha].image,
            features=features.get(sha), encoder_id=encoder.id if encoder is not None else None,
        )
        for sha, index in image_numbers([image.sha256 for image in images]).items()
    ]
    return await describe_images(app, inputs)


async def describe_images(app: App, images: list[ImageInput], cache: bool = True) -> list[tuple[str, str]]:
    """(sha256, text) for every description the loaded modalities give, image by image, modality by modality.

    Modalities run side by side, each on its own worker thread: a batched one (`describe_batch`)
    gets the turn's images in one call, any other one call per image. A modality with a
    `cache_key` describes each image once: its stored descriptions are used, and new ones stored
    (not with `cache=False`, for pictures that are not stored attachments, such as a video's frames).
    """
    assert app.store is not None
    keys = {entry.name: (entry.modality.cache_key() if cache else None) for entry in app.modalities}
    cached = [key for key in keys.values() if key]
    stored = await app.store.image_descriptions([image.sha256 for image in images], cached) if cached else {}
    texts: dict[tuple[str, str], str | None] = {}  # (sha256, modality) -> what it said, None for nothing
    calls: list[tuple[list[ImageInput], RegisteredModality, asyncio.Future[Any], bool]] = []  # (images, modality, call, batched)
    for entry in app.modalities:
        key = keys[entry.name]
        todo = []
        for image in images:
            if key is not None and (image.sha256, key) in stored:
                texts[(image.sha256, entry.name)] = stored[(image.sha256, key)]
            else:
                todo.append(image)
        worker = f"modality-{entry.name}"
        if todo and entry.modality.batched:
            calls.append((todo, entry, app.scheduler.submit_named(worker, entry.modality.describe_batch, todo), True))
        else:
            calls += [([image], entry, app.scheduler.submit_named(worker, entry.modality.describe, image), False) for image in todo]
    timeout = app.config.limits.engine_timeout_s
    if calls:
        await asyncio.wait([future for _, _, future, _ in calls], timeout=timeout)
    new: dict[tuple[str, str], str | None] = {}  # (sha256, cache key) -> text, to store
    for described, entry, future, batched in calls:
        what = f"image {described[0].sha256[:12]}" if len(described) == 1 else f"{len(described)} images"
        if not future.done():
            log.warning("modality %s gave nothing for %s within %g s; skipped", entry.name, what, timeout)
            app.scheduler.abandon(key=f"modality-{entry.name}")
            continue
        exc = future.exception()
        if exc is not None:
            log.warning("modality %s failed on %s: %s: %s", entry.name, what, type(exc).__name__, exc)
            continue
        said = future.result() if batched else [future.result()]
        if not isinstance(said, list) or len(said) != len(described):
            log.warning("modality %s returned %s for %s instead of one text per image; ignored", entry.name, type(said).__name__, what)
            continue
        for image, text in zip(described, said, strict=True):
            if text is not None and not isinstance(text, str):
                log.warning("modality %s returned %s instead of text; ignored", entry.name, type(text).__name__)
                continue
            if text is not None:
                text = " ".join(text.split())[:MAX_DESCRIPTION_CHARS] or None
            texts[(image.sha256, entry.name)] = text
            key = keys[entry.name]
            if key is not None:
                new[(image.sha256, key)] = text
    if new:
        try:
            await app.store.put_image_descriptions(new)
        except Exception:  # a cache: the turn goes on without it
            log.exception("storing image descriptions failed")
    return [
        (image.sha256, text) for image in images for entry in app.modalities
        if (text := texts.get((image.sha256, entry.name))) is not None
    ]
