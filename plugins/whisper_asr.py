"""ASR engine on the `openai-whisper` package: a model name or a `.pt` checkpoint through its own loader.

Configured by `[plugins.whisper_asr]`; selected with `[engines] asr = "whisper"`. A name such as
`tiny.en` loads `<download_root>/tiny.en.pt` (openai-whisper downloads it there when the machine is
online); a path to a `.pt` file loads that checkpoint. No such checkpoint ships offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from assistant import AsrEngine, Transcript, TranscriptSegment, hookimpl
from assistant.audio import duration_s
from assistant.config import ConfigError

PLUGIN_NAME = "whisper_asr"


class WhisperSettings(BaseModel):
    """`[plugins.whisper_asr]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "tiny.en"
    device: str = "auto"
    language: str | None = None
    download_root: str = "~/.cache/whisper"


class OpenAIWhisperAsr(AsrEngine):
    """An openai-whisper model loaded once with `whisper.load_model`."""

    def __init__(self, settings: WhisperSettings) -> None:
        import whisper

        self.settings = settings
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
        root = Path(settings.download_root).expanduser()
        checkpoint = Path(settings.model).expanduser()
        if checkpoint.suffix == ".pt" and not checkpoint.is_file():
            raise ConfigError(f"[plugins.{PLUGIN_NAME}] model: no checkpoint file at {checkpoint}")
        if checkpoint.suffix != ".pt" and settings.model not in whisper.available_models():
            raise ConfigError(f"[plugins.{PLUGIN_NAME}] model: {settings.model!r} is neither a .pt file nor one of {', '.join(whisper.available_models())}")
        try:
            self.model = whisper.load_model(str(checkpoint) if checkpoint.suffix == ".pt" else settings.model,
                                            device=self.device, download_root=str(root))
        except OSError as exc:
            raise ConfigError(
                f"[plugins.{PLUGIN_NAME}] model {settings.model!r} is not in {root} and could not be downloaded ({exc}); "
                "give the path of a .pt checkpoint"
            ) from None
        self.id = f"openai-whisper:{settings.model}"

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono samples with greedy decoding."""
        language = language or self.settings.language or (None if self.model.is_multilingual else "en")
        result = self.model.transcribe(
            samples, language=language, temperature=0.0, condition_on_previous_text=False,
            fp16=self.device.startswith("cuda"), verbose=None,
        )
        timed = tuple(TranscriptSegment(float(s["start"]), float(s["end"]), str(s["text"]).strip()) for s in result.get("segments", ()))
        return Transcript(result["text"].strip(), result.get("language"), duration_s(samples), timed)


def create_engine(app: Any, settings: WhisperSettings) -> OpenAIWhisperAsr:
    """Engine factory: load the configured model with openai-whisper's own loader."""
    return OpenAIWhisperAsr(settings)


@hookimpl
def register_engines(register):
    """Register the `whisper` (openai-whisper) ASR engine, configured by `[plugins.whisper_asr]`.

    No `model_name`: openai-whisper finds its checkpoints itself, not through the model locator.
    """
    register("asr", "whisper", create_engine, settings=WhisperSettings)
