"""The recent turns of live conversations, kept in memory so a turn's context is not read back from the database.

The store updates an entry in the same step as the rows it writes (and drops it, or everything, when
it cannot say what changed, or when a transaction rolls back); an entry is filled from the database
the first time a conversation's history is read (a conversation resumed) or when it is created. Bounded:
at most `capacity` conversations, least recently used dropped first, and per conversation the last
`keep` turns (`keep` grows to the largest history asked for, up to MAX_KEEP).

Only correct while this process is the only writer of its conversations: a store shared by several
nodes turns it off (capacity 0).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assistant.records import PartRecord, TurnRecord

MAX_KEEP = 256
"""Turns kept per conversation at most; a longer history is read from the database."""


@dataclass
class _Entry:
    turns: list[TurnRecord]
    complete: bool  # holds every turn of the conversation, from its first


class RecentTurns:
    """Per conversation, its last turns as the store would read them (oldest first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keep = 1
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # the store thread writes; a direct Store call may come from another thread
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, conversation_id: str, limit: int) -> list[TurnRecord] | None:
        """The last `limit` turns, oldest first, or None when they are not all held here."""
        with self._lock:
            self.keep = max(self.keep, min(limit, MAX_KEEP))
            entry = self._entries.get(conversation_id)
            if entry is None or (len(entry.turns) < limit and not entry.complete):
                self.misses += 1
                return None
            self._entries.move_to_end(conversation_id)
            self.hits += 1
            return entry.turns[-limit:] if limit else []

    def fill(self, conversation_id: str, turns: list[TurnRecord], limit: int | None) -> None:
        """Hold what a database read returned: the last `limit` turns (None: every turn)."""
        if self.capacity <= 0 or (limit is not None and limit > MAX_KEEP) or (limit is None and len(turns) > MAX_KEEP):
            return
        with self._lock:
            self.keep = max(self.keep, limit or len(turns))
            complete = limit is None or len(turns) < limit
            self._entries[conversation_id] = _Entry(list(turns), complete)
            self._entries.move_to_end(conversation_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def append(self, conversation_id: str, turn: TurnRecord) -> None:
        """A turn was added to the conversation (kept only if the conversation is held)."""
        with self._lock:
            entry = self._entries.get(conversation_id)
            if entry is None:
                return
            entry.turns.append(turn)
            if len(entry.turns) > self.keep:
                del entry.turns[: len(entry.turns) - self.keep]
                entry.complete = False

    def update(self, conversation_id: str, turn_id: str, added_parts: Sequence[PartRecord] = (), **changes: Any) -> None:
        """A held turn changed (a reply finished): replace its fields, append `added_parts` to its parts."""
        with self._lock:
            entry = self._entries.get(conversation_id)
            if entry is None:
                return
            for index in range(len(entry.turns) - 1, -1, -1):
                turn = entry.turns[index]
                if turn.id == turn_id:
                    entry.turns[index] = replace(turn, parts=[*turn.parts, *added_parts], **changes)
                    return

    def drop(self, conversation_id: str) -> None:
        """Forget one conversation (its next read goes to the database)."""
        with self._lock:
            self._entries.pop(conversation_id, None)

    def clear(self) -> None:
        """Forget everything (after a rollback, or a change to many conversations)."""
        with self._lock:
            self._entries.clear()
