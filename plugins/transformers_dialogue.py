"""Dialogue engine on any transformers causal LM with a chat template.

Configured by `[plugins.transformers_dialogue]`. Streams token by token through a streamer that
decodes incrementally (no partial UTF-8 characters), stops at the next token when cancelled, and
fits the history to the context budget by dropping the oldest turns (the system prompt stays).
Concurrent replies decode together in one batch (`assistant_plugins.decode_loop`), unless
`batching = false` (or a repetition penalty is set), which serves one request at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from assistant import (
    Capabilities,
    ChatMessage,
    DialogueEngine,
    DialogueRequest,
    DialogueResult,
    EngineError,
    FinishReason,
    ToolCall,
    ToolCallFilter,
    ToolSpec,
    Usage,
    hookimpl,
    new_call_id,
)

from .decode_loop import DecodeLoop, Row


class DialogueSettings(BaseModel):
    """`[plugins.transformers_dialogue]`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    context_tokens: int = Field(2048, ge=64)
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    batching: bool = Field(True, description="decode concurrent replies together (False: one at a time)")
    max_batch: int = Field(8, ge=1, description="replies decoded together at most")


def pick_device(device: str) -> str:
    """`auto` -> `cuda` when available, else `cpu`; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` -> bfloat16 (or float16) on CUDA, float32 on CPU."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class DeltaStreamer(BaseStreamer):
    """Receives token ids from `generate` and emits each new piece of decoded text.

    Decodes a short window (prefix/read offsets, as text-generation-inference does) so each step
    costs O(1) tokens, and holds back text ending in an incomplete UTF-8 character.
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.emit = emit
        self.ids: list[int] = []
        self.pieces: list[str] = []
        self._prompt_seen = False
        self._prefix_offset = 0
        self._read_offset = 0

    def put(self, value: torch.Tensor) -> None:
        """Called by generate: first with the prompt (skipped), then with each new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        """Called by generate when it stops: emit whatever text is still held back."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        full = decode(self.ids[self._prefix_offset :], skip_special_tokens=True)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            delta = full[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self.pieces.append(delta)
            self.emit(delta)

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self.pieces)


class StopWhenCancelled(StoppingCriteria):
    """Stops generation at the next token once the event is set."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        # transformers types the result as the legacy `torch.BoolTensor`; a bool tensor from torch.full is that.
        stop = torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, stop)


class TransformersDialogue(DialogueEngine):
    """A causal LM loaded once; `generate` is called on the engine's worker thread."""

    def __init__(self, model_path: Path, settings: DialogueSettings, name: str | None = None) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.dtype, self.device)
        self.load(model_path)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.id = f"transformers:{name or settings.model}"
        self.batch_sizes: list[int] = []  # batch size of every batched decode step (for tests and metrics)
        self.loop: DecodeLoop | None = None
        if settings.batching and settings.repetition_penalty == 1.0 and self.batchable:
            self.loop = DecodeLoop(self.model, settings.max_batch, self.device, on_step=self.batch_sizes.append)
        batch = settings.max_batch if self.loop is not None else 1
        # A chat template that renders `tools` lets the model call them; others never see tools.
        self.capabilities = Capabilities(max_batch=batch, accepts_tools="tools" in str(self.tokenizer.chat_template))

    batchable = True  # a vision model's inputs (pixels) do not go through the text decode loop

    def close(self) -> None:
        """Stop the decode loop."""
        if self.loop is not None:
            self.loop.close()

    def load(self, model_path: Path) -> None:
        """Load `self.tokenizer` and `self.model` (a causal LM with a chat template)."""
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{model_path}: the tokenizer has no chat template; a chat (instruct) model is needed")
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype)
        # transformers wraps PreTrainedModel.to with functools.wraps(nn.Module.to); mypy does not bind the
        # resulting functools._Wrapped as a method, so it takes the device for `self`.
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]

    def fit_context(self, messages: list[ChatMessage], max_new_tokens: int, tools: tuple[ToolSpec, ...] = ()) -> Any:
        """The encoded prompt (`encode`'s result) within `context_tokens - max_new_tokens`: oldest turns dropped first."""
        budget = self.settings.context_tokens - max_new_tokens
        if budget <= 0:
            raise EngineError(
                f"max_new_tokens {max_new_tokens} leaves no room for the prompt in a {self.settings.context_tokens}-token context",
                code="bad_request",
            )
        system = [m for m in messages[:1] if m.role == "system"]
        turns = messages[len(system) :]
        # Where the kept history may begin: a user message (so no orphan reply leads), or the last message.
        starts = [i for i, m in enumerate(turns[:-1]) if m.role == "user"] + [len(turns) - 1]
        # Fewer turns never take more tokens: binary-search the earliest start that fits.
        low, high, best = 0, len(starts) - 1, None
        while low <= high:
            middle = (low + high) // 2
            ids = self.encode(system + turns[starts[middle] :], tools)
            if self.prompt_length(ids) <= budget:
                best, high = ids, middle - 1
            else:
                low = middle + 1
        if best is None:
            needed = self.prompt_length(self.encode(system + turns[-1:], tools))
            raise EngineError(
                f"the message needs {needed} prompt tokens but only {budget} fit in the context "
                f"({self.settings.context_tokens} tokens, {max_new_tokens} kept for the reply)",
                code="too_large",
            )
        return best

    def encode(self, messages: list[ChatMessage], tools: tuple[ToolSpec, ...] = ()) -> Any:
        """The prompt for these messages (and the tools offered), encoded: token ids here; model inputs for a vision model."""
        return self._template(messages, tools)

    def prompt_length(self, encoded: Any) -> int:
        """Tokens in an encoded prompt."""
        return len(encoded)

    def model_inputs(self, encoded: Any) -> dict[str, Any]:
        """`generate` keywords for an encoded prompt, on the engine's device."""
        input_ids = torch.tensor([encoded], device=self.device)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def _template(self, messages: list[ChatMessage], tools: tuple[ToolSpec, ...] = ()) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            [template_message(m) for m in messages], tools=[tool.as_function() for tool in tools] or None,
            add_generation_prompt=True, tokenize=True,
        )
        if isinstance(encoded, Mapping):  # a dict or BatchEncoding (return_dict)
            return list(encoded["input_ids"])
        # tokenize=True on one conversation gives its ids; transformers' return type also covers the
        # text (tokenize=False) and batched conversations.
        return list(cast(list[int], encoded))

    def generation_kwargs(self, request: DialogueRequest) -> dict[str, Any]:
        """Settings merged with the turn's overrides, as `generate` keywords."""
        options = request.options
        temperature = self.settings.temperature if options.temperature is None else options.temperature
        top_p = self.settings.top_p if options.top_p is None else options.top_p
        kwargs: dict[str, Any] = {
            "max_new_tokens": options.max_new_tokens or self.settings.max_new_tokens,
            "do_sample": temperature > 0,
            "repetition_penalty": self.settings.repetition_penalty,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0],
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def generate(self, request: DialogueRequest, emit: Callable[[str], None], cancelled: threading.Event) -> DialogueResult:
        """Stream a reply token by token; see DialogueEngine.generate."""
        kwargs = self.generation_kwargs(request)
        tools = request.tools if self.capabilities.accepts_tools and request.tool_choice != "none" else ()
        prompt = self.fit_context(request.messages, kwargs["max_new_tokens"], tools)
        calls = ToolCallFilter(emit, [tool.name for tool in tools]) if tools else None
        streamer = DeltaStreamer(self.tokenizer, calls.push if calls is not None else emit)
        if self.loop is not None:
            row = self.loop.run(Row(
                prompt=list(prompt), max_new_tokens=kwargs["max_new_tokens"], temperature=kwargs.get("temperature") or 0.0,
                top_p=kwargs.get("top_p") or 1.0, streamer=streamer, cancelled=cancelled, eos_ids=self.eos_ids,
            ))
            assert row.finish_reason is not None  # run() returns only finished rows (or raises)
            return self._result(streamer.text, calls, Usage(len(prompt), len(row.generated)), row.finish_reason)
        inputs = self.model_inputs(prompt)
        prompt_length = int(inputs["input_ids"].shape[1])
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([StopWhenCancelled(cancelled)]),
                **kwargs,
            )
        new_ids = output[0, prompt_length:].tolist()
        reason: FinishReason
        if cancelled.is_set():
            reason = "cancelled"
        elif new_ids and new_ids[-1] in self.eos_ids:
            reason = "stop"
        else:
            reason = "length" if len(new_ids) >= kwargs["max_new_tokens"] else "stop"
        return self._result(streamer.text, calls, Usage(prompt_length, len(new_ids)), reason)

    def _result(self, text: str, calls: ToolCallFilter | None, usage: Usage, reason: FinishReason) -> DialogueResult:
        """The reply, its tool calls split off when tools were offered (finish_reason `tool_calls` then)."""
        if calls is None or reason == "cancelled":
            if calls is not None:
                calls.finish(text)
            return DialogueResult(text, usage, reason)
        content, found = calls.finish(text)
        found = self._schema_calls(text) or found
        if not found:
            return DialogueResult(text, usage, reason)
        return DialogueResult(content, usage, "tool_calls", tuple(found))

    def _schema_calls(self, text: str) -> list[ToolCall]:
        """The calls `tokenizer.parse_response` finds, for tokenizers that carry a response schema; else none."""
        if not getattr(self.tokenizer, "response_schema", None):
            return []
        try:
            parsed = self.tokenizer.parse_response(text)
        except Exception:  # a reply the schema does not match: the filter's own parse stands
            return []
        found = []
        for call in (parsed or {}).get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments") or {}
            if isinstance(function.get("name"), str) and isinstance(arguments, dict):
                found.append(ToolCall(str(call.get("id") or new_call_id()), function["name"], arguments))
        return found


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A message in the form chat templates read: `tool_calls` on assistant messages, ids on tool results."""
    rendered: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        rendered["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.role == "tool":
        rendered.update(tool_call_id=message.tool_call_id, name=message.name)
    return rendered


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the generation config's, plus the tokenizer's eos."""
    found: list[int] = []
    configured = model.generation_config.eos_token_id
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and value not in found:
            found.append(int(value))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in found:
        found.append(int(tokenizer.eos_token_id))
    if not found:
        raise ValueError("the model defines no end-of-sequence token")
    return found


def create_engine(app: Any, settings: DialogueSettings) -> TransformersDialogue:
    """Engine factory: resolve the configured model and load it."""
    return TransformersDialogue(app.models.resolve(settings.model), settings)


def configured_model(app: Any, settings: DialogueSettings) -> str:
    """The model name this engine would load, for `assistant models`."""
    return settings.model


@hookimpl
def register_engines(register):
    """Register the `transformers` dialogue engine, configured by `[plugins.transformers_dialogue]`."""
    register("dialogue", "transformers", create_engine, settings=DialogueSettings, model_name=configured_model)
