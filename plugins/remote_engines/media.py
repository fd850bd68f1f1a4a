"""The `remote` ASR engine (`POST /audio/transcriptions`) and image generator (`POST /images/generations`, b64_json)."""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assistant import (
    AsrEngine,
    CallStopped,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCancelled,
    ImageGenerator,
    ImageRequest,
    Transcript,
    TranscriptSegment,
    stop_on,
)
from assistant.audio import duration_s, wav_bytes

from .client import engine_error, open_client, run_blocking
from .settings import AsrSettings, Endpoint, ImageSettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

MAX_SEED = 2**53 - 1  # exact in JSON numbers everywhere
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RemoteAsr(AsrEngine):
    """Speech to text on a server elsewhere: the clip is sent as a 16 kHz PCM16 WAV file."""

    def __init__(self, endpoint: Endpoint, settings: AsrSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = open_client(endpoint)
        self.id = f"remote:{endpoint.model}"
        self.capabilities = Capabilities(max_batch=endpoint.concurrency)

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Blocking form of `transcribe_async`, on a client of its own."""
        return run_blocking(self.endpoint, lambda client: self._transcribe(client, samples, language))

    async def transcribe_async(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono float32 samples; see AsrEngine.transcribe."""
        return await self._transcribe(self.client, samples, language)

    async def close_async(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    async def _transcribe(self, client: AsyncOpenAI, samples: Any, language: str | None) -> Transcript:
        language = language or self.settings.language
        wav = await asyncio.to_thread(wav_bytes, samples)
        extra: dict[str, Any] = {"language": language} if language else {}
        try:
            result = await client.audio.transcriptions.create(
                file=("speech.wav", wav, "audio/wav"), model=self.endpoint.model, response_format=self.settings.response_format, **extra,
            )
            text = result if isinstance(result, str) else result.text
            if not isinstance(text, str):
                raise TypeError(f"the transcript's text is {type(text).__name__}")
            segments = tuple(
                TranscriptSegment(float(s.start), float(s.end), str(s.text).strip()) for s in getattr(result, "segments", None) or ()
            )
        except Exception as exc:
            raise engine_error(exc, self.endpoint) from exc
        return Transcript(text.strip(), getattr(result, "language", None) or language, duration_s(samples), segments)


class RemoteImageGenerator(ImageGenerator):
    """Text to image on a server elsewhere; one request per image, its PNG returned as b64_json.

    The OpenAI API takes a prompt and a size: `steps`, `guidance` and the seed are the job's record
    (a server that takes them gets them through `extra_body`), and progress is one step at the end.
    """

    def __init__(self, endpoint: Endpoint, settings: ImageSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = open_client(endpoint)
        self.id = f"remote:{endpoint.model}"
        self.capabilities = Capabilities(max_batch=endpoint.concurrency)

    def prepare(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
    ) -> ImageRequest:
        """Defaults filled in; an empty or too long prompt, or a side outside 8..max_side, is a bad request."""
        limits = self.settings
        problems = []
        if not prompt.strip():
            problems.append("the prompt is empty")
        if len(prompt) > limits.max_prompt_chars:
            problems.append(f"the prompt has {len(prompt)} characters (at most {limits.max_prompt_chars})")
        width, height = width or limits.default_width, height or limits.default_height
        for key, value in (("width", width), ("height", height)):
            if not 8 <= value <= limits.max_side:
                problems.append(f"{key}={value} (8..{limits.max_side})")
        if steps is not None and steps < 1:
            problems.append(f"steps={steps} (at least 1)")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            problems.append(f"seed={seed} (0..{MAX_SEED})")
        if problems:
            raise EngineError("cannot paint: " + "; ".join(problems), "bad_request")
        return ImageRequest(prompt, negative_prompt, width, height, steps or 1, guidance or 0.0,
                            secrets.randbelow(MAX_SEED + 1) if seed is None else seed)

    def generate(self, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event) -> GeneratedImage:
        """Blocking form of `generate_async`, on a client of its own."""
        return run_blocking(self.endpoint, lambda client: self._generate(client, request, on_step, cancelled))

    async def generate_async(
        self, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event,
    ) -> GeneratedImage:
        """Paint one image; see ImageGenerator.generate. Setting `cancelled` drops the request (GenerationCancelled)."""
        return await self._generate(self.client, request, on_step, cancelled)

    async def close_async(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    async def _generate(
        self, client: AsyncOpenAI, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event,
    ) -> GeneratedImage:
        try:
            async with stop_on(cancelled):
                result = await client.images.generate(
                    model=self.endpoint.model, prompt=request.prompt, size=f"{request.width}x{request.height}", n=1,
                    response_format="b64_json", extra_body=self.settings.extra_body or None,
                )
            encoded = result.data[0].b64_json if result.data else None
            if not encoded:
                raise ValueError("the answer holds no b64_json image")
            png = await asyncio.to_thread(as_png, base64.b64decode(encoded, validate=True))
        except CallStopped:
            raise GenerationCancelled() from None
        except Exception as exc:
            raise engine_error(exc, self.endpoint) from exc
        on_step(request.steps, request.steps, None)
        width, height = png_size(png)
        return GeneratedImage(png, width, height, request.seed)


def as_png(data: bytes) -> bytes:
    """The image as PNG bytes (a server may answer JPEG or WebP); ValueError for bytes that are no image."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("the PNG has no header")
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"the image is not readable: {exc}") from None
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
