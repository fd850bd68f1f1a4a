"""A plugin module as a third party would write it; tests load it through `[plugins] modules`.

Loaded that way its plugin name is its module name, so its settings table is
`[plugins."tests.sample_plugin"]`; the factory receives the validated settings without knowing that.
"""

import time

from pydantic import BaseModel, ConfigDict, Field

from assistant import DialogueEngine, DialogueResult, Usage, hookimpl


class SampleSettings(BaseModel):
    """`[plugins."tests.sample_plugin"]`."""

    model_config = ConfigDict(extra="forbid")

    pause_s: float = Field(0.05, gt=0, description="the slow counter's pause between numbers")


class ShoutingEcho(DialogueEngine):
    """Answers with the user's last message in capitals."""

    id = "sample:shouting-echo"

    def generate(self, request, emit, cancelled):
        """Emit the upper-cased last user message as one delta."""
        text = request.messages[-1].content.upper()
        emit(text)
        return DialogueResult(text, Usage(0, 1), "stop")


class SlowCounter(DialogueEngine):
    """Counts ' 1 2 3 ...' with a pause per number until cancelled (at most 2000 numbers)."""

    id = "sample:slow-counter"

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s

    def generate(self, request, emit, cancelled):
        """Emit one number every `pause_s` (50 ms); stop when cancelled. The message "quick" is answered at once;
        "count N" counts to N."""
        content = request.messages[-1].content
        if content == "quick":
            emit("done")
            return DialogueResult("done", Usage(0, 1), "stop")
        words = content.split()
        last = int(words[1]) if len(words) == 2 and words[0] == "count" and words[1].isdigit() else 2000
        pieces = []
        for i in range(1, last + 1):
            if cancelled.is_set():
                return DialogueResult("".join(pieces), Usage(0, len(pieces)), "cancelled")
            pieces.append(f" {i}")
            emit(pieces[-1])
            time.sleep(self.pause_s)
        return DialogueResult("".join(pieces), Usage(0, len(pieces)), "stop")


@hookimpl
def register_engines(register):
    """Register the shouting echo and the slow counter engines."""
    register("dialogue", "shouting-echo", lambda app: ShoutingEcho())
    register("dialogue", "slow-counter", lambda app, settings: SlowCounter(settings.pause_s), settings=SampleSettings)
