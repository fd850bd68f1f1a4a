"""Dialects: the wire protocols the server speaks, each a set of routes on the one ASGI app.

A dialect turns its wire's requests into work on the shared `App` (sessions, turns, the store) and
applies the rules of `assistant.access`. The server serves the routes of every dialect named in
`[server] dialects`, next to its own (`/healthz`, `/metrics`, `/attachments/...`, the web client).
A wire that needs its own listener (a raw TCP port, say) opens it in `start()` and closes it in `stop()`.

Known dialects are listed in `DIALECTS`, by name; each module is imported only when configured.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from assistant.config import ConfigError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from assistant.app import App


SEND_TEXT_EXTENSION = "assistant.websocket.send_text"
"""ASGI scope extension the server adds to a websocket: `{"send_text": async (str) -> None}` sends a text
frame straight to the connection, as a `websocket.send` message would but without the framework layers
between (one event becomes one frame: the hot path). A dialect falls back to `WebSocket.send_text` without it."""


class ServerContext(Protocol):
    """What a dialect sees of the server serving it."""

    app: App
    ready: bool  # False before listening and once shutdown begins: refuse new sessions


class Dialect(ABC):
    """One wire protocol: its routes, and hooks for listeners and connections of its own."""

    name: str

    @abstractmethod
    def routes(self, server: ServerContext) -> list[BaseRoute]:
        """The HTTP and websocket routes this wire serves on the server's app."""

    async def start(self, server: ServerContext) -> None:
        """Called once the server listens: open this wire's own listeners, if it has any."""

    async def stop(self) -> None:
        """Called at shutdown, after the App's replies have drained: close this wire's connections and listeners."""


DIALECTS: dict[str, str] = {
    "native": "assistant.dialects.native:NativeDialect",  # protocol v1: JSON events on the websocket at /ws
    "openai": "assistant.dialects.openai_http:OpenAIDialect",  # OpenAI's HTTP API under /v1 (docs/openai.md)
    "openai_realtime": "assistant.dialects.openai_realtime:RealtimeDialect",  # OpenAI's Realtime API: the websocket at /v1/realtime
    "ollama": "assistant.dialects.ollama:OllamaDialect",  # Ollama's HTTP API under /api (docs/home-assistant.md)
    "wyoming": "assistant.dialects.wyoming:WyomingDialect",  # Wyoming on its own TCP port when [wyoming] enabled
}
"""Dialect name -> `module:class`."""


def build_dialects(names: Sequence[str]) -> list[Dialect]:
    """One instance of each named dialect, in order; an unknown name is a ConfigError naming the known ones."""
    unknown = [name for name in names if name not in DIALECTS]
    if unknown:
        raise ConfigError(f"[server] dialects: unknown dialect(s) {', '.join(map(repr, unknown))} (known: {', '.join(DIALECTS)})")
    dialects = []
    for name in dict.fromkeys(names):  # a name listed twice is served once
        module, _, cls = DIALECTS[name].partition(":")
        dialects.append(getattr(importlib.import_module(module), cls)())
    return dialects
