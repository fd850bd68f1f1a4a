"""Late fusion: modality plugins turn a part into text for dialogue engines that only read.

A dialogue engine whose capabilities say `accepts_images` sees the images themselves (early fusion).
For any other engine, each registered modality describes each image part of a user turn (the text
it reads, the labels it sees, the camera that took it...). Each description is stored as an
`image_text` part of the turn, linked to its image by sha256, and reaches the engine's context as
`[Image N: ...]` before the turn's text. A modality that raises, returns something other than a
string, or takes longer than `[limits] engine_timeout_s` is logged and skipped: the turn goes on with
what the others said.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assistant.types import AppView

log = logging.getLogger("assistant.modalities")



@dataclass(frozen=True)
class ImageInput:
    """An image part as a modality sees it."""

    index: int  # 1-based position among the turn's images
    sha256: str
    mime: str
    data: bytes  # the bytes as the client sent them (EXIF and all)
    image: Any  # PIL.Image.Image: RGB, EXIF orientation applied
    features: Any | None = None  # the configured image encoder's unit vector (numpy), if one is configured
    encoder_id: str | None = None


class Modality(ABC):
    """Turns an image part into text for the fused context. Register with `register_modalities`."""

    def load(self, app: AppView) -> bool:
        """Load models once, at startup (blocking, off the event loop). Return False to sit out.

        Called only when the configured dialogue engine reads text (no `accepts_images`). Default:
        nothing to load. A modality that needs an engine that is not configured returns False.
        """
        return True

    @abstractmethod
    def describe(self, image: ImageInput) -> str | None:
        """Text about the image for the dialogue engine, or None when there is nothing to say.

        Blocking: runs on the modality's own worker thread, one image at a time. Keep it short; it
        is stored with the turn and shown to the engine as `[Image N: <text>]`.
        """

    def describe_batch(self, images: list[ImageInput]) -> list[str | None]:
        """Text about each of a turn's images, in order: override to describe them in one batch.

        A modality that overrides it gets one call per turn instead of one `describe` per image
        (an exception then loses the descriptions of the whole turn, not of one image). Default:
        `describe` image by image.
        """
        return [self.describe(image) for image in images]

    def cache_key(self) -> str | None:
        """A name for this modality and the settings its text depends on, or None (the default).

        With a key, what the modality says about an image (or that it had nothing to say) is stored by
        (sha256, key), and the same image is never described again by the same key, also after a
        restart. Change the key when the output would change (another model, other settings).
        """
        return None

    @property
    def batched(self) -> bool:
        """True when the modality overrides `describe_batch`."""
        return type(self).describe_batch is not Modality.describe_batch

    def close(self) -> None:
        """Release what `load` took; called once at shutdown."""


@dataclass(frozen=True)
class RegisteredModality:
    """A modality with the name and plugin it was registered under."""

    name: str
    modality: Modality
    plugin: str


async def load_modalities(app: AppView, registered: list[RegisteredModality]) -> list[RegisteredModality]:
    """Load each modality off the loop; those whose `load` returns False sit out."""
    loaded = []
    for entry in registered:
        if await asyncio.to_thread(entry.modality.load, app):
            loaded.append(entry)
            log.info("modality ready: %s (plugin %s)", entry.name, entry.plugin)
        else:
            log.info("modality %s sits out (what it needs is not configured)", entry.name)
    return loaded
