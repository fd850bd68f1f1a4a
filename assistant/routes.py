"""Turn routing: plugins may claim a user turn before the dialogue engine answers it.

A router looks at the turn's text and either returns a route (what to do instead of, or besides,
a plain dialogue reply) or None. Today's route kind asks for an image; the assistant's text reply
acknowledges it and the image job runs beside the conversation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRoute:
    """Claim a turn for image generation: paint `prompt`, and reply with `acknowledgement`."""

    prompt: str
    acknowledgement: str



class TurnRouter(ABC):
    """Decides whether a user turn is something other than a plain dialogue turn. Register with `register_turn_routers`."""

    @abstractmethod
    def route(self, text: str) -> ImageRoute | None:
        """The route for a turn whose text parts join to `text`, or None to leave it to the dialogue engine.

        Called on the event loop for every text turn: keep it cheap (no model calls here).
        """


@dataclass(frozen=True)
class RegisteredRouter:
    """A router with the name and plugin it was registered under."""

    name: str
    router: TurnRouter
    plugin: str


def first_route(routers: list[RegisteredRouter], text: str) -> ImageRoute | None:
    """The first claim among `routers`, asked in order."""
    for registered in routers:
        route = registered.router.route(text)
        if route is not None:
            return route
    return None
