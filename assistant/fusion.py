"""Fusion of a turn's images: features from the image encoder, and text from modalities for text-only engines."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from assistant.context import image_numbers
from assistant.engines import EngineError
from assistant.image_features import features_for
from assistant.modalities import ImageInput
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
    if not images:
        return
    try:
        features = await features_for(app, [(image.sha256, image.image) for image in images])
    except EngineError as exc:
        log.warning("image encoder failed; the turn goes on without image features: %s", exc)
        features = {}
    if not app.late_fusion or not app.modalities:
        return
    encoder = app.engines.get("image_encoder")
    by_sha = {image.sha256: image for image in reversed(images)}
    inputs = [  # an image sent twice in one turn is described once
        ImageInput(
            index=index, sha256=sha, mime=by_sha[sha].mime, data=by_sha[sha].data, image=by_sha[sha].image,
            features=features.get(sha), encoder_id=encoder.id if encoder is not None else None,
        )
        for sha, index in image_numbers([image.sha256 for image in images]).items()
    ]
    described = await describe_images(app, inputs)
    if described:
        await app.store.add_parts(turn_id, [PartRecord(kind="image_text", text=text, attachment_sha256=sha) for sha, text in described])


async def describe_images(app: App, images: list[ImageInput]) -> list[tuple[str, str]]:
    """(sha256, text) for every description the loaded modalities give, image by image, modality by modality.

    Modalities run side by side, each on its own worker thread.
    """
    calls = [
        (image, entry, app.scheduler.submit_named(f"modality-{entry.name}", entry.modality.describe, image))
        for image in images
        for entry in app.modalities
    ]
    timeout = app.config.limits.engine_timeout_s
    if calls:
        await asyncio.wait([future for _, _, future in calls], timeout=timeout)
    found = []
    for image, entry, future in calls:
        if not future.done():
            log.warning("modality %s gave nothing for image %s within %g s; skipped", entry.name, image.sha256[:12], timeout)
            app.scheduler.abandon(key=f"modality-{entry.name}")
            continue
        exc = future.exception()
        if exc is not None:
            log.warning("modality %s failed on image %s: %s: %s", entry.name, image.sha256[:12], type(exc).__name__, exc)
            continue
        text = future.result()
        if text is None:
            continue
        if not isinstance(text, str):
            log.warning("modality %s returned %s instead of text; ignored", entry.name, type(text).__name__)
            continue
        text = " ".join(text.split())
        if text:
            found.append((image.sha256, text[:MAX_DESCRIPTION_CHARS]))
    return found
