"""Remote inference engines: dialogue, ASR and image generation on any OpenAI-compatible server.

vLLM, llama.cpp's server, Ollama's `/v1`, Ray Serve LLM, or another node of ours: a node that
selects these engines holds no model itself (a gateway). Configured by `[plugins.remote_engines]`
(see `settings.py` and docs/remote-engines.md) and selected per role with
`[engines] dialogue = "remote"`, `asr = "remote"`, `image_generator = "remote"`.

Each engine opens one `openai.AsyncOpenAI` client at load and reuses its connection pool. Its calls
are coroutines (`generate_async`, `transcribe_async`, see `assistant.async_calls`) that the core
awaits on the event loop: no thread per call, and a cancelled reply closes its HTTP stream.
"""

from __future__ import annotations

from typing import Any

from assistant import hookimpl

from .dialogue import RemoteDialogue
from .media import RemoteAsr, RemoteImageGenerator
from .settings import PLUGIN_NAME, RemoteSettings, endpoint

__all__ = ["PLUGIN_NAME", "RemoteAsr", "RemoteDialogue", "RemoteImageGenerator", "RemoteSettings"]


def create_dialogue(app: Any, settings: RemoteSettings) -> RemoteDialogue:
    """Engine factory: the remote dialogue engine of `[plugins.remote_engines.dialogue]`."""
    return RemoteDialogue(endpoint(settings, "dialogue"), settings.dialogue)


def create_asr(app: Any, settings: RemoteSettings) -> RemoteAsr:
    """Engine factory: the remote ASR engine of `[plugins.remote_engines.asr]`."""
    return RemoteAsr(endpoint(settings, "asr"), settings.asr)


def create_image_generator(app: Any, settings: RemoteSettings) -> RemoteImageGenerator:
    """Engine factory: the remote image generator of `[plugins.remote_engines.image_generator]`."""
    return RemoteImageGenerator(endpoint(settings, "image_generator"), settings.image_generator)


@hookimpl
def register_engines(register):
    """Register the `remote` dialogue, ASR and image generation engines."""
    register("dialogue", "remote", create_dialogue, settings=RemoteSettings)
    register("asr", "remote", create_asr, settings=RemoteSettings)
    register("image_generator", "remote", create_image_generator, settings=RemoteSettings)
