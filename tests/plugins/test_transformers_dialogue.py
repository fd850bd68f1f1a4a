"""The transformers dialogue plugin: a tiny random Llama for mechanics, offline SmolLM2 for content."""

from __future__ import annotations

import threading

import pytest

from assistant.app import App
from assistant.config import ConfigError
from assistant.engines import ChatMessage, DialogueRequest, EngineError, GenerationOptions, Usage
from assistant_plugins.transformers_dialogue import DeltaStreamer, TransformersDialogue
from tests.conftest import make_config
from tests.plugins.conftest import build_tiny_llama


def engine_for(model_path, tmp_path, **settings) -> TransformersDialogue:
    config = make_config(
        tmp_path, engines={"dialogue": "transformers"},
        plugins={"transformers_dialogue": {"model": str(model_path), "max_new_tokens": 24, **settings}},
    )
    engine = App.prepare(config).build_engine("dialogue", "transformers")
    assert isinstance(engine, TransformersDialogue)
    return engine


def ask(text: str, **options) -> DialogueRequest:
    return DialogueRequest([ChatMessage("system", "Be brief."), ChatMessage("user", text)], GenerationOptions(**options))


def test_loads_by_path_through_the_model_locator_and_streams_token_by_token(tiny_llama, tmp_path):
    """Deltas arrive one generated token at a time and join to the decoded reply."""
    engine = engine_for(tiny_llama, tmp_path)
    assert engine.id == f"transformers:{tiny_llama}"
    deltas: list[str] = []
    result = engine.generate(ask("Hello"), deltas.append, threading.Event())
    assert result.usage.completion_tokens >= 1 and result.finish_reason in ("stop", "length")
    assert "".join(deltas) == result.text
    prompt = engine.fit_context(ask("Hello").messages, 24)
    assert result.usage.prompt_tokens == len(prompt)
    # Token by token: never more deltas than tokens, and more than one delta for a multi-token reply.
    assert len(deltas) <= result.usage.completion_tokens
    if result.usage.completion_tokens >= 4:
        assert len(deltas) >= 2


def test_greedy_is_deterministic_and_options_override_per_turn(tiny_llama, tmp_path):
    """Greedy replies repeat exactly; max_new_tokens per turn caps the reply with finish_reason length."""
    engine = engine_for(tiny_llama, tmp_path)
    first = engine.generate(ask("Paris"), lambda d: None, threading.Event())
    second = engine.generate(ask("Paris"), lambda d: None, threading.Event())
    assert first.text == second.text
    short = engine.generate(ask("Paris", max_new_tokens=3), lambda d: None, threading.Event())
    assert short.usage.completion_tokens <= 3
    if short.usage.completion_tokens == 3:
        assert short.finish_reason == "length"
    sampled = engine.generate(ask("Paris", temperature=1.0, top_p=0.9), lambda d: None, threading.Event())
    assert sampled.usage.completion_tokens >= 1


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "one-at-a-time"])
def test_cancel_stops_at_the_next_token(tiny_llama, tmp_path, batching):
    """A cancel already set lets at most one token through; one set mid-stream stops the reply early."""
    engine = engine_for(tiny_llama, tmp_path, max_new_tokens=200, batching=batching)
    cancelled = threading.Event()
    cancelled.set()
    result = engine.generate(ask("Hello", max_new_tokens=200), lambda d: None, cancelled)
    assert result.finish_reason == "cancelled" and result.usage.completion_tokens == (0 if batching else 1)

    cancelled = threading.Event()
    deltas: list[str] = []

    def emit(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            cancelled.set()

    result = engine.generate(ask("Hello", max_new_tokens=200), emit, cancelled)
    assert result.finish_reason == "cancelled"
    assert result.usage.completion_tokens < 20 and "".join(deltas) == result.text


def test_history_is_fitted_to_the_budget_dropping_oldest_and_keeping_the_system_prompt(tiny_llama, tmp_path):
    """Past the token budget the oldest turns go first; the system prompt and the last message stay."""
    engine = engine_for(tiny_llama, tmp_path, context_tokens=160)
    history = [ChatMessage("system", "SYSTEM RULES")]
    for i in range(12):
        history += [ChatMessage("user", f"question {i} about Paris"), ChatMessage("assistant", f"answer {i} is Paris")]
    history.append(ChatMessage("user", "final question"))
    ids = engine.fit_context(history, max_new_tokens=24)
    text = engine.tokenizer.decode(ids)
    assert len(ids) <= 160 - 24
    assert text.startswith("<|im_start|>system\nSYSTEM RULES") and "final question" in text
    assert "question 0 " not in text and "answer 11 is Paris" in text
    assert text.index("<|im_start|>system") < text.index("<|im_start|>user")  # no orphan assistant turn first
    # The most history that fits is kept: starting one question earlier would not fit.
    first_kept = min(i for i in range(12) if f"question {i} " in text)
    earlier = [history[0]] + history[1 + 2 * (first_kept - 1):]
    assert len(engine._template(earlier)) > 160 - 24


def test_a_message_too_long_for_the_context_is_refused_clearly(tiny_llama, tmp_path):
    """One message that alone exceeds the budget raises EngineError code too_large."""
    engine = engine_for(tiny_llama, tmp_path, context_tokens=100)
    with pytest.raises(EngineError) as err:
        engine.generate(ask("Paris " * 200), lambda d: None, threading.Event())
    assert err.value.code == "too_large" and "prompt tokens" in str(err.value)
    with pytest.raises(EngineError) as err:
        engine.generate(ask("hi", max_new_tokens=500), lambda d: None, threading.Event())
    assert err.value.code == "bad_request"


def test_a_model_without_chat_template_is_refused(tmp_path):
    """A base model with no chat template fails to load with a message saying so."""
    path = build_tiny_llama(tmp_path / "base", with_template=False)
    with pytest.raises(ValueError, match="chat template"):
        engine_for(path, tmp_path)


def test_bad_settings_name_the_key(tmp_path):
    """An invalid or unknown key in [plugins.transformers_dialogue] stops startup, reported by its dotted name."""
    with pytest.raises(ConfigError, match="plugins.transformers_dialogue.temperature"):
        App.prepare(make_config(tmp_path, plugins={"transformers_dialogue": {"temperature": -1}}))
    with pytest.raises(ConfigError, match="plugins.transformers_dialogue.modle"):
        App.prepare(make_config(tmp_path, plugins={"transformers_dialogue": {"modle": "x"}}))


def test_streamer_holds_back_incomplete_utf8(tiny_llama):
    """A multi-byte character split over tokens is emitted whole, never as a replacement character."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ids = tokenizer.encode("Ünïcödé 🙂 done", add_special_tokens=False)
    out: list[str] = []
    streamer = DeltaStreamer(tokenizer, out.append)
    import torch

    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(out) == "Ünïcödé 🙂 done" and not any("\ufffd" in piece for piece in out)


async def test_transformers_engine_serves_a_turn_over_the_websocket(tiny_llama, tmp_path, start_server, connect_client):
    """With the tiny Llama configured by path, a websocket turn streams and stores its reply."""
    config = make_config(
        tmp_path, engines={"dialogue": "transformers"},
        plugins={"transformers_dialogue": {"model": str(tiny_llama), "max_new_tokens": 8}},
    )
    server = await start_server(config)
    async with connect_client(server) as client:
        started = await client.start()
        assert started["capabilities"]["dialogue"] == f"transformers:{tiny_llama}"
        events = await client.say("Hello")
        done = events[-1]
        assert done["status"] == "completed"
        assert done["text"] == "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        assert 1 <= done["usage"]["completion_tokens"] <= 8


@pytest.mark.offline_model
def test_offline_smollm2_knows_the_capital_of_france(tmp_path):
    """The real offline SmolLM2-135M-Instruct answers the capital question with Paris."""
    config = make_config(tmp_path, engines={"dialogue": "transformers"}, plugins={"transformers_dialogue": {"max_new_tokens": 40}})
    engine = App.prepare(config).build_engine("dialogue", "transformers")
    deltas: list[str] = []
    result = engine.generate(
        DialogueRequest([ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "What is the capital of France?")]),
        deltas.append, threading.Event(),
    )
    assert "Paris" in result.text and "".join(deltas) == result.text


TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:\n{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- for call in m.tool_calls or [] %}<tool_call>{{ call.function | tojson }}</tool_call>{%- endfor %}"
    "{%- if m.role == 'tool' %} ({{ m.tool_call_id }}){%- endif %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture
def tool_llama(tiny_llama, tmp_path):
    """The tiny Llama with a chat template that renders tools, tool calls and tool results (as Qwen's does)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "tool-llama"
    shutil.copytree(tiny_llama, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def test_tools_reach_the_prompt_through_the_chat_template(tool_llama, tiny_llama, tmp_path):
    """A template that renders `tools` makes the engine take tools; calls and results in the history render too."""
    from assistant.engines import ToolCall, ToolSpec

    assert not engine_for(tiny_llama, tmp_path).capabilities.accepts_tools  # its template ignores tools
    engine = engine_for(tool_llama, tmp_path)
    assert engine.capabilities.accepts_tools
    timer = ToolSpec("set_timer", "Start a timer.", {"type": "object", "properties": {"seconds": {"type": "integer"}}})
    messages = [
        ChatMessage("user", "Timer for a minute"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "set_timer", {"seconds": 60}),)),
        ChatMessage("tool", '{"ok": true}', tool_call_id="call_1", name="set_timer"),
    ]
    prompt = engine.tokenizer.decode(engine.fit_context(messages, 24, (timer,)))
    assert '"name": "set_timer"' in prompt and '"seconds": 60' in prompt and '{"ok": true} (call_1)' in prompt
    deltas: list[str] = []
    result = engine.generate(DialogueRequest(messages, tools=(timer,)), deltas.append, threading.Event())
    assert result.finish_reason in ("stop", "length", "tool_calls")  # random weights: whatever it says, the text adds up
    if result.finish_reason != "tool_calls":
        assert "".join(deltas) == result.text


def test_tool_calls_in_the_reply_are_split_from_its_text(tool_llama, tmp_path):
    """What the model writes as a `<tool_call>` becomes a call with finish_reason tool_calls, out of the text."""
    from assistant.tool_calls import ToolCallFilter

    engine = engine_for(tool_llama, tmp_path)
    emitted: list[str] = []
    text = 'Starting it.<tool_call>{"name": "set_timer", "arguments": {"seconds": 60}}</tool_call>'
    calls = ToolCallFilter(emitted.append, ["set_timer"])
    calls.push(text)
    result = engine._result(text, calls, Usage(3, 9), "stop")
    assert result.finish_reason == "tool_calls" and result.text == "Starting it." and result.usage == Usage(3, 9)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("set_timer", {"seconds": 60})]
    assert "".join(emitted) == "Starting it."
