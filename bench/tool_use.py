"""How well each path picks the built-in tools: the fast path (templates), each offline model, and both together.

The set is bench/data/tool_use.json: reminders with relative dates, timers, "what time is it", paint
requests, image searches, listing and cancelling, and requests that must NOT call a tool. Every request
is made at the set's fixed `now` in its time zone. A request scores when the right tool is called with
the right arguments (the due time the `due` phrase resolves to, the timer's length, the key words of
text/prompt/query), or, for the must-not requests, when no tool is called.

Paths: `fast` (the deterministic routers: plugins/builtin_tools' fast path, then the keyword router for
pictures), `model` (the dialogue model offered the tools;
a model whose chat template cannot render tools gets them described in its system prompt and answers
in JSON), `fast+model` (what the server does: the fast path first, the model for the rest).

    python bench/tool_use.py [--models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct] [--paths fast model fast+model]
        [--max-new-tokens 48] [--threads 1] [--misses]

A model whose pack is not installed is skipped with a note. Prints one table row per model and path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATA = Path(__file__).resolve().parent / "data" / "tool_use.json"
Call = tuple[str, dict[str, Any]] | None
"""A path's answer to one request: (tool name, arguments), or None for no call."""


def load_set(path: Path = DATA) -> tuple[datetime, list[dict[str, Any]]]:
    """(the moment every request is made, the requests) from the data file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    from assistant.timezones import zone

    now = datetime.fromisoformat(data["now"]).astimezone(zone(data["timezone"]))
    return now, data["requests"]


def _has_words(value: Any, words: list[str]) -> bool:
    text = str(value or "").lower()
    return all(word.lower() in text for word in words)


def arguments_right(item: dict[str, Any], arguments: dict[str, Any], now: datetime) -> bool:
    """Whether a call's arguments do what the request asked (its tool already right)."""
    from assistant_plugins.builtin_tools.sentences import parse_duration, parse_when

    tool = item["tool"]
    try:
        if tool == "set_reminder":
            due = parse_when(str(arguments.get("due", "")), now)
            return due == datetime.fromisoformat(item["due"]) and _has_words(arguments.get("text"), item["words"])
        if tool == "set_timer":
            return parse_duration(str(arguments.get("duration", ""))).total_seconds() == item["seconds"]
    except ValueError:
        return False
    field = {"paint": "prompt", "search_images": "query", "cancel_reminder": "reminder"}.get(tool)
    return field is None or _has_words(arguments.get(field), item.get("words", []))


@dataclass
class Score:
    """One path's results on the set."""

    requests: int = 0
    right: int = 0  # right tool and right arguments, or rightly no call
    right_tool: int = 0  # of the requests that need a tool
    need_tool: int = 0
    false_calls: int = 0  # calls on must-not requests
    must_not: int = 0
    seconds: float = 0.0

    @property
    def overall(self) -> float:
        """Fraction of requests answered exactly right."""
        return self.right / self.requests if self.requests else 0.0


def score(answer: Callable[[str], Call], now: datetime, requests: list[dict[str, Any]], misses: list[str] | None = None) -> Score:
    """Run `answer` on every request and score it; requests it got wrong are appended to `misses`."""
    result = Score()
    began = time.perf_counter()
    for item in requests:
        call = answer(item["text"])
        result.requests += 1
        if item["tool"] is None:
            result.must_not += 1
            ok = call is None
            result.false_calls += not ok
        else:
            result.need_tool += 1
            tool_ok = call is not None and call[0] == item["tool"]
            result.right_tool += tool_ok
            ok = tool_ok and call is not None and arguments_right(item, call[1], now)
        result.right += ok
        if not ok and misses is not None:
            misses.append(f"{item['text']!r}: {call}")
    result.seconds = time.perf_counter() - began
    return result


def fast_path(text: str) -> Call:
    """The deterministic routers' call for a request, as the server asks them: the tools' fast path, then the
    keyword router, whose image route starts the same job the `paint` tool does."""
    from assistant_plugins.builtin_tools.fast_path import route_arguments
    from assistant_plugins.keyword_router import KeywordImageRouter

    found = route_arguments(text)
    if found is not None:
        return found
    image = KeywordImageRouter().route(text)
    return None if image is None else ("paint", {"prompt": image.prompt})


def tool_specs() -> list[Any]:
    """The built-in tools as a dialogue engine is offered them."""
    from assistant_plugins.builtin_tools.tools import TOOLS

    from assistant.tools import tool_from_function

    return [tool_from_function(function).spec() for function in TOOLS]


def system_prompt(now: datetime) -> str:
    """What the model is told about the moment and place (the date it needs for relative dates)."""
    return (
        "You are a helpful assistant. Use a tool only when the user asks for what it does; otherwise just answer. "
        f"The user's time zone is {getattr(now.tzinfo, 'key', now.tzinfo)}; it is now {now.strftime('%A, %d %B %Y, %H:%M')}."
    )


def model_path(engine: Any, now: datetime, max_new_tokens: int = 48) -> Callable[[str], Call]:
    """Ask `engine` (a DialogueEngine) each request with the tools offered; its first call is the answer."""
    from assistant.engines import ChatMessage, DialogueRequest, GenerationOptions
    from assistant.tool_calls import parse_tool_calls

    specs = tool_specs()
    names = [spec.name for spec in specs]
    native = engine.capabilities.accepts_tools
    system = system_prompt(now)
    if not native:  # describe the tools in words and ask for JSON, which parse_tool_calls reads
        listing = "\n".join(json.dumps(spec.as_function()) for spec in specs)
        system += (
            "\nYou can call these tools:\n" + listing
            + '\nTo call one, answer only with JSON: {"name": "<tool>", "arguments": {...}}.'
        )

    def answer(text: str) -> Call:
        request = DialogueRequest(
            [ChatMessage("system", system), ChatMessage("user", text)], GenerationOptions(max_new_tokens=max_new_tokens, temperature=0.0),
            tools=tuple(specs) if native else (),
        )
        result = engine.generate(request, lambda _delta: None, threading.Event())
        calls = list(result.tool_calls) or parse_tool_calls(result.text, names)[1]
        calls = [c for c in calls if c.name in names]
        return (calls[0].name, dict(calls[0].arguments)) if calls else None

    return answer


def load_engine(model: str) -> Any | None:
    """The transformers dialogue engine on `model` (CPU), or None when its pack is not installed."""
    from assistant_plugins.transformers_dialogue import DialogueSettings, TransformersDialogue

    from assistant.config import Config
    from assistant.models import NotHere
    from assistant.plugins import build_plugin_manager, collect_registrations

    config = Config.from_dict({"models": {"cache_dir": str(Path(__file__).resolve().parent.parent / ".cache" / "models")}})
    from assistant.models import ModelLocator

    locator = ModelLocator(collect_registrations(build_plugin_manager(config), config).model_sources, config.model_cache_dir)
    try:
        path = locator.resolve(model)
    except (NotHere, LookupError, ValueError) as exc:
        print(f"# {model}: skipped ({exc})".splitlines()[0])
        return None
    return TransformersDialogue(path, DialogueSettings(model=model, batching=False, device="cpu"), name=model)


def combined(first: Callable[[str], Call], then: Callable[[str], Call]) -> Callable[[str], Call]:
    """The fast path, and the model for what it does not claim (what the server does)."""
    return lambda text: first(text) or then(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    parser.add_argument("--paths", nargs="*", default=["fast", "model", "fast+model"])
    parser.add_argument("--misses", action="store_true", help="print each request a path got wrong")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="a call comes first; the rest of an answer does not matter")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (more than the free cores slows decoding down)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    now, requests = load_set()
    rows = []
    if "fast" in args.paths:
        misses: list[str] = []
        rows.append(("(none)", "fast", score(fast_path, now, requests, misses), misses))
    for model in args.models:
        if not {"model", "fast+model"} & set(args.paths):
            break
        engine = load_engine(model)
        if engine is None:
            continue
        answer = model_path(engine, now, args.max_new_tokens)
        cache: dict[str, Call] = {}

        def cached(text: str, answer: Callable[[str], Call] = answer, cache: dict[str, Call] = cache) -> Call:
            if text not in cache:
                cache[text] = answer(text)
            return cache[text]

        for path in ("model", "fast+model"):
            if path in args.paths:
                misses = []
                rows.append((model, path, score(combined(fast_path, cached) if path == "fast+model" else cached, now, requests, misses), misses))
        engine.close()
    print(f"{len(requests)} requests ({sum(r['tool'] is None for r in requests)} must not call a tool), now = {now.isoformat()}")
    print(f"| {'model':<30} | {'path':<10} | overall | right tool | false calls | seconds |")
    print(f"|{'-' * 32}|{'-' * 12}|---------|------------|-------------|---------|")
    for model, path, result, _ in rows:
        print(
            f"| {model:<30} | {path:<10} | {result.overall:7.3f} | {result.right_tool:>4}/{result.need_tool:<5} | "
            f"{result.false_calls:>5}/{result.must_not:<5} | {result.seconds:7.1f} |"
        )
    if args.misses:
        for model, path, _, misses in rows:
            for miss in misses:
                print(f"  {model} {path}: {miss}")


if __name__ == "__main__":
    main()
