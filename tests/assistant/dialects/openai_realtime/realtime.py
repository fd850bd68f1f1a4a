"""Helpers of the Realtime API tests: every server event checked against the `openai` SDK's own types, the lifecycle checked."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import numpy as np
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter
from websockets.asyncio.client import connect

from assistant import audio

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
EXTRA_ALLOWED = {("session", "id"), ("session", "object")}
"""Fields OpenAI's servers send that the SDK's models do not declare."""


def _extras(model: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Paths of fields a model holds that its type does not declare (the SDK's models accept any)."""
    found: list[tuple[str, ...]] = []
    if isinstance(model, BaseModel):
        found += [(*path, name) for name in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), (*path, name))
    elif isinstance(model, list):
        for value in model:
            found += _extras(value, path)
    return found


def validate(event: dict[str, Any]) -> dict[str, Any]:
    """The event, after checking it is a `RealtimeServerEvent` of its type with no field the SDK does not know."""
    model = SERVER_EVENT.validate_python(event)
    assert model.type == event["type"], event
    extras = [path for path in _extras(model, ()) if path not in EXTRA_ALLOWED]
    assert not extras, f"{event['type']} has fields the SDK does not declare: {extras}"
    return event


def check_lifecycle(events: list[dict[str, Any]], finished: bool = True) -> None:
    """Responses, output items and content parts open and close in pairs, output indexes are dense, one response.done each."""
    created: Counter[str] = Counter()
    done: Counter[str] = Counter()
    outputs: dict[str, list[str]] = {}
    open_items: dict[str, str] = {}  # item id -> response id
    parts: dict[str, int] = {}  # item id -> parts opened
    open_parts: set[tuple[str, int]] = set()
    added: set[str] = set()
    item_done: set[str] = set()
    for event in events:
        kind = event["type"]
        if kind == "response.created":
            rid = event["response"]["id"]
            assert created[rid] == 0 and event["response"]["status"] == "in_progress"
            created[rid] += 1
            outputs[rid] = []
        elif kind == "response.done":
            rid = event["response"]["id"]
            assert created[rid] == 1 and done[rid] == 0, f"response.done twice or before response.created: {rid}"
            done[rid] += 1
            assert rid not in open_items.values(), f"response {rid} ended with items open"
            assert [item["id"] for item in event["response"]["output"]] == outputs[rid]
        elif kind == "response.output_item.added":
            rid, item_id = event["response_id"], event["item"]["id"]
            assert created[rid] == 1 and done[rid] == 0 and item_id not in open_items
            assert event["output_index"] == len(outputs[rid]), "output indexes are dense, in order"
            outputs[rid].append(item_id)
            open_items[item_id] = rid
        elif kind == "response.output_item.done":
            item_id = event["item"]["id"]
            assert open_items.pop(item_id) == event["response_id"]
            assert outputs[event["response_id"]].index(item_id) == event["output_index"]
            assert not any(i == item_id for i, _ in open_parts), f"item {item_id} closed with a part open"
        elif kind == "response.content_part.added":
            item_id = event["item_id"]
            assert item_id in open_items and event["content_index"] == parts.get(item_id, 0)
            parts[item_id] = event["content_index"] + 1
            open_parts.add((item_id, event["content_index"]))
        elif kind == "response.content_part.done":
            open_parts.remove((event["item_id"], event["content_index"]))
        elif kind.startswith(("response.output_text.", "response.output_audio.", "response.output_audio_transcript.")):
            assert (event["item_id"], event["content_index"]) in open_parts, f"{kind} outside its content part"
        elif kind.startswith("response.function_call_arguments."):
            assert event["item_id"] in open_items
        elif kind == "conversation.item.added":
            assert event["item"]["id"] not in added
            added.add(event["item"]["id"])
        elif kind == "conversation.item.done":
            assert event["item"]["id"] in added and event["item"]["id"] not in item_done
            item_done.add(event["item"]["id"])
    if finished:
        assert created == done, f"responses without exactly one response.done: {created - done}"
        assert not open_items and not open_parts


def pcm24k(wav: bytes) -> bytes:
    """A WAV file as PCM16 mono at 24 kHz, the Realtime API's default input format (properly resampled)."""
    samples = audio.decode(wav, "wav")
    resampled = audio.StreamResampler(audio.SAMPLE_RATE, 24000).push((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


class RealtimeClient:
    """A plain websockets client of /v1/realtime; every event it receives is validated and kept."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(event if isinstance(event, (str, bytes)) else json.dumps(event))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        event = validate(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
        self.events.append(event)
        return event

    async def recv_until(self, kind: str, timeout: float = 60, allow_errors: bool = False) -> list[dict[str, Any]]:
        """Events up to and including the first of `kind`; an unexpected `error` fails at once."""
        seen = []
        while True:
            seen.append(await self.recv(timeout))
            if seen[-1]["type"] == kind:
                return seen
            assert allow_errors or seen[-1]["type"] != "error", f"unexpected error while waiting for {kind}: {seen[-1]}"

    async def error(self) -> dict[str, Any]:
        """The next `error` event's `error`."""
        return (await self.recv_until("error"))[-1]["error"]


class open_realtime:
    """`async with open_realtime(server, token=...) as client`: a RealtimeClient past `session.created`."""

    def __init__(self, port: int, token: str | None = "sk-anything", **kwargs: Any) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.cm = connect(f"ws://127.0.0.1:{port}/v1/realtime?model=test", additional_headers=headers, **kwargs)

    async def __aenter__(self) -> RealtimeClient:
        client = RealtimeClient(await self.cm.__aenter__())
        assert (await client.recv())["type"] == "session.created"
        return client

    async def __aexit__(self, *exc: Any) -> None:
        await self.cm.__aexit__(*exc)
