"""Image features: each image encoded once per encoder, stored by (sha256, encoder id), and searched.

The configured image encoder (`[engines] image_encoder`) turns images into unit vectors. A turn's
images are encoded in one batched call, and only those whose features are not stored yet for this
encoder id: the same image sent again is never encoded again. `conversation.search` ranks a
conversation's images by cosine similarity to the encoded query.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.engines import EngineError, ImageEncoder
from assistant.errors import AssistantError
from assistant.image_input import ImageInputError, decode_image

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.store import ImageRef

log = logging.getLogger("assistant.image_features")


def image_encoder(app: App) -> ImageEncoder | None:
    """The configured image encoder, or None."""
    engine = app.engines.get("image_encoder")
    return engine if isinstance(engine, ImageEncoder) else None


async def features_for(app: App, images: list[tuple[str, Any]], store: bool = True) -> dict[str, np.ndarray]:
    """Feature vectors by sha256 for (sha256, PIL image) pairs; {} when no encoder is configured.

    Stored vectors are read back; the rest are encoded in one call on the encoder's worker and stored
    (with `store=False`, for pictures that are not stored attachments, nothing is read or stored).
    """
    encoder = image_encoder(app)
    if encoder is None or not images:
        return {}
    assert app.store is not None
    stored = await app.store.image_features([sha for sha, _ in images], encoder.id) if store else {}
    found = {sha: np.frombuffer(vector, dtype=np.float32) for sha, vector in stored.items()}
    missing: dict[str, Any] = {}
    for sha, image in images:
        if sha not in found:
            missing.setdefault(sha, image)
    if missing:
        timeout = app.config.limits.engine_timeout_s
        try:
            vectors = await app.scheduler.call(encoder, timeout, encoder.encode_images, list(missing.values()), batch=len(missing))
        except TimeoutError:
            raise EngineError(f"image encoder {encoder.id} did not answer within {timeout:g} s", code="internal") from None
        encoded = dict(zip(missing, _checked(encoder, vectors, len(missing))))
        if store:
            await app.store.put_image_features(encoder.id, {sha: v.tobytes() for sha, v in encoded.items()}, encoder.dim)
        found.update(encoded)
    return found


def _checked(encoder: ImageEncoder, vectors: Any, count: int) -> np.ndarray:
    """The encoder's output as float32 (count, dim), or EngineError when it is anything else."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.zeros((0,), dtype=np.float32)
    if array.shape != (count, encoder.dim) or not np.isfinite(array).all():
        raise EngineError(
            f"image encoder {encoder.id} returned {getattr(array, 'shape', '?')} for {count} input(s); "
            f"expected ({count}, {encoder.dim}) finite floats",
            code="internal",
        )
    return array


@dataclass(frozen=True)
class SearchHit:
    """One image of the conversation and how well it matches the query (cosine similarity)."""

    sha256: str
    turn_id: str
    role: str
    mime: str
    score: float


async def search_images(app: App, conversation_id: str, query: str, limit: int, ref: str | None = None) -> list[SearchHit]:
    """The conversation's images ranked by similarity to `query`, best first, at most `limit`.

    Images stored before an encoder was configured (or with another one) are encoded now, once.
    """
    encoder = image_encoder(app)
    if encoder is None:
        raise AssistantError("unavailable", "searching images needs an image encoder ([engines] image_encoder)", ref)
    assert app.store is not None
    refs: dict[str, ImageRef] = {}
    for image_ref in await app.store.conversation_images(conversation_id):
        refs.setdefault(image_ref.sha256, image_ref)
    if not refs:
        return []
    stored = await app.store.image_features(list(refs), encoder.id)
    missing = [sha for sha in refs if sha not in stored]
    pixels = [pair for pair in await asyncio.gather(*(stored_image(app, sha) for sha in missing)) if pair is not None]
    try:
        vectors = await features_for(app, pixels)
        vectors.update({sha: np.frombuffer(v, dtype=np.float32) for sha, v in stored.items()})
        text = _checked(encoder, await app.scheduler.call(encoder, app.config.limits.engine_timeout_s, encoder.encode_texts, [query]), 1)[0]
    except TimeoutError:
        raise AssistantError("internal", "search failed: the image encoder did not answer in time", ref) from None
    except EngineError as exc:
        raise AssistantError("internal", f"search failed: {exc}", ref) from None
    hits = [
        SearchHit(sha, refs[sha].turn_id, refs[sha].role, refs[sha].mime, round(float(vector @ text), 6))
        for sha, vector in vectors.items()
    ]
    hits.sort(key=lambda hit: hit.score, reverse=True)
    return hits[:limit]


async def stored_image(app: App, sha256: str) -> tuple[str, Any] | None:
    """(sha256, decoded pixels) of a stored image attachment; None (logged) if it cannot be decoded."""
    assert app.store is not None
    found = await app.store.attachment(sha256)
    if found is None:
        return None
    limits = app.config.image_input
    try:
        decoded = await asyncio.to_thread(decode_image, found[1], max(limits.max_bytes, len(found[1])), 1 << 62, limits.max_decoded_pixels)
    except ImageInputError as exc:
        log.warning("stored image %s cannot be decoded for search: %s", sha256[:12], exc)
        return None
    return sha256, decoded.image
