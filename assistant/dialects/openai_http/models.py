"""The request bodies of OpenAI's HTTP API that this server reads, as pydantic models.

Fields OpenAI defines that we do not act on (`user`, `metadata`, `frequency_penalty`, `logit_bias`,
`parallel_tool_calls`, `quality`, `style` ...) are accepted and ignored, as docs/openai.md lists, so
that clients which always send them work; a field we cannot honour in a way the client would notice
(`n` > 1, `logprobs`, JSON response formats) is refused instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_SEQUENCES = 4
MAX_SPEECH_CHARS = 4096
MAX_IMAGES = 4
"""Most images one generation request may ask for (`n`); each one paints in turn."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# Chat completions: content parts


class TextPart(_Body):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class ImageUrl(_Body):
    """An image as a `data:` URL (a remote URL is refused: the server fetches nothing)."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Body):
    """`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`."""

    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Body):
    """Base64 audio of a file format the server decodes."""

    data: str
    format: Literal["wav", "mp3", "ogg", "webm", "flac"]


class InputAudioPart(_Body):
    """`{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}`."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class RefusalPart(_Body):
    """A refusal an assistant message carried; kept as its text."""

    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImageUrlPart | InputAudioPart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


# Chat completions: messages


class SystemMessage(_Body):
    """A system (or `developer`) instruction."""

    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Body):
    """What the user said: text, or parts with images and audio."""

    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class FunctionCall(_Body):
    """A called function: its name and its arguments as a JSON string."""

    name: str
    arguments: str


class ToolCallIn(_Body):
    """A tool call an earlier assistant message made."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Body):
    """An earlier reply: its text, and the tool calls it made."""

    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_Body):
    """The result of one tool call, answering the call `tool_call_id`."""

    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


# Chat completions: tools and the request


class FunctionDefinition(_Body):
    """A function the model may call; `parameters` must be a JSON Schema (checked against its meta-schema)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDefinition(_Body):
    """`{"type": "function", "function": {...}}`."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Body):
    """Names one function."""

    name: str


class NamedToolChoice(_Body):
    """`tool_choice` forcing one function."""

    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Body):
    """`stream_options`: whether the last chunk carries the usage."""

    include_usage: bool = False


class ResponseFormat(_Body):
    """`response_format`: only plain text is produced."""

    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequest(_Body):
    """`POST /v1/chat/completions`."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None

    @property
    def stops(self) -> list[str]:
        """The stop sequences, as a list."""
        if self.stop is None or self.stop == "":
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# Audio and images


class VoiceId(_Body):
    """A voice named as an object (`{"id": ...}`), as newer clients may send it."""

    id: str


class SpeechRequest(_Body):
    """`POST /v1/audio/speech`."""

    model: str
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: str | VoiceId
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] = "audio"

    @property
    def voice_name(self) -> str:
        """The voice asked for, by name."""
        return self.voice if isinstance(self.voice, str) else self.voice.id


class ImageGenerationRequest(_Body):
    """`POST /v1/images/generations`."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] | None = None


class TranscriptionForm(_Body):
    """`POST /v1/audio/transcriptions`, the fields of its multipart form besides `file`."""

    model: str
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float | None = Field(None, ge=0, le=1)

