"""OCR as a modality: the text in an image, read by RapidOCR (PP-OCRv4 on onnxruntime, weights in its wheel).

Configured by `[plugins.rapid_ocr]`. Loaded once at startup when the dialogue engine reads only
text; each image part then contributes `text read in it: "..."` to the fused context, lines in
reading order (top to bottom, left to right).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assistant import ImageInput, Modality, hookimpl

PLUGIN_NAME = "rapid_ocr"


class OcrSettings(BaseModel):
    """`[plugins.rapid_ocr]`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_confidence: float = Field(0.5, ge=0, le=1, description="recognized lines scoring lower are dropped")
    max_chars: int = Field(1000, ge=1, description="longest text contributed per image")
    max_side: int = Field(2000, ge=64, description="larger images are scaled down before detection")
    threads: int = Field(0, ge=0, description="onnxruntime threads per model; 0: onnxruntime's default")


class RapidOcr(Modality):
    """Reads the text in images; one RapidOCR instance per process, used one image at a time."""

    def __init__(self) -> None:
        self.settings = OcrSettings()
        self.engine: Any = None
        self._lock = threading.Lock()

    def load(self, app: Any) -> bool:
        """Load the detection, orientation and recognition models from the wheel (about a second)."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        if not self.settings.enabled:
            return False
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(
            text_score=self.settings.min_confidence, max_side_len=self.settings.max_side,
            intra_op_num_threads=self.settings.threads or -1,
        )
        return True

    def read(self, image: Any) -> list[str]:
        """The lines of text in an RGB PIL image, in reading order."""
        with self._lock:
            found, _ = self.engine(np.asarray(image.convert("RGB"))[:, :, ::-1])  # RapidOCR takes BGR, as OpenCV does
        boxes = [(box, text) for box, text, score in found or [] if text.strip() and score >= self.settings.min_confidence]
        return _reading_order(boxes)

    def describe(self, image: ImageInput) -> str | None:
        """`text read in it: "..."`, or None when the image holds no readable text."""
        lines = self.read(image.image)
        if not lines:
            return None
        text = " / ".join(lines)
        if len(text) > self.settings.max_chars:
            text = text[: self.settings.max_chars].rstrip() + "..."
        return f'text read in it: "{text}"'

    def close(self) -> None:
        """Drop the onnxruntime sessions."""
        self.engine = None


def _reading_order(boxes: list[tuple[Any, str]]) -> list[str]:
    """Join recognized boxes into lines: boxes whose vertical centres fall within half a line height
    of each other form one line, read left to right; lines top to bottom."""
    placed = []
    for box, text in boxes:
        ys = [point[1] for point in box]
        xs = [point[0] for point in box]
        placed.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text.strip()))
    placed.sort()
    lines: list[list[tuple[float, str]]] = []
    last_centre, last_height = None, 0.0
    for centre, height, left, text in placed:
        if last_centre is not None and abs(centre - last_centre) <= max(height, last_height) / 2:
            lines[-1].append((left, text))
        else:
            lines.append([(left, text)])
            last_centre, last_height = centre, height
    return [" ".join(text for _, text in sorted(line)) for line in lines]


@hookimpl
def register_modalities(register):
    """Register `ocr`: the text RapidOCR reads in each image, configured by `[plugins.rapid_ocr]`."""
    register("ocr", RapidOcr(), settings=OcrSettings)
