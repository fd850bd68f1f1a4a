"""Scriptable fake engines and a plugin that registers them, for tests of core logic."""

from __future__ import annotations

import threading
import time
from typing import Callable

from assistant import (
    Capabilities,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    Usage,
    hookimpl,
)


def echo_script(request: DialogueRequest) -> list[str]:
    """Default script: 'You said: <last user text>' in word-sized deltas."""
    words = f"You said: {request.messages[-1].content}".split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedDialogue(DialogueEngine):
    """A dialogue engine whose reply, pace and failures a test controls; it records every request."""

    def __init__(
        self,
        script: Callable[[DialogueRequest], list[str]] = echo_script,
        delay_s: float = 0.0,
        fail_times: int = 0,
        gate: threading.Event | None = None,
        engine_id: str = "fake:scripted",
    ) -> None:
        self.id = engine_id
        self.capabilities = Capabilities(streaming=True)
        self.script = script
        self.delay_s = delay_s
        self.fail_times = fail_times
        self.gate = gate
        self.requests: list[DialogueRequest] = []
        self.closed = False

    def generate(self, request, emit, cancelled) -> DialogueResult:
        """Emit the scripted deltas, honouring cancel between them."""
        self.requests.append(request)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("scripted engine failure")
        emitted = []
        for delta in self.script(request):
            if cancelled.is_set():
                return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), "cancelled")
            emit(delta)
            emitted.append(delta)
            if self.delay_s:
                time.sleep(self.delay_s)
        return DialogueResult("".join(emitted), Usage(len(request.messages), len(emitted)), "stop")

    def close(self) -> None:
        """Record that the app closed the engine."""
        self.closed = True


class FakeEnginesPlugin:
    """Registers a given dialogue engine instance under the name `fake`."""

    __name__ = "fake_engines"

    def __init__(self, engine: DialogueEngine, name: str = "fake") -> None:
        self.engine = engine
        self.name = name

    @hookimpl
    def register_engines(self, register):
        """Register the fake dialogue engine."""
        register("dialogue", self.name, lambda app: self.engine)
