"""A plugin module as a third party would write it; tests load it through `[plugins] modules`."""

from assistant import Capabilities, DialogueEngine, DialogueResult, Usage, hookimpl


class ShoutingEcho(DialogueEngine):
    """Answers with the user's last message in capitals."""

    id = "sample:shouting-echo"
    capabilities = Capabilities(streaming=True)

    def generate(self, request, emit, cancelled):
        """Emit the upper-cased last user message as one delta."""
        text = request.messages[-1].content.upper()
        emit(text)
        return DialogueResult(text, Usage(0, 1), "stop")


@hookimpl
def register_engines(register):
    """Register the shouting echo engine."""
    register("dialogue", "shouting-echo", lambda app: ShoutingEcho())
