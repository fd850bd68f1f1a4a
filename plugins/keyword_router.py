"""The built-in turn router: "draw ...", "paint ...", "generate an image of ...", "/imagine ..." ask for a picture.

Registered `trylast`, so any smarter router (or a dialogue model's tool call) claims turns first.
"""

from __future__ import annotations

import re

from assistant import ImageRoute, TurnRouter, hookimpl

_PATTERNS = [
    re.compile(r"^\s*/imagine\s+(?P<prompt>.+)$", re.I | re.S),
    re.compile(
        r"^\s*(?:please\s+|can you\s+|could you\s+)?"
        r"(?:draw|paint|sketch|illustrate)\s+(?:me\s+|us\s+)?(?P<prompt>.+?)\s*(?:,?\s*please)?[.!?]*\s*$",
        re.I | re.S,
    ),
    re.compile(
        r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:generate|create|make|render)\s+(?:me\s+)?"
        r"(?:an?\s+)?(?:image|picture|drawing|painting|illustration)\s+(?:of|showing)\s+(?P<prompt>.+?)[.!?]*\s*$",
        re.I | re.S,
    ),
]


class KeywordImageRouter(TurnRouter):
    """Claims turns that start by asking for a picture; the rest of the sentence is the prompt."""

    def route(self, text: str) -> ImageRoute | None:
        """An image route when the text asks for a picture, else None."""
        for pattern in _PATTERNS:
            match = pattern.match(text)
            if match and match.group("prompt").strip(" .!?"):
                prompt = match.group("prompt").strip(" .!?")
                return ImageRoute(prompt=prompt, acknowledgement=f"Painting “{prompt}”…")
        return None


@hookimpl(trylast=True)
def register_turn_routers(register):
    """Register the keyword image router, last."""
    register("keyword_image", KeywordImageRouter())
