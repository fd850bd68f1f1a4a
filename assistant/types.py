"""Protocols and small types the core passes around. Low in the import graph: it imports only leaf modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from assistant.config import Config
from assistant.engines import Engine, SpeechSynthesizer, Voice
from assistant.events import Event
from assistant.models import ModelLocator


class Emit(Protocol):
    """Where one conversation's events go: numbered, kept for replay and sent to every follower.

    `assistant.channels.ChannelEmit` is the real one; tests may collect events in a list instead.
    """

    async def reserve(self) -> int:
        """Reserve the conversation's next seq for an event published later (a reply's end, numbered before it is stored)."""

    async def __call__(self, event: Event, seq: int | None = None) -> None:
        """Publish `event`, numbered next or with its reserved `seq`."""


@dataclass(frozen=True)
class SpeechOut:
    """A client's request for spoken replies: the synthesizer and the voice chosen (see assistant.speech)."""

    engine: SpeechSynthesizer
    voice: Voice


Tell = Callable[[Event], Awaitable[None]]
"""Sends an event somewhere: to one client only (an `Error` about its own request), or a conversation's publish."""


class ConversationView(Protocol):
    """What a tool sees of the conversation it runs in (`assistant.scope.ConversationScope` is the real one)."""

    id: str
    principal: str

    async def publish(self, event: Event, seq: int | None = None) -> None:
        """Publish a conversation event to every follower."""


class AppView(Protocol):
    """What plugins (engine factories, modalities, lifecycle hooks) see of the running app.

    `assistant.app.App` is the implementation; plugins should use nothing else of it.
    """

    config: Config
    models: ModelLocator

    @property
    def engines(self) -> Mapping[str, Engine]:
        """The loaded engines by role."""

    def plugin_settings(self, plugin_name: str) -> BaseModel:
        """The plugin's `[plugins.<plugin_name>]` table, validated by the settings model it registered."""
