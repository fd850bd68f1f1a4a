"""Fusion of a turn's images: features from the image encoder, and text from modalities for text-only engines."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from assistant.context import image_numbers
from assistant.engines import EngineError
from assistant.image_features import features_for
from assistant.modalities import ImageInput, describe_images
from assistant.store import PartRecord

if TYPE_CHECKING:
    from assistant.app import App
    from assistant.image_input import DecodedImage

log = logging.getLogger("assistant.fusion")


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
