"""Reminders and timers: stored per principal, fired once when due, to every connected client of their owner.

`ReminderStore` is the table and its few queries (synchronous, on the store's SQLAlchemy engine, run
on the store thread); `Reminders` is what the app holds (`app.reminders`): the async API the tools
use, with the rules (no past, no absurd dates, a bound on active reminders per principal), and the
clock: a background task that sleeps until the next due time (woken when a reminder is created or a
principal connects), claims what is due and sends `ReminderDue` through `app.notices`.

A reminder fires when it is due and its owner has a client connected: claiming marks it fired in the
same statement that selects it, so two firers (two clock passes, two processes on one database)
never both fire it. One that fell due while the server was down, or while its owner was away, fires
when the owner is next connected, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import DateTime, Index, String, Table, Text, func, select
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.orm import Mapped, mapped_column

from assistant.config import RemindersConfig
from assistant.errors import AssistantError
from assistant.events import ReminderDue
from assistant.notices import Notices
from assistant.store import AsyncStore, Base, new_id
from assistant.timezones import zone

log = logging.getLogger("assistant.reminders")

KINDS = ("reminder", "timer")
LIST_LIMIT = 100
"""Most reminders one listing returns (soonest first)."""
CLAIM_BATCH = 500
"""Most reminders one clock pass fires; the next pass follows at once."""
MAX_SLEEP_S = 60.0
"""The clock looks at the table at least this often (another process may share the database)."""


class Reminder(Base):
    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_active_due", "fired_at", "cancelled_at", "due_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="reminder")
    text: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # UTC
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


_reminders = cast(Table, Reminder.__table__)
_c = _reminders.c
_ACTIVE = _c.fired_at.is_(None) & _c.cancelled_at.is_(None)


def _utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ReminderRecord:
    """A stored reminder, detached from the database."""

    id: str
    owner: str
    conversation_id: str | None
    kind: str
    text: str
    due_at: datetime  # aware, UTC
    timezone: str
    created_at: datetime
    fired_at: datetime | None
    cancelled_at: datetime | None

    @property
    def local_due(self) -> datetime:
        """The due time in the time zone the reminder was set in."""
        return self.due_at.astimezone(zone(self.timezone))

    def to_dict(self) -> dict[str, Any]:
        """The reminder as tools return it (JSON-ready; times in ISO 8601 with the reminder's offset)."""
        return {
            "id": self.id, "kind": self.kind, "text": self.text, "due_at": self.local_due.isoformat(), "timezone": self.timezone,
            "conversation_id": self.conversation_id, "fired": self.fired_at is not None, "cancelled": self.cancelled_at is not None,
        }

    def due_event(self) -> ReminderDue:
        """The notice its owner's clients get when it fires."""
        return ReminderDue(
            reminder_id=self.id, text=self.text, due_at=self.local_due.isoformat(), timezone=self.timezone,
            conversation_id=self.conversation_id, kind=self.kind,
        )


def _record(row: Any) -> ReminderRecord:
    return ReminderRecord(
        id=row.id, owner=row.owner, conversation_id=row.conversation_id, kind=row.kind, text=row.text,
        due_at=cast(datetime, _utc(row.due_at)), timezone=row.timezone, created_at=cast(datetime, _utc(row.created_at)),
        fired_at=_utc(row.fired_at), cancelled_at=_utc(row.cancelled_at),
    )


class TooManyReminders(Exception):
    """The owner already has the most active reminders allowed."""


class ReminderStore:
    """The reminders table on the store's engine; every method is one transaction (call them on the store thread)."""

    def __init__(self, engine: SqlEngine) -> None:
        self.engine = engine  # the table is the schema's (assistant/migrations), made when the store opened

    def create(
        self, owner: str, conversation_id: str | None, text: str, due_at: datetime, timezone: str, kind: str, max_active: int,
    ) -> ReminderRecord:
        """Store a new reminder; TooManyReminders when `owner` already has `max_active` waiting."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            active = conn.execute(select(func.count()).select_from(_reminders).where((_c.owner == owner) & _ACTIVE)).scalar_one()
            if active >= max_active:
                raise TooManyReminders(f"{owner} has {active} active reminders")
            record = ReminderRecord(new_id(), owner, conversation_id, kind, text, due_at.astimezone(UTC), timezone, now, None, None)
            conn.execute(_reminders.insert(), vars(record))
        return record

    def active(self, owner: str, limit: int = LIST_LIMIT) -> list[ReminderRecord]:
        """`owner`'s reminders still waiting, soonest first, at most `limit`."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_reminders).where((_c.owner == owner) & _ACTIVE).order_by(_c.due_at).limit(limit)).all()
        return [_record(row) for row in rows]

    def get(self, owner: str, reminder_id: str) -> ReminderRecord | None:
        """One of `owner`'s reminders (any state), or None (also when it is somebody else's)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_reminders).where((_c.id == reminder_id) & (_c.owner == owner))).first()
        return None if row is None else _record(row)

    def cancel(self, owner: str, reminder_id: str) -> ReminderRecord | None:
        """Cancel one of `owner`'s waiting reminders; None when there is no such waiting reminder of theirs."""
        with self.engine.begin() as conn:
            row = conn.execute(
                _reminders.update().where((_c.id == reminder_id) & (_c.owner == owner) & _ACTIVE)
                .values(cancelled_at=datetime.now(UTC)).returning(*_c)
            ).first()
        return None if row is None else _record(row)

    def next_due(self, owners: Iterable[str]) -> datetime | None:
        """The earliest due time among these owners' waiting reminders, or None."""
        owners = list(owners)
        if not owners:
            return None
        with self.engine.connect() as conn:
            value = conn.execute(select(func.min(_c.due_at)).where(_ACTIVE & _c.owner.in_(owners))).scalar_one_or_none()
        return _utc(value)

    def claim_due(self, now: datetime, owners: Iterable[str], limit: int = CLAIM_BATCH) -> list[ReminderRecord]:
        """Mark fired, and return, these owners' waiting reminders due by `now` (at most `limit`), in one statement:
        a reminder two claimers race for is returned to one of them only."""
        owners = list(owners)
        if not owners:
            return []
        due = select(_c.id).where(_ACTIVE & (_c.due_at <= now.astimezone(UTC)) & _c.owner.in_(owners)).order_by(_c.due_at).limit(limit)
        due = due.with_for_update(skip_locked=True)  # PostgreSQL: racing claimers take different rows (SQLite has one writer)
        with self.engine.begin() as conn:
            rows = conn.execute(
                _reminders.update().where(_c.id.in_(due.scalar_subquery()) & _ACTIVE).values(fired_at=now.astimezone(UTC)).returning(*_c)
            ).all()
        return sorted((_record(row) for row in rows), key=lambda r: r.due_at)


class Reminders:
    """The app's reminders: the async API tools use, the rules, and the clock that fires them (`start`/`stop`)."""

    def __init__(self, store: AsyncStore, config: RemindersConfig, notices: Notices) -> None:
        self.db = store
        self.config = config
        self.notices = notices
        self.store = ReminderStore(store.store.engine)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.fired = 0  # reminders fired by this process

    async def create(
        self, owner: str, conversation_id: str | None, text: str, due_at: datetime, timezone: str, now: datetime, kind: str = "reminder",
    ) -> ReminderRecord:
        """Store a reminder for `owner` due at `due_at` (aware); bad_request for a past, absurd or empty one, rate_limited past the bound."""
        config = self.config
        text = " ".join(text.split())
        if kind not in KINDS:
            raise AssistantError("bad_request", f"kind must be one of {', '.join(KINDS)}")
        if not text:
            raise AssistantError("bad_request", "a reminder needs some text: what should it remind you of?")
        if len(text) > config.max_text_chars:
            raise AssistantError("too_large", f"the reminder's text is {len(text)} characters; at most {config.max_text_chars}")
        try:
            zone(timezone)
        except ValueError as exc:
            raise AssistantError("bad_request", str(exc)) from None
        if due_at.tzinfo is None:
            raise AssistantError("bad_request", "the due time needs a time zone")
        if due_at <= now:
            raise AssistantError("bad_request", f"{due_at.isoformat()} is in the past (it is {now.isoformat(timespec='seconds')})")
        if due_at - now > timedelta(days=config.max_days_ahead):
            raise AssistantError("bad_request", f"{due_at.date().isoformat()} is too far ahead: at most {config.max_days_ahead} days")
        try:
            record = await self.db.call(self.store.create, owner, conversation_id, text, due_at, timezone, kind, config.max_active)
        except TooManyReminders:
            raise AssistantError(
                "rate_limited", f"you have {config.max_active} reminders waiting already ([reminders] max_active); cancel some first"
            ) from None
        self.wake()
        return record

    async def active(self, owner: str) -> list[ReminderRecord]:
        """`owner`'s waiting reminders, soonest first (at most LIST_LIMIT)."""
        return await self.db.call(self.store.active, owner)

    async def cancel(self, owner: str, reminder_id: str) -> ReminderRecord:
        """Cancel one of `owner`'s waiting reminders; not_found for an unknown one, somebody else's, or one already fired or cancelled."""
        record = await self.db.call(self.store.cancel, owner, reminder_id)
        if record is None:
            raise AssistantError("not_found", f"no waiting reminder {reminder_id!r}")
        self.wake()
        return record

    def wake(self) -> None:
        """Have the clock look again now (a reminder was created or cancelled, or a principal connected)."""
        self._wake.set()

    def start(self) -> None:
        """Start the clock (once, on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reminder-clock")

    async def stop(self) -> None:
        """Stop the clock and wait for it (a reminder being fired finishes first or stays unclaimed)."""
        task, self._task = self._task, None
        self._stopping = True  # also ends the loop should a wake-up swallow the cancel
        self._wake.set()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def fire_due(self) -> int:
        """One pass: claim the due reminders of connected principals and notify their clients; returns how many fired."""
        claimed = await self.db.call(self.store.claim_due, datetime.now(UTC), self.notices.principals())
        for record in claimed:
            reached = await self.notices.notify(record.owner, record.due_event())
            log.info("reminder %s of %s fired (%d client(s))", record.id, record.owner, reached)
        self.fired += len(claimed)
        return len(claimed)

    async def _run(self) -> None:
        """Fire what is due, then sleep until the next due time, a wake-up, or MAX_SLEEP_S."""
        while not self._stopping:
            self._wake.clear()
            try:
                while await self.fire_due() >= CLAIM_BATCH:
                    pass
                next_due = await self.db.call(self.store.next_due, self.notices.principals())
            except Exception:
                log.exception("the reminder clock failed; trying again shortly")
                next_due = datetime.now(UTC) + timedelta(seconds=1)
            sleep = MAX_SLEEP_S if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(sleep, MAX_SLEEP_S))):
                    await self._wake.wait()
