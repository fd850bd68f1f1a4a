"""The built-in plugins' engines and modalities pass the conformance suites that plugin authors run (assistant.testing.conformance).

Each engine is built the way the app builds it (`App.prepare(config).build_engine`), on the tiny
random-weight models the plugins' own tests use (the offline packs where those are what ships).
"""

from __future__ import annotations

import pytest

from assistant.app import App
from assistant.testing.conformance import (
    AsrEngineConformance,
    DialogueEngineConformance,
    ImageEncoderConformance,
    ImageGeneratorConformance,
    ModalityConformance,
    SpeechSynthesizerConformance,
)
from tests.conftest import make_config
from tests.plugins.test_whisper_asr import tiny_checkpoint


def built(tmp_path_factory, role: str, name: str, **plugins) -> object:
    """The engine `name` of `role`, built by an app prepared with `[engines] role = name` and the given plugin tables."""
    config = make_config(tmp_path_factory.mktemp(name), engines={role: name}, plugins={"deny": [], **plugins})
    return App.prepare(config).build_engine(role, name)


class TestTransformersDialogue(DialogueEngineConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory, tiny_llama):
        return built(tmp_path_factory, "dialogue", "transformers", transformers_dialogue={"model": str(tiny_llama), "device": "cpu"})


class TestTransformersVision(DialogueEngineConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory, tiny_llava):
        return built(tmp_path_factory, "dialogue", "transformers_vision", transformers_vision={"model": str(tiny_llava), "device": "cpu"})


class TestWhisperAsr(AsrEngineConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory):
        checkpoint = tiny_checkpoint(tmp_path_factory.mktemp("whisper") / "tiny-random.pt")
        return built(tmp_path_factory, "asr", "whisper", whisper_asr={"model": str(checkpoint)})


class TestFasterWhisperAsr(AsrEngineConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory):
        return built(tmp_path_factory, "asr", "faster_whisper")


class TestClipEncoder(ImageEncoderConformance):
    @pytest.fixture(scope="class", params=["tiny_clip", "tiny_siglip"])
    @classmethod
    def engine(cls, request, tmp_path_factory):
        model = request.getfixturevalue(request.param)
        return built(tmp_path_factory, "image_encoder", "clip", clip_image={"model": str(model), "device": "cpu"})


class TestDiffusersImage(ImageGeneratorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory, tiny_sd):
        return built(tmp_path_factory, "image_generator", "diffusers", diffusers_image={"model": str(tiny_sd), "device": "cpu"})


class TestPiperVoices(SpeechSynthesizerConformance):
    @pytest.fixture(scope="class", params=["piper", "espeak"])
    @classmethod
    def engine(cls, request, tmp_path_factory):
        return built(tmp_path_factory, "speech_synthesizer", request.param)


class TestBuiltinModalities(ModalityConformance):
    @pytest.fixture(scope="class", params=["ocr", "labels", "image_labels"])
    @classmethod
    def modality(cls, request, tmp_path_factory, tiny_clip):
        config = make_config(tmp_path_factory.mktemp("modalities"), engines={"image_encoder": "clip"},
                             plugins={"deny": [], "clip_image": {"model": str(tiny_clip), "device": "cpu"}})
        app = App.prepare(config)
        app.engines["image_encoder"] = app.build_engine("image_encoder", "clip")
        modality = next(entry.modality for entry in app.registrations.modalities if entry.name == request.param)
        assert modality.load(app)
        return modality
