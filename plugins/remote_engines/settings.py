"""`[plugins.remote_engines]`: where each remote engine's OpenAI-compatible server is, and what its model can do.

Connection settings (`base_url`, `api_key` or `api_key_env`, `timeout_s`, `max_retries`,
`concurrency`) may be set once at the top of the table and overridden per role in
`[plugins.remote_engines.dialogue]`, `.asr` and `.image_generator`; `model` is per role.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.config import ConfigError

PLUGIN_NAME = "remote_engines"


class _Connection(BaseModel):
    """The connection fields a role table may override (None: the top-level value)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="the server's OpenAI-compatible root, e.g. http://gpu-box:8000/v1")
    api_key: str | None = Field(None, description="the bearer token to send (prefer api_key_env)")
    api_key_env: str | None = Field(None, description="the environment variable holding the bearer token")
    timeout_s: float | None = Field(None, gt=0, description="connect and between-bytes timeout of one request")
    max_retries: int | None = Field(None, ge=0, description="retries of a request that failed before any answer (connection, 5xx, 429)")
    concurrency: int | None = Field(None, ge=1, description="calls sent to the server at once; more wait in the engine's queue")


class DialogueSettings(_Connection):
    """`[plugins.remote_engines.dialogue]`."""

    model: str | None = Field(None, description="the model name the server knows")
    accepts_images: bool = Field(False, description="the model sees images: they are sent as data URLs")
    accepts_tools: bool = Field(False, description="the server takes `tools` and returns `tool_calls`")
    include_usage: bool = Field(True, description="ask for token counts in the stream (stream_options.include_usage)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="more JSON fields for every request (server-specific)")


class AsrSettings(_Connection):
    """`[plugins.remote_engines.asr]`."""

    model: str | None = None
    language: str | None = Field(None, description="spoken language sent when the turn names none; unset: the server detects it")
    response_format: Literal["json", "verbose_json"] = Field("json", description="verbose_json: also the language and timed segments")


class ImageSettings(_Connection):
    """`[plugins.remote_engines.image_generator]`."""

    model: str | None = None
    default_width: int = Field(512, ge=8)
    default_height: int = Field(512, ge=8)
    max_side: int = Field(2048, ge=8)
    max_prompt_chars: int = Field(4000, ge=1)
    extra_body: dict[str, Any] = Field(default_factory=dict, description="more JSON fields for every request (steps, seed... where the server takes them)")


class RemoteSettings(BaseModel):
    """`[plugins.remote_engines]`: the shared connection, and one table per role."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(1, ge=0)
    concurrency: int = Field(16, ge=1)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    image_generator: ImageSettings = Field(default_factory=ImageSettings)


@dataclass(frozen=True)
class Endpoint:
    """One role's resolved connection: every field filled in."""

    role: str
    base_url: str
    api_key: str
    model: str
    timeout_s: float
    max_retries: int
    concurrency: int


def endpoint(settings: RemoteSettings, role: Literal["dialogue", "asr", "image_generator"]) -> Endpoint:
    """The role's table over the top-level values; ConfigError naming the key for what is missing."""
    table: DialogueSettings | AsrSettings | ImageSettings = getattr(settings, role)
    where = f"[plugins.{PLUGIN_NAME}]"
    base_url = table.base_url or settings.base_url
    if not base_url:
        raise ConfigError(f"{where} base_url (or {role}.base_url): where the remote {role} engine's server is, e.g. http://gpu-box:8000/v1")
    if not table.model:
        raise ConfigError(f"{where} {role}.model: the model name the remote server serves for {role}")
    api_key = _key(table, f"{where} {role}.api_key_env") or _key(settings, f"{where} api_key_env")
    return Endpoint(
        role, base_url.rstrip("/"),
        api_key or "none",  # servers without auth ignore it; never None, or the SDK would send OPENAI_API_KEY
        table.model,
        table.timeout_s if table.timeout_s is not None else settings.timeout_s,
        table.max_retries if table.max_retries is not None else settings.max_retries,
        table.concurrency if table.concurrency is not None else settings.concurrency,
    )


def _key(table: _Connection | RemoteSettings, key_name: str) -> str | None:
    """The table's token: `api_key`, else the variable `api_key_env` names (which must be set), else None."""
    if table.api_key:
        return table.api_key
    if table.api_key_env:
        value = os.environ.get(table.api_key_env)
        if not value:
            raise ConfigError(f"{key_name}: the environment variable {table.api_key_env} is not set")
        return value
    return None
