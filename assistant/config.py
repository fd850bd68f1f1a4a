"""config.toml -> typed, validated configuration.

Every core table is a pydantic model that forbids unknown keys, so a typo fails at startup with
the dotted key named. A `[plugins.<name>]` table is validated by the pydantic model its plugin
declares (`register(..., settings=Model)`, see `assistant.plugins`) when the app is prepared.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Table):
    """`[server]`: where the websocket server listens and how it treats connections."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    max_frame_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    compression: bool = Field(False, description="permessage-deflate on websockets, when the client offers it")
    ping_interval_s: float | None = Field(20.0, gt=0)
    ping_timeout_s: float | None = Field(20.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    max_queued_turns: int = Field(8, ge=1, description="turns one connection may have waiting or running")
    replay_events: int = Field(1000, ge=0, description="events kept per conversation for clients that reconnect")
    replay_ttl_s: float = Field(300.0, ge=0, description="how long a conversation nobody follows keeps its replay buffer")
    allowed_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed besides the server's own (\"*\": any; not recommended)"
    )
    dialects: list[str] = Field(
        default_factory=lambda: ["native", "openai", "openai_realtime", "ollama", "wyoming"],
        description="wire protocols served (assistant.dialects.DIALECTS: \"native\" /ws, \"openai\" /v1, "
        "\"openai_realtime\" /v1/realtime, \"ollama\" /api, \"wyoming\")",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="with auth off, Host names served besides IP addresses and localhost (DNS rebinding; \"*\": any)",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="the event loop `assistant serve` runs on: uvloop (libuv, less CPU per event) or Python's own asyncio loop",
    )


class WyomingConfig(_Table):
    """`[wyoming]`: the Wyoming protocol listener (Home Assistant's speech and conversation services). No auth: trusted networks only."""

    enabled: bool = Field(False, description="open the Wyoming TCP listener (needs \"wyoming\" in [server] dialects)")
    host: str = "127.0.0.1"
    port: int = Field(10700, ge=0, le=65535)
    principal: str = Field("local", min_length=1, max_length=100, description="who owns the conversations Wyoming clients hold")
    zeroconf: bool = Field(False, description="announce the service as _wyoming._tcp.local. for Home Assistant's discovery")
    max_payload_bytes: int = Field(1024 * 1024, ge=1024, description="largest data or payload of one Wyoming event")
    max_audio_seconds: float = Field(60.0, gt=0, description="longest audio one transcription may send")
    max_text_chars: int = Field(4000, ge=1, description="longest text one synthesis or conversation turn may send")


class ConfiguredTokenTable(_Table):
    """`[[auth.tokens]]`: a principal and the sha256 (hex) of its token."""

    principal: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class AuthConfig(_Table):
    """`[auth]`: access tokens. With none anywhere, auth is off and the server stays on loopback."""

    tokens_file: str = Field("data/tokens.json", description="hashed tokens managed by `assistant tokens`")
    tokens: list[ConfiguredTokenTable] = Field(default_factory=list)
    allow_unauthenticated_remote: bool = Field(False, description="listen beyond loopback with no tokens (anyone may connect)")


class LimitsConfig(_Table):
    """`[limits]`: what one principal or one turn may use."""

    turns_per_minute: int = Field(60, ge=1, description="turns (and image.generate) per principal per minute")
    sessions_per_principal: int = Field(
        32, ge=1, description="connections one principal may have in a session at once (auth off: per client address)"
    )
    max_sessions: int = Field(1024, ge=1, description="connections in a session at once, all principals together")
    conversations_per_minute: int = Field(120, ge=1, description="new conversations (session.start without an id) per principal per minute")
    idle_timeout_s: float = Field(900.0, gt=0, description="a connection silent this long, with nothing in progress, is closed")
    max_turn_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="decoded bytes of all parts of one turn")
    engine_timeout_s: float = Field(120.0, gt=0, description="an engine call with no progress this long fails its turn")
    media_bytes_in_flight: int = Field(
        512 * 1024 * 1024, ge=1024 * 1024, description="decoded image and audio bytes all requests together may hold at once"
    )
    media_wait_s: float = Field(10.0, ge=0, description="how long new media waits for room in media_bytes_in_flight before rate_limited")


class StoreConfig(_Table):
    """`[store]`: the SQLAlchemy database URL (SQLite, or PostgreSQL as `postgresql+psycopg://...`); relative SQLite
    paths are relative to the config file. `upgrade`: whether startup upgrades an older schema."""

    url: str = "sqlite:///data/assistant.db"
    upgrade: bool = Field(
        True, description="upgrade an older database schema at startup; false: refuse to start until `assistant db upgrade` ran"
    )


class ClusterConfig(_Table):
    """`[cluster]`: several gateway nodes sharing one database and one Redis (see docs/deployment.md).

    Without this table a node keeps its conversation channels in process and needs no Redis.
    """

    redis_url: str = Field(min_length=1, description="the Redis every node shares, e.g. redis://redis:6379/0")
    node_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="this node's name in Redis and on the replies it serves (default: hostname-pid, new for every start)",
    )
    heartbeat_s: float = Field(2.0, gt=0, description="how often the node says it is alive (and looks for nodes that are not)")
    node_timeout_s: float = Field(10.0, gt=0, description="a node silent this long is dead: its replies in progress become interrupted")
    key_ttl_s: float = Field(86400.0, gt=0, description="how long Redis keeps an idle conversation's seq counter (its replay stream: [server] replay_ttl_s)")

    @model_validator(mode="after")
    def _timeout_after_heartbeats(self) -> ClusterConfig:
        if self.node_timeout_s <= 2 * self.heartbeat_s:
            raise ValueError("node_timeout_s must be more than twice heartbeat_s, or a slow heartbeat reads as a dead node")
        return self


class ModelsConfig(_Table):
    """`[models]`: where converted or downloaded model files are cached."""

    cache_dir: str = "~/.cache/assistant/models"


class EnginesConfig(_Table):
    """`[engines]`: which registered engine serves each role (null: none).

    One field per role of `assistant.engines.ENGINE_BASES`, spelled out so that each has its default
    and a type checker sees it; tests/assistant/test_config.py checks the two agree.
    """

    asr: str | None = "faster_whisper"
    image_encoder: str | None = None
    dialogue: str | None = "transformers"
    image_generator: str | None = None
    speech_synthesizer: str | None = "piper"


class DialogueConfig(_Table):
    """`[dialogue]`: how the core builds the context it hands to the dialogue engine."""

    system_prompt: str = "You are a helpful assistant. Answer briefly and accurately."
    history_turns: int = Field(50, ge=0, description="most recent stored turns sent as context")
    context_chars: int = Field(
        32_000, ge=100,
        description="characters of stored turns handed to the dialogue engine, newest first; a turn with more text is too_large before it is stored",
    )
    timezone: str = Field("UTC", description="IANA time zone of sessions that name none in session.start (dates and reminders)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from assistant.timezones import zone

        zone(value)  # ValueError names the unknown zone
        return value


class RemindersConfig(_Table):
    """`[reminders]`: reminders and timers the built-in tools set."""

    max_active: int = Field(1000, ge=1, description="reminders (and timers) one principal may have waiting at once")
    max_days_ahead: int = Field(3660, ge=1, description="the furthest ahead a reminder may be set, in days")
    max_text_chars: int = Field(500, ge=1, description="longest reminder text")


class SpeechConfig(_Table):
    """`[speech]`: audio parts and their transcripts."""

    store_audio: bool = Field(True, description="keep each audio part as an attachment by sha256")
    max_seconds: float = Field(120.0, gt=0, description="longest audio part accepted")
    language: str | None = Field(None, description="spoken language for every turn; unset: the engine's setting or detection")
    vad: bool = Field(True, description="server VAD on streamed audio, unless session.start says otherwise")
    vad_threshold: float = Field(0.5, gt=0.15, lt=1)
    vad_min_silence_ms: int = Field(500, ge=50, description="silence that ends an utterance")
    partial_interval_s: float = Field(1.0, ge=0, description="a transcript.delta per this much new speech (0: none)")
    max_buffer_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="streamed PCM16 one utterance may buffer")


class SchedulerConfig(_Table):
    """`[scheduler]`: how engine work queues."""

    max_queued: int = Field(32, ge=1, description="calls one engine may have waiting or running; more: rate_limited")
    latency_classes: dict[str, int] = Field(
        default_factory=lambda: {"asr": 0, "image_encoder": 1, "dialogue": 1, "image_generator": 2, "speech_synthesizer": 1},
        description="per role; a larger number pauses between its steps while a smaller one runs (equal: no waiting)",
    )


class ImagesConfig(_Table):
    """`[images]`: how image jobs share the machine."""

    concurrency: int = Field(1, ge=1, description="image jobs painting at once (they share one pipeline)")
    max_jobs_per_connection: int = Field(4, ge=1, description="jobs one connection may have queued or running")


class ImageInputConfig(_Table):
    """`[image_input]`: image parts users send (PNG, JPEG, WebP, GIF)."""

    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest encoded image accepted")
    max_pixels: int = Field(24_000_000, ge=1, description="width x height at most this, checked from the header (decompression bombs)")
    max_decoded_pixels: int = Field(
        4_194_304, ge=4096, description="pixels kept of a decoded image (engines, modalities); larger ones are downscaled while decoding"
    )
    max_images_per_turn: int = Field(8, ge=1)
    context_images: int = Field(4, ge=0, description="most recent images a vision-language dialogue engine is shown")


class PluginsConfig(BaseModel):
    """`[plugins]`: which plugins load, plus one `[plugins.<name>]` table per plugin."""

    model_config = ConfigDict(extra="allow")

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _plugin_tables_are_tables(self) -> PluginsConfig:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"[plugins.{name}] must be a table, got {type(value).__name__}")
        return self


class Config(_Table):
    """The whole configuration. `base_dir` anchors relative paths (the config file's folder)."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    image_input: ImageInputConfig = Field(default_factory=ImageInputConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    reminders: RemindersConfig = Field(default_factory=RemindersConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    wyoming: WyomingConfig = Field(default_factory=WyomingConfig)
    cluster: ClusterConfig | None = Field(None, description="several nodes through Redis; absent: one node, channels in process")
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Path | None = None) -> Config:
        """Validate a parsed TOML document; errors name the dotted key."""
        if "base_dir" in data:
            raise ConfigError("base_dir: not a configuration key")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        if base_dir is not None:
            config.base_dir = base_dir
        return config

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a config.toml file; `None` gives the built-in defaults."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, base_dir=path.resolve().parent)

    def resolve_path(self, value: str) -> Path:
        """Expand `~` and anchor a relative path at the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def database_url(self) -> str:
        """The store URL with a relative SQLite file path made absolute.

        A SQLite URI filename (`sqlite:///file:PATH?mode=ro&uri=true`) keeps its form, with PATH made
        absolute the same way.
        """
        url = self.store.url
        prefix = "sqlite:///"
        if not url.startswith(prefix) or url == prefix + ":memory:" or len(url) == len(prefix):
            return url
        database, question, query = url[len(prefix):].partition("?")
        if "uri=true" in query.split("&"):
            if database.startswith("file:") and database != "file::memory:":
                database = "file:" + str(self.resolve_path(database[len("file:"):]))
            return prefix + database + question + query
        return prefix + str(self.resolve_path(url[len(prefix):]))

    @property
    def model_cache_dir(self) -> Path:
        """Absolute folder for cached model files."""
        return self.resolve_path(self.models.cache_dir)

    @property
    def tokens_path(self) -> Path:
        """Absolute path of the token file."""
        return self.resolve_path(self.auth.tokens_file)

    def plugin_config(self, plugin_name: str) -> dict[str, Any]:
        """The raw `[plugins.<plugin_name>]` table, or an empty dict. Plugins get it validated instead:
        see `App.plugin_settings`."""
        return dict((self.plugins.model_extra or {}).get(plugin_name, {}))


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{key}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
