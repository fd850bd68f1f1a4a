"""A decode loop that serves concurrent replies in one batch, admitting and retiring rows between steps.

Each new request is prefilled alone (its prompt, no padding), then joins the running batch: the
batch's key/value cache is left-padded to a common length and stacked, with an attention mask that
hides the padding and position ids that count each row's own tokens, so every row decodes exactly as
it would alone. After each step a row that reached its end of sequence, its token limit or its
cancel leaves the batch (its cache rows are dropped); the others go on. Every row streams its own
deltas through its own `DeltaStreamer`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import DynamicCache
from transformers.cache_utils import CacheLayerMixin

log = logging.getLogger("assistant_plugins.decode_loop")


@dataclass(eq=False)
class Row:
    """One request in the batch."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    streamer: Any  # DeltaStreamer
    cancelled: threading.Event
    eos_ids: list[int]
    generator: torch.Generator | None = None  # this row's own random numbers (a seeded request), else torch's global ones
    generated: list[int] = field(default_factory=list)
    length: int = 0  # real tokens in this row's cache
    next_token: int | None = None
    finish_reason: Literal["stop", "length", "cancelled"] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class DecodeLoop:
    """Owns the model's decoding on one thread; `run(row)` blocks until the row is finished."""

    def __init__(self, model: Any, max_batch: int, device: str, on_step: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.device = device
        self.on_step = on_step  # called with the batch size of every decode step (metrics, tests)
        self._incoming: queue.Queue[Row | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, row: Row) -> Row:
        """Queue a row and wait for it to finish (on the caller's thread)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="decode-loop", daemon=True)
                self._thread.start()
        self._incoming.put(row)
        row.done.wait()
        if row.error is not None:
            raise row.error
        return row

    def close(self) -> None:
        """Stop the loop thread (rows in flight are finished first)."""
        if self._thread is not None and self._thread.is_alive():
            self._incoming.put(None)
            self._thread.join(timeout=30)

    # ---------------------------------------------------------------- the loop thread

    def _loop(self) -> None:
        rows: list[Row] = []
        cache: DynamicCache | None = None
        stopping = False
        while rows or not stopping:
            try:
                while len(rows) < self.max_batch:
                    item = self._incoming.get(block=not rows)
                    if item is None:
                        stopping = True
                        break
                    try:
                        row_cache = self._prefill(item)
                    except BaseException as exc:
                        item.error = exc
                        item.done.set()
                        continue
                    if self._finished(item):
                        continue
                    cache = row_cache if cache is None else _merge(cache, rows, row_cache, item)
                    rows.append(item)
            except queue.Empty:
                pass
            if not rows:
                cache = None
                if stopping:
                    break
                continue
            # Every row in the batch joined with its prefill cache, so a non-empty batch has a cache.
            assert cache is not None
            try:
                with torch.inference_mode():
                    self._step(rows, cache)
            except BaseException as exc:
                log.exception("decode step failed")
                for row in rows:
                    row.error = exc
                    row.done.set()
                rows, cache = [], None
                continue
            keep = [i for i, row in enumerate(rows) if not self._finished(row)]
            if len(keep) < len(rows):
                rows = [rows[i] for i in keep]
                cache = _select(cache, keep) if rows else None

    def _prefill(self, row: Row) -> DynamicCache:
        """Run the prompt alone; its first token becomes the row's next input."""
        row.streamer.put(torch.tensor([row.prompt]))
        input_ids = torch.tensor([row.prompt], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True)
        row.length = len(row.prompt)
        self._accept(row, self._choose(out.logits[:, -1, :], [row])[0])
        return out.past_key_values

    def _step(self, rows: list[Row], cache: DynamicCache) -> None:
        """One token for every row."""
        width = cache.get_seq_length()
        input_ids = torch.tensor([[row.next_token] for row in rows], device=self.device)
        mask = torch.zeros((len(rows), width + 1), dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            mask[i, width - row.length:] = 1
        positions = torch.tensor([[row.length] for row in rows], device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        for row in rows:
            row.length += 1
        if self.on_step is not None:
            self.on_step(len(rows))
        for row, token in zip(rows, self._choose(out.logits[:, -1, :], rows)):
            self._accept(row, token)

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> list[int]:
        """Greedy for rows with temperature 0, else temperature and top-p sampling."""
        chosen = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.temperature > 0:
                probs = torch.softmax(logits[i].float() / row.temperature, dim=-1)
                if row.top_p < 1:
                    sorted_probs, order = probs.sort(descending=True)
                    keep = sorted_probs.cumsum(0) - sorted_probs < row.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
                chosen[i] = int(torch.multinomial(probs / probs.sum(), 1, generator=row.generator))
        return chosen

    def _accept(self, row: Row, token: int) -> None:
        """Record a generated token; decide whether the row is finished."""
        if row.cancelled.is_set():
            row.finish_reason = "cancelled"
            return
        row.generated.append(token)
        row.streamer.put(torch.tensor([token]))
        if token in row.eos_ids:
            row.finish_reason = "stop"
        elif len(row.generated) >= row.max_new_tokens:
            row.finish_reason = "length"
        else:
            row.next_token = token

    @staticmethod
    def _finished(row: Row) -> bool:
        if row.finish_reason is None and row.cancelled.is_set():
            row.finish_reason = "cancelled"
        if row.finish_reason is None:
            return False
        if not row.done.is_set():
            row.streamer.end()
            row.done.set()
        return True


def _merge(cache: DynamicCache, rows: list[Row], new: DynamicCache, row: Row) -> DynamicCache:
    """The batch's cache with the new row's stacked under it, both left-padded to one length."""
    width = max(cache.get_seq_length(), new.get_seq_length())
    merged = DynamicCache()
    for index, (old_layer, new_layer) in enumerate(zip(cache.layers, new.layers)):
        old_keys, old_values = _keys_values(old_layer)
        new_keys, new_values = _keys_values(new_layer)
        keys = torch.cat([_left_pad(old_keys, width), _left_pad(new_keys, width)])
        values = torch.cat([_left_pad(old_values, width), _left_pad(new_values, width)])
        merged.update(keys, values, index)
    return merged


def _select(cache: DynamicCache, keep: list[int]) -> DynamicCache:
    """The cache of the rows that go on, with padding no row needs any more trimmed."""
    selected = DynamicCache()
    index = torch.tensor(keep, device=_keys_values(cache.layers[0])[0].device)
    for layer_index, layer in enumerate(cache.layers):
        keys, values = _keys_values(layer)
        selected.update(keys.index_select(0, index), values.index_select(0, index), layer_index)
    return selected


def _keys_values(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's key and value tensors.

    The loop's caches are plain DynamicCaches of ordinary attention layers (no linear-attention or
    dummy layers), each filled by a prefill or a merge, so keys and values are set.
    """
    assert isinstance(layer, CacheLayerMixin) and layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    if missing <= 0:
        return tensor
    pad = torch.zeros((*tensor.shape[:-2], missing, tensor.shape[-1]), dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=-2)
