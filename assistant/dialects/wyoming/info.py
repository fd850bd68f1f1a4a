"""The `info` event answering `describe`: one program per service the loaded engines provide.

Home Assistant's Wyoming integration makes a speech-to-text entity of the first `asr` program, a
text-to-speech entity of the first installed `tts` program and a conversation agent of the first installed
`handle` program; it gives `describe` one second, so the answer is built from what is already loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wyoming.info import AsrModel, AsrProgram, Attribution, HandleModel, HandleProgram, Info, TtsProgram, TtsVoice

from assistant import __version__
from assistant.engines import AsrEngine, DialogueEngine, SpeechSynthesizer

if TYPE_CHECKING:
    from assistant.app import App

WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml cy sk te fa "
    "lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk "
    "nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()
"""The languages a multilingual Whisper model transcribes."""

ATTRIBUTION = Attribution(name="assistant", url="")
ASR_PROGRAM = "assistant-asr"


def asr_languages(app: App, engine: AsrEngine) -> list[str]:
    """What the ASR engine transcribes: `[speech] language` when set, English for an English-only (`.en`) model, else Whisper's."""
    if app.config.speech.language:
        return [app.config.speech.language]
    if engine.id.endswith(".en") or getattr(engine, "multilingual", None) is False:
        return ["en"]
    return list(WHISPER_LANGUAGES)


def build_info(app: App) -> Info:
    """The services of the engines loaded now: speech to text, text to speech, and conversation (handle)."""
    info = Info()
    asr = app.engines.get("asr")
    if isinstance(asr, AsrEngine):
        model = AsrModel(name=asr.id, attribution=ATTRIBUTION, installed=True, description=f"speech to text by {asr.id}",
                         version=__version__, languages=asr_languages(app, asr))
        info.asr.append(AsrProgram(name=ASR_PROGRAM, attribution=ATTRIBUTION, installed=True, description="assistant speech to text",
                                   version=__version__, models=[model], supports_transcript_streaming=True))
    voice = app.engines.get("speech_synthesizer")
    if isinstance(voice, SpeechSynthesizer):
        voices = [TtsVoice(name=v.name, attribution=ATTRIBUTION, installed=True, description=f"{v.name} ({v.language})",
                           version=__version__, languages=[v.language]) for v in voice.voices()]
        info.tts.append(TtsProgram(name="assistant-tts", attribution=ATTRIBUTION, installed=True, description=f"text to speech by {voice.id}",
                                   version=__version__, voices=voices, supports_synthesize_streaming=True))
    dialogue = app.engines.get("dialogue")
    if isinstance(dialogue, DialogueEngine):
        model_ = HandleModel(name=dialogue.id, attribution=ATTRIBUTION, installed=True, description=f"conversation with {dialogue.id}",
                             version=__version__, languages=[])  # none listed: Home Assistant offers it for every language
        info.handle.append(HandleProgram(name="assistant", attribution=ATTRIBUTION, installed=True, description="assistant conversation",
                                         version=__version__, models=[model_], supports_handled_streaming=True))
    return info
