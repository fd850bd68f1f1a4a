"""Fake engines for tests of core logic: the installed kit's (assistant.testing.fakes), plus a tool-calling fake and two helpers of our own."""

from __future__ import annotations

from assistant import Capabilities, DialogueEngine, DialogueRequest, DialogueResult, ToolCallFilter, Usage
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
    "ToolCallingDialogue",
    "echo_script",
    "record_requests",
]


class ToolCallingDialogue(ScriptedDialogue):
    """A dialogue engine that calls tools the way a tool-tuned model does, deterministically.

    Offered tools, a user message naming one of them makes it call that tool, its arguments taken
    from the first `{...}` JSON object in the message (else none): the call is streamed as Hermes
    `<tool_call>` markup through the same `ToolCallFilter` real engines use. After tool results it
    answers `The <name> tool said: <result>`; otherwise it echoes like `ScriptedDialogue`.
    """

    def __init__(self, engine_id: str = "fake:tool-caller", **kwargs) -> None:
        super().__init__(engine_id=engine_id, **kwargs)
        self.capabilities = Capabilities(accepts_tools=True, accepts_images=kwargs.get("accepts_images", False))

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Call a named tool, report tool results, or echo."""
        if self.record:
            self.requests.append(request)
        last = request.messages[-1]
        usage = Usage(len(request.messages), 1)
        if last.role == "tool":
            results = []
            for message in reversed(request.messages):
                if message.role != "tool":
                    break
                results.insert(0, f"The {message.name} tool said: {message.content}")
            text = " ".join(results)
            emit(text)
            return DialogueResult(text, usage, "stop")
        named = [tool for tool in request.tools if tool.name in last.content] if request.tool_choice != "none" else []
        if not named:
            return super().generate(request, emit, cancelled)
        start, end = last.content.find("{"), last.content.rfind("}")
        arguments = last.content[start : end + 1] if 0 <= start < end else "{}"
        markup = f'<tool_call>\n{{"name": "{named[0].name}", "arguments": {arguments}}}\n</tool_call>'
        calls = ToolCallFilter(emit, [tool.name for tool in request.tools])
        for index in range(0, len(markup), 7):
            calls.push(markup[index : index + 7])
        content, found = calls.finish(markup)
        if not found:
            return DialogueResult(content, usage, "stop")
        return DialogueResult(content, usage, "tool_calls", tuple(found))


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
