"""Self-hosted multimodal assistant backend. Public API for plugin authors."""

from assistant.async_calls import CallStopped, stop_on
from assistant.engines import (
    AsrEngine,
    Capabilities,
    ChatMessage,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    Engine,
    EngineError,
    FinishReason,
    GeneratedImage,
    GenerationCancelled,
    GenerationOptions,
    ImageEncoder,
    ImageGenerator,
    ImageRequest,
    MessagePart,
    SpeechSynthesizer,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Transcript,
    TranscriptSegment,
    Usage,
    Voice,
)
from assistant.hookspecs import hookimpl
from assistant.modalities import ImageInput, Modality
from assistant.models import ModelSource, NotHere
from assistant.part_types import DecodedPart, PartError, PartLimits, PartTools, PartType
from assistant.routes import ImageRoute, ToolRoute, TurnRouter
from assistant.tool_calls import ToolCallFilter, new_call_id, parse_tool_calls
from assistant.tools import Tool, ToolContext

__version__ = "0.1.0"

__all__ = [
    "AsrEngine",
    "CallStopped",
    "Capabilities",
    "ChatMessage",
    "DecodedPart",
    "DialogueEngine",
    "DialogueRequest",
    "DialogueResult",
    "Engine",
    "EngineError",
    "FinishReason",
    "GeneratedImage",
    "GenerationCancelled",
    "GenerationOptions",
    "ImageEncoder",
    "ImageGenerator",
    "ImageInput",
    "ImageRequest",
    "ImageRoute",
    "MessagePart",
    "Modality",
    "ModelSource",
    "NotHere",
    "PartError",
    "PartLimits",
    "PartTools",
    "PartType",
    "SpeechSynthesizer",
    "Tool",
    "ToolCall",
    "ToolCallFilter",
    "ToolChoice",
    "ToolContext",
    "ToolRoute",
    "ToolSpec",
    "Transcript",
    "TranscriptSegment",
    "TurnRouter",
    "Usage",
    "Voice",
    "__version__",
    "hookimpl",
    "new_call_id",
    "parse_tool_calls",
    "stop_on",
]
