"""The deterministic fast path: a turn router that sends sentences the templates know straight to a built-in tool.

No model is asked: "Remind me tomorrow at 9 to call the dentist" becomes
`ToolRoute("set_reminder", {"text": "call the dentist", "due": "tomorrow at 9:00"})`, and the tool turns
the due phrase into an absolute time in the session's time zone. Sentences the templates do not match
go on to the dialogue model (which may call the same tools itself). Requests for a picture are left to the
keyword router, which claims them (as an `ImageRoute`) when an image generator is configured.
"""

from __future__ import annotations

from typing import Any

from assistant.routes import ToolRoute, TurnRouter

from .sentences import match, when_phrase


def route_arguments(text: str) -> tuple[str, dict[str, Any]] | None:
    """(tool name, arguments) for a sentence the templates match, else None."""
    found = match(text)
    if found is None:
        return None
    slots = found.slots
    if found.intent == "set_reminder":
        return found.intent, {"text": slots["task"], "due": when_phrase(slots)}
    if found.intent == "set_timer":
        arguments = {"duration": when_phrase(slots).removeprefix("in ")}
        if "label" in slots:
            arguments["label"] = slots["label"]
        return found.intent, arguments
    if found.intent == "cancel_reminder":
        return found.intent, {"reminder": slots.get("which", "timer")}
    if found.intent == "search_images":
        return found.intent, {"query": slots["query"]}
    return found.intent, {}


class FastPathRouter(TurnRouter):
    """Claims turns whose text matches a built-in tool's sentence template."""

    def route(self, text: str) -> ToolRoute | None:
        """A tool route for a known sentence, else None (the model answers)."""
        found = route_arguments(text)
        return None if found is None else ToolRoute(*found)
