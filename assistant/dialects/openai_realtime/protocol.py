"""The Realtime API's wire: client events parsed into pydantic models, server events built as JSON objects.

Field names follow OpenAI's GA Realtime API (the `openai` SDK's `openai.types.realtime` models are the
contract; the tests validate every server event against its `RealtimeServerEvent`). Client events are
checked for the fields and types this server reads; fields it does not use are accepted and ignored.
Every problem is a `RealtimeProblem`, sent as an `error` server event in OpenAI's shape.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from assistant.errors import AssistantError

SAMPLE_RATE = 24000
"""The Realtime API's PCM16 rate, in and out (`audio/pcm`)."""


SERVER_ERRORS = ("internal", "unavailable")
"""The core's codes that are the server's fault (`server_error`); every other is the request's (`invalid_request_error`)."""


class RealtimeProblem(Exception):
    """An error the client is told about: OpenAI's `error` event fields."""

    def __init__(self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.event_id = code, message, param, event_id
        self.kind = kind or ("server_error" if code in SERVER_ERRORS else "invalid_request_error")

    @classmethod
    def of(cls, error: AssistantError, event_id: str | None = None) -> RealtimeProblem:
        """The core's error as a Realtime error (the core's code stays the `code`)."""
        return cls(error.code, error.message, None, event_id if event_id is not None else error.ref)

    def to_wire(self) -> dict[str, Any]:
        """The `error` server event."""
        return server_event("error", error={
            "type": self.kind, "code": self.code, "message": self.message, "param": self.param, "event_id": self.event_id,
        })


class _In(BaseModel):
    """A client-sent object: types checked, unknown fields ignored (newer clients send more than we read)."""

    model_config = ConfigDict(extra="ignore")


# --- session.update -------------------------------------------------------------------------------


class AudioFormat(_In):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TurnDetection(_In):
    type: Literal["server_vad", "semantic_vad"]
    create_response: bool = True
    interrupt_response: bool = True
    threshold: float | None = Field(None, gt=0, lt=1)
    silence_duration_ms: int | None = Field(None, ge=50, le=10_000)
    prefix_padding_ms: int | None = Field(None, ge=0)
    idle_timeout_ms: int | None = None


class Transcription(_In):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInput(_In):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: dict[str, Any] | None = None


class VoiceId(_In):
    id: str


class AudioOutput(_In):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: float | None = None


class AudioConfig(_In):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class FunctionTool(_In):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceFunction(_In):
    type: Literal["function"]
    name: str


class SessionConfig(_In):
    """The `session` of `session.update`; only the fields a client sent are applied (`model_fields_set`)."""

    type: Literal["realtime"] = "realtime"
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1, max_length=1)
    audio: AudioConfig | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    model: str | None = None


# --- conversation items -----------------------------------------------------------------------------


class ContentIn(_In):
    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio", "text"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class ItemIn(_In):
    id: str | None = Field(None, max_length=64)
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentIn] | None = Field(None, max_length=64)
    call_id: str | None = Field(None, max_length=64)
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class ResponseParams(_In):
    """`response.create`'s `response`: per-response overrides of the session."""

    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1, max_length=1)
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceFunction | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    conversation: str | None = None
    input: list[ItemIn] | None = None
    metadata: dict[str, str] | None = None


# --- client events ----------------------------------------------------------------------------------


class _Event(_In):
    event_id: str | None = Field(None, max_length=128)


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionConfig


class AudioAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(_Event):
    type: Literal["conversation.item.create"]
    item: ItemIn
    previous_item_id: str | None = None


class ItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate | ItemTruncate | ItemDelete | ItemRetrieve
    | ResponseCreate | ResponseCancel | OutputAudioClear,
    Field(discriminator="type"),
]
_CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = (
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear", "conversation.item.create",
    "conversation.item.truncate", "conversation.item.delete", "conversation.item.retrieve", "response.create", "response.cancel",
    "output_audio_buffer.clear",
)

_PYDANTIC_CODES = {"missing": "missing_required_parameter", "literal_error": "invalid_value", "union_tag_invalid": "invalid_value"}


def parse_client_event(frame: str | bytes) -> ClientEvent:
    """One text frame as a client event; RealtimeProblem saying what is wrong (and which `param`)."""
    if isinstance(frame, bytes):
        raise RealtimeProblem("invalid_event", "binary frames are not part of the Realtime API: send JSON text events")
    try:
        data = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise RealtimeProblem("invalid_json", f"the event is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise RealtimeProblem("invalid_event", "an event must be a JSON object with a `type`")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if kind not in CLIENT_EVENT_TYPES:
        raise RealtimeProblem(
            "invalid_event_type" if kind is not None else "missing_required_parameter",
            f"unknown event type {kind!r}; this server reads: {', '.join(CLIENT_EVENT_TYPES)}" if kind is not None else "the event has no `type`",
            "type", event_id,
        )
    try:
        return _CLIENT_EVENT.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"][1:]]  # drop the discriminator's tag
        param = ".".join(loc) or None
        code = _PYDANTIC_CODES.get(first["type"], "invalid_type" if first["type"].endswith(("_type", "_parsing")) else "invalid_value")
        raise RealtimeProblem(code, f"{kind}: {param or 'event'}: {first['msg']}", param, event_id) from None


# --- server events ----------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (`event_...`, `item_...`, `resp_...`, `call_...`, `sess_...`)."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type `kind` with a fresh `event_id`."""
    return {"type": kind, "event_id": new_id("event"), **fields}
