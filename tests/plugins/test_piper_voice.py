"""The built-in speech synthesizers: the Piper voice en_US-joe-medium on onnxruntime, and plain espeak-ng."""

from __future__ import annotations

import json
import re
import threading
import time

import jiwer
import pytest

from assistant import EngineError, SpeechSynthesizer, Voice, audio
from assistant.app import App
from assistant_plugins import piper_voice
from tests.conftest import make_config

# Replies an assistant gives; no numerals, so that "one hundred" against "100" does not count as an error.
REPLIES = [
    "The capital of France is Paris.",
    "I can help you write a short email to your landlord.",
    "The meeting has been moved to Thursday afternoon.",
    "Plants turn sunlight, water and carbon dioxide into sugar.",
    "Sorry, I could not find any flights for that date.",
    "Remember to take an umbrella, because it will rain later today.",
    "Whales are mammals, so they breathe air through their lungs.",
    "Your package should arrive by the end of the week.",
]
LONG_TEXT = " ".join(REPLIES)


@pytest.fixture(scope="module")
def piper(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("piper"), engines={"speech_synthesizer": "piper"})
    return App.prepare(config).build_engine("speech_synthesizer", "piper")


@pytest.fixture(scope="module")
def espeak(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("espeak"), engines={"speech_synthesizer": "espeak"})
    return App.prepare(config).build_engine("speech_synthesizer", "espeak")


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("asr"), engines={"asr": "faster_whisper"})
    return App.prepare(config).build_engine("asr", "faster_whisper")


def speak(engine: SpeechSynthesizer, text: str, voice: str | None = None) -> list[bytes]:
    chunks: list[bytes] = []
    engine.synthesize(text, voice, chunks.append, threading.Event())
    return chunks


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split())


def round_trip_wer(engine: SpeechSynthesizer, asr, label: str) -> float:
    """Speak each reply, resample to 16 kHz, transcribe; print each transcript and return the mean WER."""
    rate = engine.voices()[0].sample_rate
    rates = []
    for reply in REPLIES:
        samples = audio.decode(b"".join(speak(engine, reply)), "pcm16", rate)
        heard = asr.transcribe(samples).text
        rates.append(jiwer.wer(normalized(reply), normalized(heard)))
        print(f"{label} WER {rates[-1]:.3f}  {reply!r} -> {heard!r}")
    mean = sum(rates) / len(rates)
    print(f"{label} mean WER {mean:.3f} over {len(rates)} replies")
    return mean


def test_piper_offers_one_en_us_voice_at_the_rate_of_its_config(piper):
    """voices() is the wheel's one voice, en-US, at the sample rate its .onnx.json names."""
    _, config_path = piper_voice.voice_files()
    rate = json.loads(config_path.read_text())["audio"]["sample_rate"]
    assert piper.voices() == [Voice("en_US-joe-medium", "en-US", rate)]
    assert isinstance(piper, SpeechSynthesizer) and piper.id == "piper:en_US-joe-medium"


@pytest.mark.parametrize("engine_name", ["piper", "espeak"])
def test_an_unknown_voice_is_a_bad_request_naming_the_available_ones(engine_name, request):
    """Asking for a voice the engine lacks raises EngineError bad_request that names the voices it has."""
    engine = request.getfixturevalue(engine_name)
    with pytest.raises(EngineError) as err:
        speak(engine, "Hello.", voice="no-such-voice")
    assert err.value.code == "bad_request"
    assert "no-such-voice" in str(err.value) and engine.voices()[0].name in str(err.value)


def test_piper_speaks_a_reply_in_chunks_of_about_100_ms(piper):
    """A sentence comes out as PCM16 chunks of 100 ms (the last shorter), about as long as it takes to say."""
    chunks = speak(piper, "The capital of France is Paris.")
    rate = piper.voices()[0].sample_rate
    assert all(len(c) == 2 * int(rate * 0.1) for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 2 * int(rate * 0.1)
    seconds = sum(len(c) for c in chunks) / 2 / rate
    assert 1.0 < seconds < 5.0


@pytest.mark.offline_model
def test_piper_round_trip_through_whisper_tiny_en_is_at_most_25_percent_wer(piper, tiny_en):
    """Eight replies spoken by piper and transcribed by Whisper tiny.en come back at a mean WER of at most 0.25."""
    assert round_trip_wer(piper, tiny_en, "piper") <= 0.25


@pytest.mark.offline_model
def test_espeak_round_trip_through_whisper_tiny_en_is_at_most_50_percent_wer(espeak, tiny_en):
    """The robotic espeak-ng voice still comes back through Whisper tiny.en at a mean WER of at most 0.5."""
    assert round_trip_wer(espeak, tiny_en, "espeak") <= 0.5


def test_piper_is_faster_than_real_time(piper):
    """Seconds of compute per second of audio for piper, printed; well under one even on a busy 2-core machine."""
    speak(piper, "Warm up.")
    started = time.perf_counter()
    chunks = speak(piper, LONG_TEXT)
    compute = time.perf_counter() - started
    seconds = sum(len(c) for c in chunks) / 2 / piper.voices()[0].sample_rate
    print(f"piper: {compute:.2f} s of compute for {seconds:.1f} s of audio: {compute / seconds:.3f} s per audio second")
    assert compute / seconds < 0.5


@pytest.mark.parametrize("engine_name", ["piper", "espeak"])
def test_cancelling_after_the_first_chunk_stops_a_long_text_early(engine_name, request):
    """With `cancelled` set in the first on_audio call, no further chunk of a long text arrives."""
    engine = request.getfixturevalue(engine_name)
    whole = speak(engine, LONG_TEXT)
    cancelled, chunks = threading.Event(), []

    def on_audio(chunk: bytes) -> None:
        chunks.append(chunk)
        cancelled.set()

    engine.synthesize(LONG_TEXT, None, on_audio, cancelled)
    assert len(chunks) == 1 < len(whole)


@pytest.mark.parametrize("engine_name", ["piper", "espeak"])
@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("🙂👍🏽🎉", False),
        ("→ ★ ♥ © ✓", False),
        ("```python\nprint('hi')\nfor i in range(3): pass\n```", False),
        ("", False),
        ("   \n  ", False),
        ("Great job 🎉!", True),
        ("See https://example.com/docs?page=2#intro for more.", True),
        ("Run `pip install numpy` first.", True),
    ],
)
def test_text_it_cannot_say_is_skipped_never_an_exception(engine_name, text, spoken, request):
    """Emoji, symbols and code alone give no audio; mixed with words, the words are spoken; nothing raises."""
    chunks = speak(request.getfixturevalue(engine_name), text)
    assert bool(chunks) == spoken


def test_speakable_text_drops_emoji_code_and_markdown_and_reads_urls_as_their_host():
    """The text cleaner keeps the words, reads a URL as its host and drops what a voice cannot say."""
    said = piper_voice.speakable("**Look** 🙂 at https://www.example.com/a?b=1 and `x = 1` ```py\ncode\n``` # Done")
    assert said == "Look at example.com and x = 1 Done"


def test_sentences_split_at_full_stops_but_not_after_titles_or_abbreviations():
    """Sentences end at . ! ? before a capital or a digit, not after `Dr.` or inside `e.g.`; clauses keep their mark."""
    assert piper_voice.sentences("Dr. Smith paid, e.g. for tea. Then he left! Did he? 3 times.") == [
        "Dr. Smith paid, e.g. for tea.", "Then he left!", "Did he?", "3 times.",
    ]
    assert piper_voice.clauses("Hello, world; how are you?") == [("Hello", ","), ("world", ";"), ("how are you", "?")]


def test_phoneme_ids_follow_pipers_layout():
    """BOS, then each phoneme followed by the pad, then EOS; unknown code points are skipped."""
    id_map = {"^": [1], "$": [2], "_": [0], "a": [10], "b": [11]}
    assert piper_voice.phoneme_ids("ab?", id_map) == [1, 0, 10, 0, 11, 0, 2]


def test_espeak_speaks_pcm16_of_plausible_length(espeak):
    """A sentence from espeak-ng is 16-bit PCM of one to five seconds at the voice's rate, not silence."""
    import numpy as np

    voice = espeak.voices()[0]
    assert voice.name == "en-us" and voice.language == "en-US" and len(espeak.voices()) > 20
    samples = np.frombuffer(b"".join(speak(espeak, "The capital of France is Paris.")), "<i2")
    assert 1.0 < samples.size / voice.sample_rate < 5.0 and np.abs(samples).max() > 1000
    assert speak(espeak, "Bonjour.", voice="fr-fr")


def test_settings_reach_the_voice(tmp_path, piper):
    """[plugins.piper_voice] length_scale = 1.5 makes piper speak slower (longer audio) than the voice's own pace."""
    config = make_config(tmp_path, engines={"speech_synthesizer": "piper"}, plugins={"piper_voice": {"length_scale": 1.5}})
    slow = App.prepare(config).build_engine("speech_synthesizer", "piper")
    text = "The meeting has been moved to Thursday afternoon."
    assert sum(map(len, speak(slow, text))) > 1.3 * sum(map(len, speak(piper, text)))


def test_missing_espeak_ng_says_how_to_install_it(tmp_path, monkeypatch):
    """Without the espeak-ng program, building either engine fails saying `apt-get install espeak-ng`."""
    monkeypatch.setattr(piper_voice.shutil, "which", lambda name: None)
    app = App.prepare(make_config(tmp_path, engines={"speech_synthesizer": "piper"}))
    for name in ("piper", "espeak"):
        with pytest.raises(EngineError, match="apt-get install espeak-ng"):
            app.build_engine("speech_synthesizer", name)


async def test_the_configured_voice_loads_when_the_app_starts(tmp_path):
    """With [engines] speech_synthesizer = "piper" the started app serves it, and capabilities name it."""
    app = await App.start(make_config(tmp_path, engines={"dialogue": "", "speech_synthesizer": "piper"}))
    try:
        assert app.capabilities()["speech_synthesizer"] == "piper:en_US-joe-medium"
    finally:
        await app.stop()
