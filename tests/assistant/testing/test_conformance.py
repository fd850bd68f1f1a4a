"""The conformance suites: the kit's fake engines pass them, and broken third-party engines fail them with messages that say what to fix."""

from __future__ import annotations

import textwrap

import pytest

from assistant.testing.conformance import (
    AsrEngineConformance,
    DialogueEngineConformance,
    ImageEncoderConformance,
    ImageGeneratorConformance,
    ModalityConformance,
    SpeechSynthesizerConformance,
)
from assistant.testing.fakes import ColourEncoder, ColourNamer, FixedAsr, ScriptedDialogue, StepPainter, ToneVoice

pytest_plugins = ["pytester"]


class TestScriptedDialogue(DialogueEngineConformance):
    @pytest.fixture
    def engine(self):
        return ScriptedDialogue()


class TestFixedAsr(AsrEngineConformance):
    @pytest.fixture
    def engine(self):
        return FixedAsr()


class TestColourEncoder(ImageEncoderConformance):
    @pytest.fixture
    def engine(self):
        return ColourEncoder()


class TestStepPainter(ImageGeneratorConformance):
    @pytest.fixture
    def engine(self):
        return StepPainter()


class TestToneVoice(SpeechSynthesizerConformance):
    @pytest.fixture
    def engine(self):
        return ToneVoice()


class TestColourNamer(ModalityConformance):
    @pytest.fixture
    def modality(self):
        return ColourNamer()


BROKEN_PLUGIN_TESTS = '''
    import threading

    import numpy as np
    import pytest

    from assistant import DialogueEngine, DialogueResult, ImageEncoder, Usage
    from assistant.testing.conformance import DialogueEngineConformance, ImageEncoderConformance


    class IgnoresCancel(DialogueEngine):
        id = "broken:ignores-cancel"

        def generate(self, request, emit, cancelled):
            for i in range(20):
                emit(f" {i}")
            return DialogueResult("".join(f" {i}" for i in range(20)), Usage(1, 20), "stop")


    class RaisesOnBadInput(DialogueEngine):
        id = "broken:raises"

        def generate(self, request, emit, cancelled):
            if len(request.messages[-1].content) > 1000 or (request.options.temperature or 0) < 0:
                raise ValueError("cannot take this")
            if cancelled.is_set():
                return DialogueResult("", Usage(1, 0), "cancelled")
            emit("ok")
            return DialogueResult("ok", Usage(1, 1), "stop")


    class WrongType(DialogueEngine):
        id = "broken:wrong-type"

        def generate(self, request, emit, cancelled):
            emit("hello")
            return "hello"


    class Unnormalised(ImageEncoder):
        id = "broken:unnormalised"
        dim = 4

        def encode_images(self, images):
            return np.full((len(images), 4), 2.0, dtype=np.float32)

        def encode_texts(self, texts):
            return np.full((len(texts), 4), 2.0, dtype=np.float32)


    class TestIgnoresCancel(DialogueEngineConformance):
        @pytest.fixture
        def engine(self):
            return IgnoresCancel()


    class TestRaisesOnBadInput(DialogueEngineConformance):
        @pytest.fixture
        def engine(self):
            return RaisesOnBadInput()


    class TestWrongType(DialogueEngineConformance):
        @pytest.fixture
        def engine(self):
            return WrongType()


    class TestUnnormalised(ImageEncoderConformance):
        @pytest.fixture
        def engine(self):
            return Unnormalised()
'''


def test_broken_engines_fail_with_messages_that_say_what_to_fix(pytester):
    """A third-party test module subclassing the suites fails each broken engine on the broken rule, naming the fix."""
    pytester.makepyfile(test_broken_plugin=textwrap.dedent(BROKEN_PLUGIN_TESTS))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rf")
    outcomes = {(line.split("::")[1], line.split("::")[2].split(" ")[0]) for line in result.outlines if line.startswith("FAILED ")}
    assert outcomes == {
        ("TestIgnoresCancel", "test_returns_cancelled_when_cancelled_before_it_starts"),
        ("TestIgnoresCancel", "test_stops_at_the_next_delta_once_cancelled"),
        ("TestRaisesOnBadInput", "test_an_oversized_context_is_refused_with_an_engine_error"),
        ("TestRaisesOnBadInput", "test_impossible_options_are_refused_with_an_engine_error"),
        ("TestWrongType", "test_streams_deltas_that_join_to_the_result"),
        ("TestWrongType", "test_returns_cancelled_when_cancelled_before_it_starts"),
        ("TestWrongType", "test_stops_at_the_next_delta_once_cancelled"),
        ("TestWrongType", "test_an_oversized_context_is_refused_with_an_engine_error"),
        ("TestWrongType", "test_impossible_options_are_refused_with_an_engine_error"),
        ("TestUnnormalised", "test_images_become_unit_vectors_and_a_batch_matches_one_by_one"),
        ("TestUnnormalised", "test_texts_become_unit_vectors"),
        ("TestUnnormalised", "test_odd_images_are_encoded_or_refused_with_an_engine_error"),
    }, result.stdout.str()
    output = result.stdout.str()
    assert "with `cancelled` set the engine emitted 20 delta(s) and returned finish_reason 'stop': check `cancelled.is_set()` before each token" in output
    assert "the engine emitted 19 delta(s) after `cancelled` was set: check `cancelled.is_set()` between tokens and stop" in output
    assert "generate() with a 100,000-word context raised ValueError: cannot take this. Instead, raise assistant.EngineError(message, code=...)" in output
    assert "generate() returned str, not an assistant.DialogueResult(text, usage, finish_reason)" in output
    assert "encode_images() returned rows of norm [4.0, 4.0, 4.0]: divide each row by its norm (unit vectors)" in output
