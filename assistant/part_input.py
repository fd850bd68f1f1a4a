"""A turn's plugin parts after decoding: described as text for a text-only engine, with the core's tools.

`describe_parts` runs once the user turn is stored: for each plugin part whose type the dialogue
engine does not take natively, the part type's `describe` turns it into text (with `CoreTools`: the
image path, ASR, a worker thread), stored as a `<name>_text` part linked to the part's attachment. A
`describe` that raises, returns something other than text, or takes longer than `[limits]
engine_timeout_s` is logged; the part then reaches the engine as `[Label N: no description available]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from assistant import audio
from assistant.engines import AsrEngine, EngineError, MessagePart, Transcript
from assistant.fusion import describe_images
from assistant.image_features import features_for
from assistant.modalities import ImageInput
from assistant.part_types import MAX_PART_TEXT_CHARS, DecodedPart, PartType, label_of
from assistant.store import PartRecord

if TYPE_CHECKING:
    from assistant.app import App

log = logging.getLogger("assistant.part_input")

T = TypeVar("T")


@dataclass(frozen=True)
class DecodedPluginPart:
    """A plugin part of a turn, decoded: its type, the attachment its bytes are stored as, what decode gave."""

    type: str
    sha256: str
    mime: str
    decoded: DecodedPart


class CoreTools:
    """The `assistant.PartTools` the core lends a part type's `describe`: the image path, ASR, a worker."""

    def __init__(self, app: App, part_type: str) -> None:
        self.app = app
        self.part_type = part_type

    async def describe_images(self, images: list[Any]) -> list[str | None]:
        """What the loaded modalities say about each PIL image (features from the image encoder), joined by '; '."""
        if not images or not self.app.modalities:
            return [None] * len(images)
        try:
            inputs = await self.run(_image_inputs, images)
            try:
                features = await features_for(self.app, [(i.sha256, i.image) for i in inputs], store=False)
            except EngineError as exc:
                log.warning("image encoder failed on %s pictures; described without features: %s", self.part_type, exc)
                features = {}
            encoder = self.app.engines.get("image_encoder")
            inputs = [
                ImageInput(i.index, i.sha256, i.mime, i.data, i.image, features.get(i.sha256), encoder.id if encoder else None)
                for i in inputs
            ]
            said = await describe_images(self.app, inputs, cache=False)
        except Exception:
            log.exception("describing %s pictures failed", self.part_type)
            return [None] * len(images)
        texts: dict[str, list[str]] = {}
        for sha, text in said:
            texts.setdefault(sha, []).append(text)
        return ["; ".join(texts[i.sha256]) if i.sha256 in texts else None for i in inputs]

    async def transcribe(self, samples: Any, language: str | None = None) -> Transcript | None:
        """The ASR engine's transcript of 16 kHz mono float32 samples; None without an ASR engine; EngineError on failure."""
        engine = self.app.engines.get("asr")
        if not isinstance(engine, AsrEngine):
            return None
        if audio.is_silent(samples):
            return Transcript("", None, audio.duration_s(samples))
        timeout = self.app.config.limits.engine_timeout_s
        began = time.perf_counter()
        try:
            result = await self.app.scheduler.call(engine, timeout, engine.transcribe, samples, language or self.app.config.speech.language)
        except TimeoutError:
            raise EngineError(f"the ASR engine did not answer within {timeout:g} s") from None
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"the ASR engine failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, Transcript):
            raise EngineError(f"the ASR engine returned {type(result).__name__} instead of a Transcript")
        if result.duration_s > 0:
            self.app.metrics.asr_real_time_factor.observe((time.perf_counter() - began) / result.duration_s)
        return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the part type's own worker thread."""
        return await self.app.scheduler.submit_named(f"part-{self.part_type}", fn, *args)


def _image_inputs(images: list[Any]) -> list[ImageInput]:
    """PIL images as the modalities see them: RGB, numbered from 1, named by the sha256 of their PNG."""
    inputs = []
    for index, image in enumerate(images, start=1):
        rgb = image.convert("RGB")
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG")
        data = buffer.getvalue()
        inputs.append(ImageInput(index=index, sha256=hashlib.sha256(data).hexdigest(), mime="image/png", data=data, image=rgb))
    return inputs


def native_types(app: App) -> frozenset[str]:
    """The part types the configured dialogue engine takes itself (`Capabilities.accepts_parts`)."""
    engine = app.engines.get("dialogue")
    return engine.capabilities.accepts_parts if engine is not None else frozenset()


def part_labels(app: App) -> dict[str, str]:
    """Each loaded part type's label for the context (`[Label N: ...]`), by name."""
    return {name: label_of(entry.part_type) for name, entry in app.part_types.items()}


def native_parts(app: App, parts: list[DecodedPluginPart]) -> dict[str, MessagePart]:
    """The decoded parts the dialogue engine takes natively, by sha256, as `ChatMessage.parts` carries them."""
    native = native_types(app)
    return {p.sha256: MessagePart(p.type, p.mime, p.decoded.value) for p in parts if p.type in native}


def part_records(parts: list[DecodedPluginPart], described: list[tuple[DecodedPluginPart, str]]) -> list[PartRecord]:
    """The parts as the context renders them: one record per part, then one `<name>_text` record per description."""
    return [PartRecord(kind=p.type, attachment_sha256=p.sha256, mime=p.mime) for p in parts] + [
        PartRecord(kind=f"{p.type}_text", text=text, attachment_sha256=p.sha256) for p, text in described
    ]


async def describe_plugin_parts(app: App, parts: list[DecodedPluginPart]) -> list[tuple[DecodedPluginPart, str]]:
    """(part, text) for each part whose type the dialogue engine does not take natively and that its type described."""
    native = native_types(app)
    todo = [part for part in parts if part.type not in native and part.type in app.part_types]
    if not todo:
        return []
    timeout = app.config.limits.engine_timeout_s
    results = await asyncio.gather(*(_describe(app, part, timeout) for part in todo))
    return [(part, text) for part, text in zip(todo, results, strict=True) if text]


async def describe_parts(app: App, turn_id: str, parts: list[DecodedPluginPart]) -> None:
    """Describe a stored turn's plugin parts (those the engine does not take natively); store the texts on the turn."""
    assert app.store is not None
    described = await describe_plugin_parts(app, parts)
    if described:
        await app.store.add_parts(turn_id, part_records([], described))


async def _describe(app: App, part: DecodedPluginPart, timeout: float) -> str | None:
    """One part's description, or None (logged) when its type's `describe` fails."""
    part_type: PartType = app.part_types[part.type].part_type
    try:
        text = await asyncio.wait_for(part_type.describe(part.decoded, CoreTools(app, part.type)), timeout)
    except TimeoutError:
        log.warning("part type %s gave no description of %s within %g s", part.type, part.sha256[:12], timeout)
        return None
    except Exception as exc:
        log.warning("part type %s failed to describe %s: %s: %s", part.type, part.sha256[:12], type(exc).__name__, exc)
        return None
    if text is not None and not isinstance(text, str):
        log.warning("part type %s returned %s instead of text; ignored", part.type, type(text).__name__)
        return None
    return (text or "").strip()[:MAX_PART_TEXT_CHARS] or None
