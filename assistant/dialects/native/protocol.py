"""Native wire protocol v1: client and server events as typed models. Parsing and serializing only, no I/O.

docs/protocol.md is the reference for client authors; keep the two in step.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
)

from assistant.errors import AssistantError, ErrorCode

PROTOCOL_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------- parts


class TextPart(_Model):
    type: Literal["text"]
    text: StrictStr


class ImagePart(_Model):
    type: Literal["image"]
    data: StrictStr = Field(description="base64 image bytes")
    mime: StrictStr | None = None


class AudioPart(_Model):
    type: Literal["audio"]
    data: StrictStr = Field(description="base64 audio bytes")
    format: Literal["wav", "pcm16", "ogg", "webm", "mp3", "flac"]
    sample_rate: StrictInt = Field(16000, ge=1, description="used for pcm16; containers carry their own")
    language: StrictStr | None = Field(None, max_length=16, description="spoken language; unset: configured or detected")


class PluginPart(BaseModel):
    """A part of a type a plugin registered (`document`, `video`, ...): base64 bytes, a mime, and the type's own
    fields, which the core checks against the registered part type (an unknown type is a bad_request there)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: StrictStr = Field(min_length=1, max_length=64)
    data: StrictStr = Field(description="base64 bytes")
    mime: StrictStr | None = Field(None, max_length=200)

    @property
    def fields(self) -> dict[str, Any]:
        """The type's own fields (everything but type, data and mime)."""
        return dict(self.model_extra or {})


def _part_tag(value: Any) -> str:
    """The union member a part validates as: the core's own types by name, any other type as a plugin part."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("text", "image", "audio") else "plugin"


Part = Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image")] | Annotated[AudioPart, Tag("audio")]
    | Annotated[PluginPart, Tag("plugin")],
    Discriminator(_part_tag),
]


# ---------------------------------------------------------------- client events


class ClientEvent(_Model):
    event_id: StrictStr | None = Field(None, max_length=200)


class GenerationOptionsIn(_Model):
    max_new_tokens: StrictInt | None = Field(None, ge=1, le=8192)
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(None, gt=0, le=1)


class SessionStart(ClientEvent):
    type: Literal["session.start"]
    conversation_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    sample_rate: StrictInt | None = Field(None, ge=8000, le=48000, description="rate of streamed PCM16 audio")
    vad: StrictBool | None = Field(None, description="server VAD for streamed audio; unset: [speech] vad")
    language: StrictStr | None = Field(None, max_length=16, description="spoken language of streamed audio")
    last_seq: StrictInt | None = Field(None, ge=0, description="resuming: the last seq this client received; missed events are replayed")
    token: StrictStr | None = Field(None, max_length=400, description="an access token, for clients that cannot send an Authorization header")
    output_modalities: list[Literal["text", "audio"]] | None = Field(
        None, min_length=1, max_length=2, description='["text", "audio"]: replies are also spoken (response.audio.*); unset: text'
    )
    voice: StrictStr | None = Field(None, min_length=1, max_length=100, description="the voice of spoken replies; unset: the default")
    timezone: StrictStr | None = Field(
        None, min_length=1, max_length=64, description="the user's IANA time zone (dates, times, reminders); unset: [dialogue] timezone"
    )


class TurnCreate(ClientEvent):
    type: Literal["turn.create"]
    content: list[Part] = Field(min_length=1, max_length=64)
    options: GenerationOptionsIn | None = None


class AudioAppend(ClientEvent):
    type: Literal["audio.append"]
    data: StrictStr


class AudioCommit(ClientEvent):
    type: Literal["audio.commit"]


class AudioClear(ClientEvent):
    type: Literal["audio.clear"]


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: StrictStr = Field(min_length=1, max_length=64)


class ToolConfirm(ClientEvent):
    type: Literal["tool.confirm"]
    call_id: StrictStr = Field(min_length=1, max_length=64)
    approved: StrictBool


class ResponseAudioPlayed(ClientEvent):
    type: Literal["response.audio.played"]
    response_id: StrictStr = Field(min_length=1, max_length=64)
    ms: StrictInt = Field(ge=0, description="how much of the reply's speech the client played")


class ImageGenerate(ClientEvent):
    type: Literal["image.generate"]
    prompt: StrictStr
    negative_prompt: StrictStr | None = None
    steps: StrictInt | None = None
    seed: StrictInt | None = None
    width: StrictInt | None = None
    height: StrictInt | None = None
    guidance: StrictFloat | StrictInt | None = None


class ImageCancel(ClientEvent):
    type: Literal["image.cancel"]
    job_id: StrictStr = Field(min_length=1, max_length=64)


class ConversationGet(ClientEvent):
    type: Literal["conversation.get"]
    conversation_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    before: StrictStr | None = Field(None, min_length=1, max_length=64, description="a turn_id: the page ends just before it; unset: the newest turns")
    limit: StrictInt = Field(100, ge=1, le=1000, description="turns in the page at most")


class ConversationSearch(ClientEvent):
    type: Literal["conversation.search"]
    query: StrictStr = Field(min_length=1, max_length=1000)
    limit: StrictInt = Field(10, ge=1, le=100)


AnyClientEvent = Annotated[
    SessionStart | TurnCreate | AudioAppend | AudioCommit | AudioClear | ResponseCancel | ResponseAudioPlayed
    | ImageGenerate | ImageCancel | ConversationGet | ConversationSearch | ToolConfirm,
    Field(discriminator="type"),
]
_client_event_adapter: TypeAdapter[Any] = TypeAdapter(AnyClientEvent)

CLIENT_EVENT_TYPES: frozenset[str] = frozenset(
    model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in (SessionStart, TurnCreate, AudioAppend, AudioCommit, AudioClear, ResponseCancel, ResponseAudioPlayed,
                  ImageGenerate, ImageCancel, ConversationGet, ConversationSearch, ToolConfirm)
)


MAX_REF_CHARS = 200
"""An `error`'s `ref` echoes at most this much of the event_id (the longest valid one)."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def safe_ref(value: object) -> str | None:
    """An event_id fit to echo as `ref`: a string, cut to MAX_REF_CHARS, lone surrogates replaced."""
    if not isinstance(value, str):
        return None
    value = value[:MAX_REF_CHARS]
    return value.encode("utf-8", "replace").decode("utf-8") if _has_lone_surrogate(value) else value


def _has_lone_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate_in(data: Any) -> bool:
    """Whether any string (key or value) in parsed JSON holds a lone surrogate (not UTF-8: it cannot be stored or sent)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """Parse and validate one client text frame; raises AssistantError(bad_request) naming the problem."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AssistantError("bad_request", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise AssistantError("bad_request", "malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise AssistantError("bad_request", f"an event must be a JSON object, got {type(data).__name__}")
    ref = safe_ref(data.get("event_id"))
    if _SURROGATE_ESCAPE.search(raw if isinstance(raw, str) else raw.decode("utf-8", "replace")) and _lone_surrogate_in(data):
        raise AssistantError("bad_request", "the event holds a lone surrogate (\\ud800-\\udfff): strings must be valid Unicode", ref)
    event_type = data.get("type")
    if not isinstance(event_type, str):
        raise AssistantError("bad_request", "the event has no string field 'type'", ref)
    if event_type not in CLIENT_EVENT_TYPES:
        raise AssistantError("bad_request", f"unknown event type {event_type!r}", ref)
    try:
        return _client_event_adapter.validate_python(data)
    except ValidationError as exc:
        raise AssistantError("bad_request", f"invalid {event_type}: {_describe(exc)}", ref) from None
    except RecursionError:
        raise AssistantError("bad_request", f"invalid {event_type}: nested too deeply", ref) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems[:5])


# ---------------------------------------------------------------- server events


class ServerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A conversation event takes the conversation's next seq and is replayed after a reconnect; the
    # others answer one client's request and carry the seq of the conversation's last event.
    conversation_event: ClassVar[bool] = True
    type: str
    seq: int = 0


class Replay(BaseModel):
    after_seq: int
    events: int
    complete: bool


class VoiceInfo(BaseModel):
    name: str
    language: str
    sample_rate: int


class SessionStarted(ServerEvent):
    conversation_event: ClassVar[bool] = False
    type: Literal["session.started"] = "session.started"
    conversation_id: str
    resumed: bool
    protocol: int = PROTOCOL_VERSION
    capabilities: dict[str, str | None]
    modalities: list[str] = Field(default_factory=list, description="modalities describing images for a text-only engine")
    part_types: list[str] = Field(default_factory=list, description="part types plugins added, besides text, image and audio")
    voices: list[VoiceInfo] = Field(default_factory=list, description="voices of the speech synthesizer, the default first")
    output_modalities: list[str] = Field(default_factory=lambda: ["text"])
    principal: str | None = None
    replay: Replay | None = None


class TurnCreated(ServerEvent):
    type: Literal["turn.created"] = "turn.created"
    turn_id: str


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response_id: str
    turn_id: str


class ResponseTextDelta(ServerEvent):
    type: Literal["response.text.delta"] = "response.text.delta"
    response_id: str
    delta: str


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str


class ResponseDone(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response_id: str
    status: Literal["completed", "cancelled", "failed"]
    text: str
    usage: dict[str, int] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    error: ErrorBody | None = None
    finish_reason: Literal["stop", "length", "cancelled", "tool_calls"] | None = None


class ResponseAudioDelta(ServerEvent):
    type: Literal["response.audio.delta"] = "response.audio.delta"
    response_id: str
    data: str = Field(description="base64 PCM16 mono little-endian audio")
    sample_rate: int


class ResponseAudioDone(ServerEvent):
    type: Literal["response.audio.done"] = "response.audio.done"
    response_id: str
    status: Literal["completed", "cancelled", "failed"]
    duration_ms: int
    error: ErrorBody | None = None


class SpeechStarted(ServerEvent):
    type: Literal["speech.started"] = "speech.started"
    audio_start_ms: int


class SpeechStopped(ServerEvent):
    type: Literal["speech.stopped"] = "speech.stopped"
    audio_end_ms: int


class TranscriptDelta(ServerEvent):
    type: Literal["transcript.delta"] = "transcript.delta"
    turn_id: str
    text: str


class TranscriptDone(ServerEvent):
    type: Literal["transcript.done"] = "transcript.done"
    turn_id: str
    text: str
    language: str | None = None
    duration_s: float


class ConversationHistory(ServerEvent):
    conversation_event: ClassVar[bool] = False
    type: Literal["conversation.history"] = "conversation.history"
    conversation_id: str
    turns: list[dict[str, Any]]
    has_more: bool = False


class SearchResult(BaseModel):
    sha256: str
    turn_id: str
    role: str
    mime: str
    url: str
    score: float


class ConversationSearchResults(ServerEvent):
    conversation_event: ClassVar[bool] = False
    type: Literal["conversation.search.results"] = "conversation.search.results"
    conversation_id: str
    query: str
    encoder: str
    results: list[SearchResult]


class ImageStarted(ServerEvent):
    type: Literal["image.started"] = "image.started"
    job_id: str
    turn_id: str | None = None
    prompt: str
    width: int
    height: int
    steps: int
    seed: int


class ImageProgress(ServerEvent):
    type: Literal["image.progress"] = "image.progress"
    job_id: str
    step: int
    total: int
    preview: str | None = Field(None, description="base64 PNG, a low-resolution look at the image so far")


class ImageDone(ServerEvent):
    type: Literal["image.done"] = "image.done"
    job_id: str
    status: Literal["completed", "cancelled", "failed"]
    seed: int
    mime: str | None = None
    data: str | None = Field(None, description="base64 image bytes, when completed")
    sha256: str | None = None
    error: ErrorBody | None = None


class ToolCallEvent(ServerEvent):
    type: Literal["tool.call"] = "tool.call"
    response_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    needs_confirmation: bool = False


class ToolResult(ServerEvent):
    type: Literal["tool.result"] = "tool.result"
    response_id: str
    call_id: str
    name: str
    status: Literal["ok", "error", "declined", "timeout", "cancelled"]
    result: Any = None
    error: str | None = None


class ReminderDue(ServerEvent):
    conversation_event: ClassVar[bool] = False
    type: Literal["reminder.due"] = "reminder.due"
    reminder_id: str
    kind: Literal["reminder", "timer"] = "reminder"
    text: str
    due_at: str = Field(description="ISO 8601 with the offset of `timezone`")
    timezone: str
    conversation_id: str | None = None


class Error(ServerEvent):
    conversation_event: ClassVar[bool] = False
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    ref: str | None = None


SERVER_EVENTS: tuple[type[ServerEvent], ...] = (
    SessionStarted, TurnCreated, SpeechStarted, SpeechStopped, TranscriptDelta, TranscriptDone, ResponseCreated, ResponseTextDelta, ResponseDone,
    ResponseAudioDelta, ResponseAudioDone,
    ConversationHistory, ConversationSearchResults, ImageStarted, ImageProgress, ImageDone, ToolCallEvent, ToolResult, ReminderDue, Error,
)


def serialize(event: ServerEvent, seq: int) -> str:
    """One server event as a JSON text frame, stamped with `seq`.

    An `error`'s ref is cut to MAX_REF_CHARS; any lone surrogate that reached a string (never from a
    parsed client event) is replaced rather than failing the frame.
    """
    event.seq = seq
    if isinstance(event, Error):
        event.ref = safe_ref(event.ref)
    try:
        return event.model_dump_json(exclude_none=True)
    except ValueError:  # pydantic_core's PydanticSerializationError: a lone surrogate somewhere
        return json.dumps(event.model_dump(exclude_none=True, mode="json"))  # ASCII, surrogates escaped


_server_event_adapter: TypeAdapter[Any] = TypeAdapter(
    Annotated[Union[SERVER_EVENTS], Field(discriminator="type")]  # type: ignore[arg-type]  # noqa: UP007 (a union of a tuple)
)


def parse_server_event(raw: str | bytes) -> ServerEvent:
    """Parse a server frame (for clients and tests); raises pydantic ValidationError if invalid."""
    return _server_event_adapter.validate_json(raw)
