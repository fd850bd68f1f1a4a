"""Turn routing: plugins may claim a user turn before the dialogue engine answers it.

A router looks at the turn's text and either returns a route (what to do instead of, or besides,
a plain dialogue reply) or None. An `ImageRoute` asks for an image: the assistant's text reply
acknowledges it and the image job runs beside the conversation. A `ToolRoute` runs a registered tool
(the same way a model's tool call runs) and replies with the result's `confirmation`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRoute:
    """Claim a turn for image generation: paint `prompt`, and reply with `acknowledgement`."""

    prompt: str
    acknowledgement: str


@dataclass(frozen=True)
class ToolRoute:
    """Claim a turn for a tool: run tool `name` with `arguments` and reply with its result's `"confirmation"`.

    When the result has no confirmation, the dialogue engine answers from the result instead.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


Route = ImageRoute | ToolRoute


class TurnRouter(ABC):
    """Decides whether a user turn is something other than a plain dialogue turn. Register with `register_turn_routers`."""

    @abstractmethod
    def route(self, text: str) -> Route | None:
        """The route for a turn whose text parts join to `text`, or None to leave it to the dialogue engine.

        Called on the event loop for every text turn: keep it cheap (no model calls here).
        """


@dataclass(frozen=True)
class RegisteredRouter:
    """A router with the name and plugin it was registered under."""

    name: str
    router: TurnRouter
    plugin: str


def first_route(routers: list[RegisteredRouter], text: str, usable: Callable[[Route], bool] | None = None) -> Route | None:
    """The first claim among `routers`, asked in order; a claim `usable` rejects (its engine or tool is missing) is skipped."""
    for registered in routers:
        route = registered.router.route(text)
        if route is not None and (usable is None or usable(route)):
            return route
    return None
