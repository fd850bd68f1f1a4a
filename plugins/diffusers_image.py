"""Image generator on any diffusers text-to-image pipeline (`AutoPipelineForText2Image`).

Configured by `[plugins.diffusers_image]` and selected with `[engines] image_generator = "diffusers"`.
One pipeline is loaded per process; every job gets a shallow view of it with its own scheduler, so
jobs may run concurrently without sharing scheduler state while the weights stay shared. Progress is
reported from the pipeline's step-end callback, which is also where a cancelled job stops.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from assistant import EngineError, GeneratedImage, GenerationCancelled, ImageGenerator, ImageRequest, hookimpl
from assistant.config import ConfigError

PLUGIN_NAME = "diffusers_image"
MAX_SEED = 2**53 - 1  # exact in JSON numbers everywhere


class ImageSettings(BaseModel):
    """`[plugins.diffusers_image]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = ""
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    attention: Literal["sdpa", "classic"] = "sdpa"
    compile: bool = False
    default_steps: int = Field(20, ge=1)
    max_steps: int = Field(100, ge=1)
    default_width: int | None = Field(None, ge=8)
    default_height: int | None = Field(None, ge=8)
    max_side: int = Field(2048, ge=8)
    max_pixels: int = Field(1024 * 1024, ge=64)
    default_guidance: float = Field(7.5, ge=0)
    max_guidance: float = Field(30.0, ge=0)
    max_prompt_chars: int = Field(2000, ge=1)
    preview_decoder: str = ""
    preview_every: int = Field(0, ge=0)
    preview_max_side: int = Field(128, ge=8)

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ImageSettings:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) is above max_steps ({self.max_steps})")
        if self.default_guidance > self.max_guidance:
            raise ValueError(f"default_guidance ({self.default_guidance}) is above max_guidance ({self.max_guidance})")
        return self


def pick_device(device: str) -> str:
    """`auto` -> `cuda` when available, else `cpu`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def png_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes (no metadata, so equal pixels give equal bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DiffusersImageGenerator(ImageGenerator):
    """A diffusers pipeline loaded once; `generate` runs on the engine's worker threads."""

    def __init__(self, pipeline_path: Any, settings: ImageSettings, preview_path: Any | None = None, name: str | None = None) -> None:
        from diffusers import AutoPipelineForText2Image
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.settings = settings
        self.device = pick_device(settings.device)
        dtype = torch.float16 if settings.dtype == "auto" and self.device.startswith("cuda") else (
            torch.float32 if settings.dtype == "auto" else getattr(torch, settings.dtype)
        )
        pipeline = AutoPipelineForText2Image.from_pretrained(pipeline_path, dtype=dtype)
        if hasattr(pipeline, "safety_checker"):
            pipeline.safety_checker = None  # a self-hosted backend leaves content policy to its operator
        pipeline.set_progress_bar_config(disable=True)
        pipeline.to(self.device)
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        if denoiser is not None and hasattr(denoiser, "set_attn_processor") and getattr(pipeline, "unet", None) is not None:
            denoiser.set_attn_processor(AttnProcessor2_0() if settings.attention == "sdpa" else AttnProcessor())
        if settings.compile and denoiser is not None:
            compiled = torch.compile(denoiser)
            if getattr(pipeline, "unet", None) is not None:
                pipeline.unet = compiled
            else:
                pipeline.transformer = compiled
        self.pipeline = pipeline
        self.preview_decoder = None
        if preview_path is not None and settings.preview_every > 0:
            from diffusers import AutoencoderTiny

            self.preview_decoder = AutoencoderTiny.from_pretrained(preview_path, dtype=dtype).to(self.device).eval()
        scale = getattr(pipeline, "vae_scale_factor", 8)
        native = getattr(getattr(denoiser, "config", None), "sample_size", 64) * scale
        native = native if isinstance(native, int) else 512
        self.default_width = settings.default_width or native
        self.default_height = settings.default_height or native
        self.id = f"diffusers:{name or settings.model}"

    def prepare(self, prompt, negative_prompt=None, width=None, height=None, steps=None, guidance=None, seed=None) -> ImageRequest:
        """Defaults filled in, every value checked against the configured limits."""
        s = self.settings
        problems = []
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append("prompt must not be empty")
        elif len(prompt) > s.max_prompt_chars:
            problems.append(f"prompt is {len(prompt)} characters; at most {s.max_prompt_chars}")
        if negative_prompt is not None and len(negative_prompt) > s.max_prompt_chars:
            problems.append(f"negative_prompt is longer than {s.max_prompt_chars} characters")
        steps = s.default_steps if steps is None else steps
        if not 1 <= steps <= s.max_steps:
            problems.append(f"steps must be between 1 and {s.max_steps}, got {steps}")
        width = self.default_width if width is None else width
        height = self.default_height if height is None else height
        for label, side in (("width", width), ("height", height)):
            if side % 8 or not 8 <= side <= s.max_side:
                problems.append(f"{label} must be a multiple of 8 between 8 and {s.max_side}, got {side}")
        if width * height > s.max_pixels:
            problems.append(f"{width}x{height} is {width * height} pixels; at most {s.max_pixels}")
        guidance = s.default_guidance if guidance is None else float(guidance)
        if not 0 <= guidance <= s.max_guidance:
            problems.append(f"guidance must be between 0 and {s.max_guidance}, got {guidance}")
        if seed is None:
            seed = secrets.randbelow(2**32)
        elif not 0 <= seed <= MAX_SEED:
            problems.append(f"seed must be between 0 and {MAX_SEED}")
        if problems:
            raise EngineError("; ".join(problems), code="bad_request")
        return ImageRequest(prompt.strip(), negative_prompt, width, height, steps, guidance, seed)

    def _job_pipeline(self) -> Any:
        """A view of the loaded pipeline with its own scheduler (weights shared, scheduler state not)."""
        from diffusers import AutoPipelineForText2Image

        scheduler = self.pipeline.scheduler.__class__.from_config(self.pipeline.scheduler.config)
        view = AutoPipelineForText2Image.from_pipe(self.pipeline, scheduler=scheduler)
        view.set_progress_bar_config(disable=True)
        return view

    def _preview(self, latents: torch.Tensor) -> bytes:
        from PIL import Image

        assert self.preview_decoder is not None  # generate() asks for previews only when a decoder is loaded
        with torch.inference_mode():
            pixels = self.preview_decoder.decode(latents[:1]).sample[0]
        array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(array)
        image.thumbnail((self.settings.preview_max_side, self.settings.preview_max_side))
        return png_bytes(image)

    def generate(self, request: ImageRequest, on_step: Callable[[int, int, bytes | None], None], cancelled: threading.Event) -> GeneratedImage:
        """Paint one image; see ImageGenerator.generate."""
        every = self.settings.preview_every if self.preview_decoder is not None else 0

        def step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancelled.is_set():
                raise GenerationCancelled()
            done = step + 1
            preview = self._preview(tensors["latents"]) if every and done % every == 0 and done < request.steps else None
            on_step(done, request.steps, preview)
            return tensors

        if cancelled.is_set():
            raise GenerationCancelled()
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        with torch.inference_mode():
            image = self._job_pipeline()(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=generator,
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=["latents"],
                output_type="pil",
            ).images[0]
        return GeneratedImage(png_bytes(image), image.width, image.height, request.seed)


def create_engine(app: Any, settings: ImageSettings) -> DiffusersImageGenerator:
    """Engine factory: resolve the configured pipeline (and preview decoder) and load them."""
    if not settings.model:
        raise ConfigError(
            f"[plugins.{PLUGIN_NAME}] model is not set: give a diffusers text-to-image pipeline folder or hub id"
        )
    preview = app.models.resolve(settings.preview_decoder) if settings.preview_decoder else None
    return DiffusersImageGenerator(app.models.resolve(settings.model), settings, preview)


def configured_model(app: Any, settings: ImageSettings) -> str | None:
    """The pipeline this engine would load, for `assistant models`."""
    return settings.model or None


@hookimpl
def register_engines(register):
    """Register the `diffusers` image generator, configured by `[plugins.diffusers_image]`."""
    register("image_generator", "diffusers", create_engine, settings=ImageSettings, model_name=configured_model)
