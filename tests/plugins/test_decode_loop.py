"""Dynamic batching of the transformers dialogue engine, on the tiny random Llama."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from assistant import ChatMessage, DialogueRequest, GenerationOptions
from assistant_plugins.transformers_dialogue import DialogueSettings, TransformersDialogue

PROMPTS = ["Hello, how are you today?", "The capital of France is", "Numbers 0123456789", "Draw a red bicycle near the sea, please, now."]


def request(text: str, tokens: int = 24) -> DialogueRequest:
    return DialogueRequest([ChatMessage("user", text)], GenerationOptions(max_new_tokens=tokens))


def engine(path, batching: bool) -> TransformersDialogue:
    return TransformersDialogue(path, DialogueSettings(model="tiny", device="cpu", batching=batching, max_batch=8, context_tokens=512))


def run_together(engine, requests, cancel_after: dict[int, int] | None = None):
    """Every request at once on its own thread; returns (text, finish_reason, completion tokens) per request."""
    cancel_after = cancel_after or {}
    events = [threading.Event() for _ in requests]
    start = threading.Barrier(len(requests))

    def one(index):
        deltas = []

        def emit(delta):
            deltas.append(delta)
            if index in cancel_after and len(deltas) >= cancel_after[index]:
                events[index].set()

        start.wait()
        result = engine.generate(requests[index], emit, events[index])
        assert "".join(deltas) == result.text
        return result.text, result.finish_reason, result.usage.completion_tokens

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, range(len(requests))))


def test_batched_greedy_output_equals_single_request_output(tiny_llama):
    """Four prompts of different lengths decoded together give what each gives alone with model.generate."""
    single = engine(tiny_llama, batching=False)
    alone = [single.generate(request(p), lambda d: None, threading.Event()) for p in PROMPTS]
    batched_engine = engine(tiny_llama, batching=True)
    assert batched_engine.loop is not None and batched_engine.capabilities.max_batch == 8
    together = run_together(batched_engine, [request(p) for p in PROMPTS])
    assert [(t, r, n) for t, r, n in together] == [(a.text, a.finish_reason, a.usage.completion_tokens) for a in alone]
    assert max(batched_engine.batch_sizes) >= 3, f"rows must have decoded together: {batched_engine.batch_sizes}"
    batched_engine.close()


def test_cancelling_one_of_four_rows_leaves_the_others_untouched(tiny_llama):
    """The cancelled row stops early; the three others finish exactly as they would alone."""
    single = engine(tiny_llama, batching=False)
    alone = [single.generate(request(p, 40), lambda d: None, threading.Event()) for p in PROMPTS]
    batched_engine = engine(tiny_llama, batching=True)
    together = run_together(batched_engine, [request(p, 40) for p in PROMPTS], cancel_after={1: 3})
    assert together[1][1] == "cancelled" and together[1][2] < 40
    for index in (0, 2, 3):
        assert together[index] == (alone[index].text, alone[index].finish_reason, alone[index].usage.completion_tokens)
    batched_engine.close()


def test_sampling_rows_and_late_arrivals_work(tiny_llama):
    """A sampled reply and a greedy one that arrives while it decodes both finish; the greedy one is still exact."""
    batched_engine = engine(tiny_llama, batching=True)
    single = engine(tiny_llama, batching=False)
    expected = single.generate(request(PROMPTS[1], 16), lambda d: None, threading.Event())
    sampled = DialogueRequest([ChatMessage("user", PROMPTS[0])], GenerationOptions(max_new_tokens=30, temperature=0.8, top_p=0.9))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("sampled", batched_engine.generate(sampled, lambda d: None, threading.Event())))
    first.start()
    results["greedy"] = batched_engine.generate(request(PROMPTS[1], 16), lambda d: None, threading.Event())
    first.join(60)
    assert results["sampled"].usage.completion_tokens >= 1
    assert results["greedy"].text == expected.text
    batched_engine.close()
