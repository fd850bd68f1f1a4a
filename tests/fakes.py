"""Fake engines for tests of core logic: the installed kit's (assistant.testing.fakes), plus two helpers of our own."""

from __future__ import annotations

from assistant import DialogueEngine, DialogueRequest
from assistant.testing.fakes import (
    COLOUR_WORDS,
    ColourEncoder,
    ColourNamer,
    FakeEnginesPlugin,
    FixedAsr,
    ScriptedDialogue,
    StepPainter,
    ToneVoice,
    echo_script,
)

__all__ = [
    "COLOUR_WORDS",
    "ColourEncoder",
    "ColourNamer",
    "FakeEnginesPlugin",
    "FixedAsr",
    "ScriptedDialogue",
    "SettingsApp",
    "StepPainter",
    "ToneVoice",
    "echo_script",
    "record_requests",
]


class SettingsApp:
    """Just what a modality's `load` uses of the app: one plugin's validated settings (and no engines)."""

    def __init__(self, plugin_name: str, settings: object) -> None:
        self.plugin_name = plugin_name
        self.settings = settings
        self.engines: dict[str, object] = {}

    def plugin_settings(self, name: str) -> object:
        """The settings, for this plugin only."""
        assert name == self.plugin_name
        return self.settings


def record_requests(engine: DialogueEngine) -> list[DialogueRequest]:
    """Wrap a real dialogue engine's `generate` so that every request it gets is kept in the returned list."""
    requests: list[DialogueRequest] = []
    generate = engine.generate

    def recording(request, emit, cancelled):
        requests.append(request)
        return generate(request, emit, cancelled)

    engine.generate = recording  # type: ignore[method-assign]
    return requests
