"""Dialogue engine on a transformers vision-language model (LLaVA-style `AutoModelForImageTextToText`).

Configured by `[plugins.transformers_vision]`. Early fusion: the images of the context go through
the model's own processor with the text, so the model sees them. Everything else (streaming,
cancel, fitting the history to the context budget, counting image tokens too) is the text
engine's. No VLM weights exist offline: name a folder or hub id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from transformers import AutoModelForImageTextToText, AutoProcessor

from assistant import Capabilities, ChatMessage, ToolSpec, hookimpl

from .transformers_dialogue import DialogueSettings, TransformersDialogue


class VisionSettings(DialogueSettings):
    """`[plugins.transformers_vision]`: as `[plugins.transformers_dialogue]`, with no default model."""

    model: str = Field("", description="a vision-language model folder or hub id (LLaVA-style)")


class TransformersVisionDialogue(TransformersDialogue):
    """A VLM loaded once; it receives each user message's images through its processor."""

    batchable = False  # pixels go through `generate`, one request at a time

    def __init__(self, model_path: Path, settings: VisionSettings, name: str | None = None) -> None:
        super().__init__(model_path, settings, name)
        self.id = f"transformers-vision:{name or settings.model}"
        self.capabilities = Capabilities(accepts_images=True)

    def load(self, model_path: Path) -> None:
        """Load the processor (its tokenizer decodes the stream) and the image-text-to-text model."""
        self.processor = AutoProcessor.from_pretrained(model_path)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise ValueError(f"{model_path}: a vision-language processor with a tokenizer and a chat template is needed")
        self.tokenizer = tokenizer
        model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=self.dtype)
        # transformers wraps PreTrainedModel.to with functools.wraps; mypy then reads the device as `self`
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]

    def encode(self, messages: list[ChatMessage], tools: tuple[ToolSpec, ...] = ()) -> Any:
        """Model inputs: the chat template with an image slot per image, and the images' pixels (no tools)."""
        conversation = [
            {"role": m.role, "content": [{"type": "image"} for _ in m.images] + [{"type": "text", "text": m.content}]}
            for m in messages
        ]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        images = [image for m in messages for image in m.images]
        return self.processor(images=images or None, text=prompt, return_tensors="pt")

    def prompt_length(self, encoded: Any) -> int:
        """Tokens in the prompt, image tokens included."""
        return int(encoded["input_ids"].shape[1])

    def model_inputs(self, encoded: Any) -> dict[str, Any]:
        """The processor's outputs on the device; pixels in the model's dtype."""
        inputs = {}
        for key, value in encoded.items():
            value = value.to(self.device)
            inputs[key] = value.to(self.dtype) if value.is_floating_point() else value
        return inputs


def create_engine(app: Any, settings: VisionSettings) -> TransformersVisionDialogue:
    """Engine factory: resolve the configured model and load it."""
    if not settings.model:
        raise ValueError("[plugins.transformers_vision] model is empty: name a vision-language model folder or hub id")
    return TransformersVisionDialogue(app.models.resolve(settings.model), settings)


def configured_model(app: Any, settings: VisionSettings) -> str | None:
    """The model name this engine would load, for `assistant models`."""
    return settings.model or None


@hookimpl
def register_engines(register):
    """Register the `transformers_vision` dialogue engine, configured by `[plugins.transformers_vision]`."""
    register("dialogue", "transformers_vision", create_engine, settings=VisionSettings, model_name=configured_model)
