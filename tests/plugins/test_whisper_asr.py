"""The openai-whisper ASR engine: a tiny random-weight checkpoint through the package's real loader."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from assistant.app import App
from assistant.config import ConfigError
from tests.conftest import make_config


def tiny_checkpoint(path):
    """Save a random-weight English-only Whisper with small dimensions as whisper.load_model expects."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)
    torch.save({"dims": asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, path)
    return path


def test_loads_a_tiny_random_checkpoint_and_transcribes(tmp_path):
    """A .pt checkpoint loads through whisper.load_model and transcribes one second of audio to text."""
    checkpoint = tiny_checkpoint(tmp_path / "tiny-random.pt")
    config = make_config(tmp_path, engines={"asr": "whisper"}, plugins={"whisper_asr": {"model": str(checkpoint)}})
    engine = App.prepare(config).build_engine("asr", "whisper")
    assert engine.id == f"openai-whisper:{checkpoint}" and not engine.model.is_multilingual
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    result = engine.transcribe(tone)
    assert isinstance(result.text, str) and result.language == "en" and result.duration_s == 1.0


def test_missing_checkpoints_and_unknown_names_are_reported(tmp_path):
    """A missing .pt file, an unknown model name and an undownloadable one each fail with the key named."""
    for model, needle in ((str(tmp_path / "nope.pt"), "no checkpoint file"), ("gigantic", "neither a .pt file"),
                          ("tiny.en", "could not be downloaded")):
        config = make_config(tmp_path, engines={"asr": "whisper"},
                             plugins={"whisper_asr": {"model": model, "download_root": str(tmp_path / "empty")}})
        with pytest.raises(ConfigError, match=r"\[plugins.whisper_asr\] model") as err:
            App.prepare(config).build_engine("asr", "whisper")
        assert needle in str(err.value)
