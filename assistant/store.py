"""Conversation storage: SQLAlchemy 2 models and the few queries the core needs.

SQLite (WAL, synchronous=FULL) by default; PostgreSQL (`postgresql+psycopg://...`) for several processes
on one database; any SQLAlchemy URL may work. The schema is Alembic's (assistant/migrations, see
assistant.schema): opening a store creates or upgrades it, or refuses a schema it cannot use. `Store` is synchronous;
`AsyncStore` runs every call on one dedicated thread so the event loop never waits on disk and
SQLite sees a single writer. Rules: the user turn is committed before any engine sees it; the
assistant turn is inserted `in_progress` when its reply starts and committed with its final status
when the reply ends; at startup, replies left `in_progress` by a crash become `interrupted`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from inspect import Parameter, signature
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, make_url
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import StaticPool

from assistant.compiled_sql import CompiledStatement, execute_in, in_binds, insert_rows
from assistant.group_commit import GroupCommitter
from assistant.recent_turns import RecentTurns
from assistant.records import TOOL_PART_KINDS as TOOL_PART_KINDS  # re-exported: the core imports records from here
from assistant.records import ImageRef, PartRecord, TurnRecord, TurnStart
from assistant.schema import prepare

T = TypeVar("T")

log = logging.getLogger("assistant.store")

REPLY_STATUSES = ("in_progress", "completed", "cancelled", "failed", "interrupted")


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh public id (conversations, turns)."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    seq_reserved: Mapped[int] = mapped_column(Integer, default=0)  # seqs up to this one may have been sent (see channels)
    owner: Mapped[str] = mapped_column(String(100), default="local", index=True)
    turns: Mapped[list[Turn]] = relationship(back_populates="conversation", order_by="Turn.pk")


class Turn(Base):
    __tablename__ = "turns"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reply_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the node running an in-progress reply
    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    parts: Mapped[list[Part]] = relationship(order_by="Part.position", cascade="all, delete-orphan")


class Part(Base):
    __tablename__ = "parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    turn_pk: Mapped[int] = mapped_column(ForeignKey("turns.pk"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    attachment_sha256: Mapped[str | None] = mapped_column(ForeignKey("attachments.sha256"), nullable=True)


class Attachment(Base):
    __tablename__ = "attachments"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ImageFeatures(Base):
    __tablename__ = "image_features"

    sha256: Mapped[str] = mapped_column(ForeignKey("attachments.sha256"), primary_key=True)
    encoder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ImageDescription(Base):
    """What a modality said about an image, by the modality's cache key, so an image is described once."""

    __tablename__ = "image_descriptions"

    sha256: Mapped[str] = mapped_column(ForeignKey("attachments.sha256"), primary_key=True)
    describer: Mapped[str] = mapped_column(String(200), primary_key=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)  # None: it had nothing to say


# Hot-path statements, built once on the Core tables; values come in as bind parameters.
_turns = cast(Table, Turn.__table__)
_parts = cast(Table, Part.__table__)
_conversations = cast(Table, Conversation.__table__)
_INSERT_TURN = _turns.insert()
_INSERT_CONVERSATION = _conversations.insert()
_INSERT_PARTS = _parts.insert()
_TOUCH_CONVERSATION = _conversations.update().where(_conversations.c.id == bindparam("cid")).values(updated_at=bindparam("now"))
_END_REPLY_MANY = (
    _turns.update()
    .where((_turns.c.id == bindparam("tid")) & (_turns.c.status == "in_progress"))
    .values(status=bindparam("status"), error=bindparam("error"), usage=bindparam("usage"), finished_at=bindparam("now"))
)
_END_REPLY = _END_REPLY_MANY.returning(_turns.c.pk, _turns.c.conversation_id)
_TURN_COLUMNS = ("id", "conversation_id", "role", "status", "reply_to", "created_at", "finished_at", "error", "usage", "node")
_PART_COLUMNS = ("turn_pk", "position", "kind", "text", "attachment_sha256")
_PART_TURN_BY_ID = (("turn_pk", _turns.c.pk, _turns.c.id),)
"""For `insert_rows`: a part row's turn_pk given as its turn's id (no RETURNING needed for the turns' pks)."""


def _touch_conversations(count: int) -> Any:
    """Mark `count` conversations (binds in0...) updated `now`."""
    return _conversations.update().where(_conversations.c.id.in_(in_binds(_conversations.c.id, count))).values(updated_at=bindparam("now"))


def _replies_in_progress(count: int) -> Any:
    """The pk and conversation of those of `count` replies (binds in0...) that are in progress."""
    return select(_turns.c.id, _turns.c.pk, _turns.c.conversation_id).where(
        _turns.c.id.in_(in_binds(_turns.c.id, count)) & (_turns.c.status == "in_progress")
    )


_TOUCH_AND_RAISE_SEQ = (
    _conversations.update()
    .where(_conversations.c.id == bindparam("cid"))
    .values(
        updated_at=bindparam("now"),
        last_seq=case((_conversations.c.last_seq < bindparam("seq"), bindparam("seq")), else_=_conversations.c.last_seq),
    )
)
_HISTORY_ALL = select(_turns).where(_turns.c.conversation_id == bindparam("cid")).order_by(_turns.c.pk.desc())
_HISTORY = _HISTORY_ALL.limit(bindparam("limit"))
_attachments = cast(Table, Attachment.__table__)
_HISTORY_PARTS = (
    select(_parts.c.turn_pk, _parts.c.kind, _parts.c.text, _parts.c.attachment_sha256, _attachments.c.mime)
    .select_from(_parts.outerjoin(_attachments, _parts.c.attachment_sha256 == _attachments.c.sha256))
    .where(_parts.c.turn_pk.in_(bindparam("pks", expanding=True)))
    .order_by(_parts.c.turn_pk, _parts.c.position)
)
_ATTACHMENT_EXISTS = select(_attachments.c.sha256).where(_attachments.c.sha256 == bindparam("sha"))
_ATTACHMENT = select(_attachments.c.mime, _attachments.c.data).where(_attachments.c.sha256 == bindparam("sha"))


_features = cast(Table, ImageFeatures.__table__)
_FEATURES = select(_features.c.sha256, _features.c.vector).where(
    _features.c.sha256.in_(bindparam("shas", expanding=True)) & (_features.c.encoder_id == bindparam("enc"))
)
_descriptions = cast(Table, ImageDescription.__table__)
_DESCRIPTIONS = select(_descriptions.c.sha256, _descriptions.c.describer, _descriptions.c.text).where(
    _descriptions.c.sha256.in_(bindparam("shas", expanding=True)) & _descriptions.c.describer.in_(bindparam("keys", expanding=True))
)
_CONVERSATION_IMAGES = (
    select(_turns.c.id.label("turn_id"), _turns.c.role, _parts.c.attachment_sha256.label("sha256"), _attachments.c.mime)
    .select_from(_parts.join(_turns, _parts.c.turn_pk == _turns.c.pk).join(_attachments, _parts.c.attachment_sha256 == _attachments.c.sha256))
    .where((_turns.c.conversation_id == bindparam("cid")) & (_parts.c.kind == "image"))
    .order_by(_turns.c.pk, _parts.c.position)
)


def _insert_skipping_existing(table: Table, dialect: str) -> Any:
    """An INSERT of content-addressed rows (attachments by sha256, cached features and descriptions) that skips a row
    another process stored first (ON CONFLICT DO NOTHING on PostgreSQL and SQLite; a plain INSERT elsewhere)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert()


def _utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC ones, PostgreSQL the session's zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record(turn: Any, parts: list[PartRecord]) -> TurnRecord:
    created = _utc(turn.created_at)
    finished = _utc(turn.finished_at) if turn.finished_at else None
    return TurnRecord(
        id=turn.id,
        role=turn.role,
        status=turn.status,
        created_at=created,
        finished_at=finished,
        error=turn.error,
        usage=turn.usage,
        reply_to=turn.reply_to,
        parts=parts,
    )


def _part_rows(turn_pk: int | str, parts: Sequence[PartRecord], start: int = 0) -> list[dict[str, Any]]:
    """Rows of the parts table for `parts` of one turn, numbered from `start` (`turn_pk`: the turn's id, for
    `insert_rows` with `_PART_TURN_BY_ID`)."""
    return [
        {"turn_pk": turn_pk, "position": start + i, "kind": p.kind, "text": p.text, "attachment_sha256": p.attachment_sha256}
        for i, p in enumerate(parts)
    ]


def _reply_parts(parts: Sequence[PartRecord], text: str) -> list[PartRecord]:
    """What a reply's end adds to it: its tool parts (text only), then its text if it said anything."""
    return [PartRecord(p.kind, p.text) for p in parts] + ([PartRecord("text", text)] if text else [])


@functools.cache
def _parameters(method: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A method's parameter names after self, and their defaults."""
    parameters = list(signature(method).parameters.values())[1:]
    return tuple(p.name for p in parameters), {p.name: p.default for p in parameters if p.default is not Parameter.empty}


def inspect_call(call: functools.partial[Any], method: Callable[..., Any]) -> dict[str, Any]:
    """The arguments of a `functools.partial` of `method` (bound), by name, defaults filled in."""
    names, defaults = _parameters(method)
    return {**defaults, **dict(zip(names, call.args, strict=False)), **call.keywords}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def open_engine(url: str) -> SqlEngine:
    """A SQLAlchemy engine; for SQLite: parent folder created, WAL and foreign keys on; for a server database
    (PostgreSQL): a small pool (the store thread writes, a few threads read) whose connections are checked
    before use, so a database restart costs no request."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    options: dict[str, Any] = {}
    if not is_sqlite:
        options.update(pool_size=4, max_overflow=4, pool_timeout=30, pool_pre_ping=True)
    if is_sqlite:
        options["connect_args"] = {"check_same_thread": False}
        if parsed.query.get("uri") == "true":  # a URI filename (file:...?mode=...): SQLite opens exactly what it names
            if parsed.database and parsed.database.startswith("file:") and "mode=memory" not in url:
                path = Path(parsed.database[len("file:"):].partition("?")[0])
                if not path.exists() and parsed.query.get("mode") in ("ro", "rw"):
                    raise FileNotFoundError(f"{url}: no database at {path} (mode={parsed.query['mode']} does not create one)")
        elif parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options["poolclass"] = StaticPool  # one in-memory database shared by every thread
    engine = create_engine(url, json_serializer=json.dumps, **options)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """Synchronous store. Every method is one transaction, or one part of the batch `run_batch` is running."""

    def __init__(self, url: str, node_id: str | None = None, upgrade: bool = True, recent_conversations: int = 256) -> None:
        """Open the database at `url`: an empty one gets the schema; an older schema is upgraded when `upgrade`,
        else SchemaError; a newer one (an unknown revision) is always SchemaError. `node_id` is written on the
        replies this process starts (`turns.node`). The recent turns of up to `recent_conversations`
        conversations are kept in memory (0: every context is read from the database, as a store that other
        processes also write must)."""
        self.engine = open_engine(url)
        self.node_id = node_id
        dialect = self.engine.dialect.name
        self._insert_attachment = _insert_skipping_existing(_attachments, dialect)
        self._insert_features = _insert_skipping_existing(_features, dialect)
        self._insert_descriptions = _insert_skipping_existing(_descriptions, dialect)
        try:
            prepare(self.engine, upgrade=upgrade)
        except BaseException:
            self.engine.dispose()
            raise
        self._batch = threading.local()  # .conn: the open transaction of the batch this thread is running
        self.batches_retried = 0  # batches rolled back and run again call by call (a call in them failed)
        self.recent = RecentTurns(recent_conversations)
        # The group commit's statements, compiled once (see assistant.compiled_sql).
        sql_dialect = self.engine.dialect
        self._end_replies_sql = CompiledStatement(_END_REPLY_MANY, sql_dialect)
        self._touch_and_raise_seq_sql = CompiledStatement(_TOUCH_AND_RAISE_SEQ, sql_dialect)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A connection in a transaction: the running batch's, else a new one committed when the block ends."""
        conn = getattr(self._batch, "conn", None)
        if conn is not None:
            yield conn
            return
        try:
            with self.engine.begin() as conn:
                yield conn
        except BaseException:
            self.recent.clear()  # rolled back: what it held may include writes that never happened
            raise

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection to read with: the running batch's (it sees the batch's writes), else a new one."""
        conn = getattr(self._batch, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            yield conn

    def run_batch(self, calls: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run store calls (each calling methods of this store) in one transaction: one commit for all of them.

        Returns (True, result) or (False, exception) per call, in order, once committed. If any call
        raises, or the commit fails, the transaction is rolled back and each call runs again alone,
        so a bad call fails by itself and the others still commit (a lone call that is not a grouped
        `begin_turn` or `finish_reply` has run alone already: its failure is its outcome)."""
        if not calls:
            return []
        try:
            with self.engine.begin() as conn:
                self._batch.conn = conn
                try:
                    results = self._run_grouped(calls)
                finally:
                    self._batch.conn = None
            return [(True, result) for result in results]
        except Exception as exc:
            self.recent.clear()  # rolled back: what it held may include writes that never happened
            if len(calls) == 1 and self._many_of(calls[0]) is None:
                return [(False, exc)]  # it failed alone already
            self.batches_retried += 1
        outcomes: list[tuple[bool, Any]] = []
        for call in calls:
            try:
                outcomes.append((True, call()))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def _run_grouped(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run a batch's calls in order, each run of consecutive `begin_turn` or `finish_reply` calls (a run of
        one too) as one statement per table instead of one set of statements per call."""
        results: list[Any] = []
        index = 0
        while index < len(calls):
            many = self._many_of(calls[index])
            end = index + 1
            while many is not None and end < len(calls) and self._many_of(calls[end]) == many:
                end += 1
            if many is None:
                results.append(calls[index]())
            else:
                results += many([cast(functools.partial[Any], call) for call in calls[index:end]])
            index = end
        return results

    def _many_of(self, call: Callable[[], Any]) -> Callable[[list[functools.partial[Any]]], list[Any]] | None:
        """The grouped form of a call of this store's `begin_turn` or `finish_reply` (not a replacement a test made), else None."""
        method = getattr(call, "func", None)
        if getattr(method, "__self__", None) is not self:
            return None
        function = getattr(method, "__func__", None)
        if function is Store.begin_turn and self.recent.capacity > 0:  # contexts come from memory (see _begin_turns)
            return self._begin_turns
        if function is Store.finish_reply:
            return self._finish_replies
        return None

    def _begin_turns(self, calls: list[functools.partial[Any]]) -> list[TurnStart]:
        """`begin_turn` for several turns (in order) with one insert per table: same rows, same results."""
        items = [inspect_call(call, Store.begin_turn) for call in calls]
        for item in items:  # each conversation's recent turns held in memory first (a read on a miss), as they were before
            keep = max(item["history_limit"], 1)
            self.history(item["conversation_id"], limit=keep + 1)
        now = _now()
        ids = [(new_id(), new_id()) for _ in items]
        rows = []
        for item, (user_id, reply_id) in zip(items, ids, strict=True):
            cid = item["conversation_id"]
            rows.append(self._turn_row(user_id, cid, "user", "completed", None, now))
            rows.append(self._turn_row(reply_id, cid, "assistant", "in_progress", user_id, now))
        with self._writing() as conn:
            insert_rows(conn, _turns, _TURN_COLUMNS, rows)
            insert_rows(conn, _parts, _PART_COLUMNS, [  # each part's turn_pk looked up by its turn's id in the INSERT
                row for item, (user_id, _) in zip(items, ids, strict=True) for row in _part_rows(user_id, item["parts"])
            ], lookups=_PART_TURN_BY_ID)
            execute_in(conn, _touch_conversations, list(dict.fromkeys(i["conversation_id"] for i in items)), {"now": now})
        started = []
        for item, (user_id, reply_id) in zip(items, ids, strict=True):
            cid = item["conversation_id"]
            self._remember(cid, user_id, "user", "completed", None, item["parts"], now)
            self._remember(cid, reply_id, "assistant", "in_progress", user_id, [], now)
            started.append(TurnStart(user_id, reply_id, self._context(cid, reply_id, item["history_limit"])))
        return started

    def _finish_replies(self, calls: list[functools.partial[Any]]) -> list[str | None]:
        """`finish_reply` for several replies with one statement per table; raises (so each runs alone) if any
        of them is not a reply in progress."""
        items = [inspect_call(call, Store.finish_reply) for call in calls]
        if any(item["status"] not in REPLY_STATUSES or item["status"] == "in_progress" for item in items) or any(
            item["image"] is not None for item in items
        ):
            raise LookupError("not a plain batch of replies: each is finished alone")
        ids = [item["turn_id"] for item in items]
        now = _now()
        with self._writing() as conn:
            found = {reply_id: (pk, cid) for reply_id, pk, cid in execute_in(conn, _replies_in_progress, ids)}
            if len(found) != len(items) or len(set(ids)) != len(ids):
                raise LookupError("a reply of the batch is not in progress: each is finished alone")
            ended = self._end_replies_sql.executemany(conn, [
                {"tid": item["turn_id"], "status": item["status"], "error": item["error"], "usage": item["usage"], "now": now} for item in items
            ])
            if ended != len(items):
                raise LookupError("a reply of the batch was finished meanwhile: each is finished alone")
            added: list[list[PartRecord]] = []
            rows = []
            for item in items:
                parts = _reply_parts(item["parts"], item["text"])
                added.append(parts)
                rows += _part_rows(found[item["turn_id"]][0], parts)
            insert_rows(conn, _parts, _PART_COLUMNS, rows)
            self._touch_and_raise_seq_sql.executemany(conn, [
                {"cid": found[item["turn_id"]][1], "now": now, "seq": item["last_seq"] or 0} for item in items
            ])
        for item, parts in zip(items, added, strict=True):
            self.recent.update(
                found[item["turn_id"]][1], item["turn_id"], status=item["status"], error=item["error"], usage=item["usage"],
                finished_at=now, added_parts=parts,
            )
        return [None] * len(items)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def check_writable(self) -> None:
        """Raise (the driver's error) unless the database takes writes now: a write statement that changes no row."""
        with self._writing() as conn:
            conn.execute(_conversations.update().where(_conversations.c.id.is_(None)).values(updated_at=_conversations.c.updated_at))

    def mark_interrupted(self, node: str | None = None) -> int:
        """Mark replies left in progress (by a crash) as interrupted; returns how many. With `node` (one node of a
        cluster starting), only that node's and those of no node: the other nodes' replies may still be running."""
        query = update(Turn).where(Turn.status == "in_progress")
        if node is not None:
            query = query.where((Turn.node == node) | Turn.node.is_(None))
        with self._writing() as conn:
            result = conn.execute(query.values(status="interrupted", finished_at=_now(), error="the server stopped while this reply was in progress"))
        self.recent.clear()
        return cast(CursorResult[Any], result).rowcount or 0

    def in_progress_nodes(self) -> list[str]:
        """The nodes that have replies in progress."""
        with self._reading() as conn:
            return list(conn.scalars(select(_turns.c.node).where((_turns.c.status == "in_progress") & _turns.c.node.is_not(None)).distinct()))

    def interrupt_nodes(self, nodes: Sequence[str]) -> list[tuple[str, str]]:
        """Mark the replies in progress of `nodes` (gone) as interrupted, in one statement: of several nodes doing this
        at once, each reply is marked, and returned, by one. Returns (reply id, conversation id) of those marked here."""
        if not nodes:
            return []
        with self._writing() as conn:
            rows = conn.execute(
                _turns.update()
                .where((_turns.c.status == "in_progress") & _turns.c.node.in_(list(nodes)))
                .values(status="interrupted", finished_at=_now(), error="the node serving this reply stopped")
                .returning(_turns.c.id, _turns.c.conversation_id)
            ).all()
        for row in rows:
            self.recent.drop(row.conversation_id)
        return [(row.id, row.conversation_id) for row in rows]

    def create_conversation(self, owner: str = "local", conversation_id: str | None = None) -> str:
        """A new, empty conversation belonging to `owner` (with the id given, else a fresh one); returns its id."""
        conversation_id = conversation_id or new_id()
        now = _now()
        with self._writing() as conn:
            conn.execute(_INSERT_CONVERSATION, {
                "id": conversation_id, "owner": owner, "created_at": now, "updated_at": now, "last_seq": 0, "seq_reserved": 0,
            })
        self.recent.fill(conversation_id, [], None)  # a new conversation's history is known: empty
        return conversation_id

    def conversation_last_seq(self, conversation_id: str, owner: str | None = None) -> int | None:
        """The seq the conversation's numbering resumes after: its last event's, or its reserved seq if higher
        (after a crash, seqs up to it may have been sent); None if it does not exist (or belongs to another owner)."""
        query = select(Conversation.last_seq, Conversation.seq_reserved).where(Conversation.id == conversation_id)
        if owner is not None:
            query = query.where(Conversation.owner == owner)
        with self._reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else max(row.last_seq, row.seq_reserved or 0)

    def reserve_seqs(self, conversation_id: str, until: int) -> None:
        """Durably reserve the conversation's seqs up to `until` (never lowers the reservation)."""
        with self._writing() as conn:
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.seq_reserved < until))
                .values(seq_reserved=until)
            )

    def settle_seqs(self, conversation_id: str, delivered: int, reserved: int) -> None:
        """A channel ended cleanly at `delivered`: record it, and give back the reservation up to `reserved`
        unless another channel has raised it since (so numbering goes on without a gap). The conversation is no
        longer live: its recent turns leave memory (a client that resumes it has them read again)."""
        self.recent.drop(conversation_id)
        with self._writing() as conn:
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.last_seq < delivered))
                .values(last_seq=delivered)
            )
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.seq_reserved == reserved))
                .values(seq_reserved=delivered)
            )

    def owns_attachment(self, owner: str, sha256: str) -> bool:
        """True when one of `owner`'s conversations holds this attachment."""
        query = (
            select(_parts.c.id)
            .select_from(_parts.join(_turns, _parts.c.turn_pk == _turns.c.pk).join(_conversations, _turns.c.conversation_id == _conversations.c.id))
            .where((_parts.c.attachment_sha256 == sha256) & (_conversations.c.owner == owner))
            .limit(1)
        )
        with self._reading() as conn:
            return conn.execute(query).first() is not None

    def add_user_turn(
        self, conversation_id: str, parts: list[PartRecord], attachments: Sequence[tuple[str, bytes]] = (), turn_id: str | None = None
    ) -> str:
        """Commit a user turn with its parts and attachments ((mime, bytes), stored once by sha256).

        `turn_id` stores it under an id chosen in advance (streamed speech names it in partial transcripts).
        """
        with self._writing() as conn:
            for mime, data in attachments:
                self._put_attachment(conn, mime, data)
            return self._insert_turn(conn, conversation_id, "user", "completed", parts, turn_id=turn_id)

    def add_parts(self, turn_id: str, parts: list[PartRecord]) -> None:
        """Append parts to a stored turn (a transcript to its audio turn)."""
        with self._writing() as conn:
            pk, conversation_id = conn.execute(select(_turns.c.pk, _turns.c.conversation_id).where(_turns.c.id == turn_id)).one()
            self.recent.drop(conversation_id)
            start = conn.execute(select(func.count()).where(_parts.c.turn_pk == pk)).scalar_one()
            conn.execute(_INSERT_PARTS, _part_rows(pk, parts, start))

    def set_heard(self, turn_id: str, heard: str) -> None:
        """Record what of a spoken reply the user heard before it was cut: one `heard` part, replacing any earlier one."""
        with self._writing() as conn:
            pk, conversation_id = conn.execute(select(_turns.c.pk, _turns.c.conversation_id).where(_turns.c.id == turn_id)).one()
            self.recent.drop(conversation_id)
            conn.execute(_parts.delete().where((_parts.c.turn_pk == pk) & (_parts.c.kind == "heard")))
            position = conn.execute(select(func.coalesce(func.max(_parts.c.position), -1)).where(_parts.c.turn_pk == pk)).scalar_one()
            conn.execute(_INSERT_PARTS, _part_rows(pk, [PartRecord("heard", heard)], position + 1))

    def begin_reply(self, conversation_id: str, user_turn_id: str, history_limit: int) -> TurnStart:
        """Commit a reply placeholder (in_progress) to a stored user turn, then read the context."""
        with self._writing() as conn:
            reply_id = self._insert_turn(conn, conversation_id, "assistant", "in_progress", [], reply_to=user_turn_id)
        return TurnStart(user_turn_id, reply_id, self._context(conversation_id, reply_id, history_limit))

    def _context(self, conversation_id: str, reply_id: str, history_limit: int) -> list[TurnRecord]:
        keep = max(history_limit, 1)
        return [t for t in self.history(conversation_id, limit=keep + 1) if t.id != reply_id][-keep:]

    def begin_turn(self, conversation_id: str, parts: list[PartRecord], history_limit: int) -> TurnStart:
        """Commit the user turn and its reply placeholder (in_progress) together, then read the context.

        One transaction and one trip to the store thread per turn: the user turn is durable before
        the engine sees anything. `history` holds the last `history_limit` turns (at least the new
        user turn, which comes last) and never the placeholder.
        """
        with self._writing() as conn:
            user_id = self._insert_turn(conn, conversation_id, "user", "completed", parts, touch=False)
            reply_id = self._insert_turn(conn, conversation_id, "assistant", "in_progress", [], reply_to=user_id)
        return TurnStart(user_id, reply_id, self._context(conversation_id, reply_id, history_limit))

    def _insert_turn(
        self, conn: Any, conversation_id: str, role: str, status: str, parts: list[PartRecord],
        reply_to: str | None = None, touch: bool = True, turn_id: str | None = None,
    ) -> str:
        now = _now()
        turn_id = turn_id or new_id()
        pk = conn.execute(_INSERT_TURN, self._turn_row(turn_id, conversation_id, role, status, reply_to, now)).inserted_primary_key[0]
        if parts:
            conn.execute(_INSERT_PARTS, _part_rows(pk, parts))
        if touch:
            conn.execute(_TOUCH_CONVERSATION, {"cid": conversation_id, "now": now})
        self._remember(conversation_id, turn_id, role, status, reply_to, parts, now)
        return turn_id

    def _turn_row(self, turn_id: str, conversation_id: str, role: str, status: str, reply_to: str | None, now: datetime) -> dict[str, Any]:
        """A new turn's row: an in-progress one carries this node."""
        in_progress = status == "in_progress"
        return {
            "id": turn_id, "conversation_id": conversation_id, "role": role, "status": status, "reply_to": reply_to,
            "created_at": now, "finished_at": None if in_progress else now, "error": None, "usage": None,
            "node": self.node_id if in_progress else None,
        }

    def _remember(
        self, conversation_id: str, turn_id: str, role: str, status: str, reply_to: str | None, parts: Sequence[PartRecord], now: datetime,
    ) -> None:
        """Add a new turn to the conversation's recent turns in memory, as the database would read it back."""
        if any(p.attachment_sha256 and not p.mime for p in parts):
            self.recent.drop(conversation_id)  # an attachment's mime is the attachments table's: read it back next time
        else:
            self.recent.append(conversation_id, TurnRecord(
                turn_id, role, status, now, None if status == "in_progress" else now, None, None, reply_to, list(parts),
            ))

    def finish_reply(
        self,
        turn_id: str,
        *,
        text: str,
        status: str,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        last_seq: int | None = None,
        image: tuple[str, bytes] | None = None,
        parts: Sequence[PartRecord] = (),
    ) -> str | None:
        """Commit an in-progress reply's final status and text (partial text too, when cancelled or failed).

        `parts` (text-only: the tool calls and results of the reply) are stored before its text.
        `image` is (mime, bytes) of a generated image: stored once as an attachment by sha256 and
        added as an `image` part; its sha256 is returned. A reply is finished once: finishing it
        again (or an unknown id) raises LookupError.
        """
        if status not in REPLY_STATUSES or status == "in_progress":
            raise ValueError(f"not a final reply status: {status!r}")
        now = _now()
        with self._writing() as conn:
            row = conn.execute(
                _END_REPLY, {"tid": turn_id, "status": status, "error": error, "usage": usage, "now": now}
            ).one_or_none()
            if row is None:
                raise LookupError(f"no reply {turn_id!r} in progress")
            added = _reply_parts(parts, text)
            sha256 = None
            if image is not None:
                sha256 = self._put_attachment(conn, *image)
                added.append(PartRecord("image", attachment_sha256=sha256, mime=image[0]))
            if added:
                conn.execute(_INSERT_PARTS, _part_rows(row.pk, added))
            conn.execute(_TOUCH_AND_RAISE_SEQ, {"cid": row.conversation_id, "now": now, "seq": last_seq or 0})
            self.recent.update(row.conversation_id, turn_id, status=status, error=error, usage=usage, finished_at=now, added_parts=added)
        return sha256

    def _put_attachment(self, conn: Any, mime: str, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if conn.execute(_ATTACHMENT_EXISTS, {"sha": sha256}).first() is None:
            conn.execute(self._insert_attachment, {"sha256": sha256, "mime": mime, "size": len(data), "data": data, "created_at": _now()})
        return sha256

    def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        """(mime, bytes) of a stored attachment, or None."""
        with self._reading() as conn:
            row = conn.execute(_ATTACHMENT, {"sha": sha256}).first()
        return None if row is None else (row.mime, row.data)

    def raise_last_seq(self, conversation_id: str, seq: int) -> None:
        """Record that the conversation's events reached `seq` (never lowers the stored value)."""
        with self._writing() as conn:
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.last_seq < seq))
                .values(last_seq=seq)
            )

    def image_features(self, sha256s: list[str], encoder_id: str) -> dict[str, bytes]:
        """Stored feature vectors (float32 bytes) of these images for `encoder_id`, by sha256; missing ones left out."""
        if not sha256s:
            return {}
        with self._reading() as conn:
            rows = conn.execute(_FEATURES, {"shas": list(set(sha256s)), "enc": encoder_id})
            return {row.sha256: row.vector for row in rows}

    def put_image_features(self, encoder_id: str, vectors: dict[str, bytes], dim: int) -> None:
        """Store feature vectors (float32 bytes of `dim` floats) by sha256 for `encoder_id`; existing ones are kept."""
        with self._writing() as conn:
            have = {row.sha256 for row in conn.execute(_FEATURES, {"shas": list(vectors), "enc": encoder_id})}
            rows = [{"sha256": sha, "encoder_id": encoder_id, "dim": dim, "vector": vector} for sha, vector in vectors.items() if sha not in have]
            if rows:
                conn.execute(self._insert_features, rows)

    def image_descriptions(self, sha256s: list[str], describers: list[str]) -> dict[tuple[str, str], str | None]:
        """Stored descriptions by (sha256, describer) for these images and describers; missing ones left out."""
        if not sha256s or not describers:
            return {}
        with self._reading() as conn:
            rows = conn.execute(_DESCRIPTIONS, {"shas": list(set(sha256s)), "keys": list(set(describers))})
            return {(row.sha256, row.describer): row.text for row in rows}

    def put_image_descriptions(self, descriptions: dict[tuple[str, str], str | None]) -> None:
        """Store descriptions by (sha256, describer); existing ones are kept."""
        if not descriptions:
            return
        with self._writing() as conn:
            shas, keys = [sha for sha, _ in descriptions], [key for _, key in descriptions]
            have = {(row.sha256, row.describer) for row in conn.execute(_DESCRIPTIONS, {"shas": list(set(shas)), "keys": list(set(keys))})}
            rows = [{"sha256": sha, "describer": key, "text": text} for (sha, key), text in descriptions.items() if (sha, key) not in have]
            if rows:
                conn.execute(self._insert_descriptions, rows)

    def conversation_images(self, conversation_id: str) -> list[ImageRef]:
        """Every image part of the conversation (sent or generated), oldest first."""
        with self._reading() as conn:
            rows = conn.execute(_CONVERSATION_IMAGES, {"cid": conversation_id}).all()
        return [ImageRef(row.turn_id, row.role, row.sha256, row.mime) for row in rows]

    def begin_image_job(self, conversation_id: str, prompt: str | None, reply_to: str | None) -> tuple[str | None, str]:
        """Commit an image job's assistant turn (in_progress), after a user turn holding `prompt` if given.

        Returns (user turn id or None, job turn id). A job claimed from a text turn passes that
        turn as `reply_to` and no prompt; an `image.generate` event passes its prompt, stored as an
        `image_request` part (kept out of the dialogue context).
        """
        with self._writing() as conn:
            user_id = None
            if prompt is not None:
                user_id = self._insert_turn(conn, conversation_id, "user", "completed", [PartRecord("image_request", prompt)], touch=False)
                reply_to = user_id
            job_id = self._insert_turn(conn, conversation_id, "assistant", "in_progress", [], reply_to=reply_to)
        return user_id, job_id

    def add_generated_images(self, owner: str, prompt: str, images: Sequence[tuple[str, bytes]]) -> tuple[str, list[str]]:
        """Store images made outside any conversation (a stateless HTTP request) in one transaction: a new
        conversation of `owner` holding the prompt (an `image_request` user turn) and one completed assistant
        turn per image ((mime, bytes), stored once by sha256). Returns the conversation id and the sha256s."""
        now = _now()
        conversation_id = new_id()
        with self._writing() as conn:
            conn.execute(_conversations.insert().values(id=conversation_id, owner=owner, created_at=now, updated_at=now, last_seq=0, seq_reserved=0))
            user_id = self._insert_turn(conn, conversation_id, "user", "completed", [PartRecord("image_request", prompt)], touch=False)
            shas = []
            for mime, data in images:
                shas.append(self._put_attachment(conn, mime, data))
                self._insert_turn(conn, conversation_id, "assistant", "completed", [PartRecord("image", attachment_sha256=shas[-1])], reply_to=user_id)
        return conversation_id, shas

    def history_page(self, conversation_id: str, before: str | None, limit: int, max_chars: int) -> tuple[list[TurnRecord], bool] | None:
        """Up to `limit` turns older than turn `before` (None: the newest), oldest first, cut (keeping at least one)
        where their text passes `max_chars`; and whether older turns remain. None when `before` is not a turn of it."""
        with self._reading() as conn:
            query = select(_turns).where(_turns.c.conversation_id == conversation_id)
            if before is not None:
                pk = conn.execute(
                    select(_turns.c.pk).where((_turns.c.id == before) & (_turns.c.conversation_id == conversation_id))
                ).scalar_one_or_none()
                if pk is None:
                    return None
                query = query.where(_turns.c.pk < pk)
            rows = conn.execute(query.order_by(_turns.c.pk.desc()).limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            sizes = dict(conn.execute(
                select(_parts.c.turn_pk, func.sum(func.coalesce(func.length(_parts.c.text), 0)))
                .where(_parts.c.turn_pk.in_([r.pk for r in rows])).group_by(_parts.c.turn_pk)
            ).all()) if rows else {}
            kept: list[Any] = []
            chars = 0
            for row in rows:  # newest first
                chars += sizes.get(row.pk, 0) or 0
                if kept and chars > max_chars:
                    more = True
                    break
                kept.append(row)
            kept.reverse()
            parts: dict[int, list[PartRecord]] = {t.pk: [] for t in kept}
            if kept:
                for part in conn.execute(_HISTORY_PARTS, {"pks": list(parts)}):
                    parts[part.turn_pk].append(PartRecord(part.kind, part.text, part.attachment_sha256, part.mime))
        return [_record(t, parts[t.pk]) for t in kept], more

    def history(self, conversation_id: str, limit: int | None = None) -> list[TurnRecord]:
        """The conversation's turns in order, oldest first; the last `limit` when given (from memory when held there)."""
        if limit is not None:
            held = self.recent.get(conversation_id, limit)
            if held is not None:
                return held
        turns = self._read_history(conversation_id, limit)
        self.recent.fill(conversation_id, turns, limit)
        return turns

    def _read_history(self, conversation_id: str, limit: int | None) -> list[TurnRecord]:
        with self._reading() as conn:
            query, params = (_HISTORY_ALL, {"cid": conversation_id}) if limit is None else (_HISTORY, {"cid": conversation_id, "limit": limit})
            turns = list(reversed(conn.execute(query, params).all()))
            parts: dict[int, list[PartRecord]] = {t.pk: [] for t in turns}
            if turns:
                for row in conn.execute(_HISTORY_PARTS, {"pks": list(parts)}):
                    parts[row.turn_pk].append(PartRecord(row.kind, row.text, row.attachment_sha256, row.mime))
        return [_record(t, parts[t.pk]) for t in turns]


class AsyncStore:
    """The store for async code: one `async def` per `Store` method, each run on the store's writer thread.

    Calls that arrive together are written in one transaction (group commit, `assistant.group_commit`):
    each is answered once that transaction is committed. Each method looks up `self.store.<method>`
    when called (tests may replace one) and has the `Store` method's signature and return type; see
    the `Store` method for what it does.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer = GroupCommitter(store.run_batch)

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `method(*args, **kwargs)` on the store thread, alone (not in a batch), and await its result."""
        return await self.writer.submit(functools.partial(method, *args, **kwargs), batch=False)

    async def _batched(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a `Store` method on the store thread in the next group commit, and await its result."""
        return await self.writer.submit(functools.partial(method, *args, **kwargs))

    async def check_writable(self) -> None:
        """`Store.check_writable` on the store thread."""
        await self._batched(self.store.check_writable)

    async def writable(self) -> bool:
        """Whether the database takes writes now (`check_writable`, its error logged)."""
        try:
            await self.check_writable()
        except Exception as exc:
            log.error("the database does not take writes: %s", exc)
            return False
        return True

    async def mark_interrupted(self, node: str | None = None) -> int:
        """`Store.mark_interrupted` on the store thread."""
        return await self._batched(self.store.mark_interrupted, node)

    async def in_progress_nodes(self) -> list[str]:
        """`Store.in_progress_nodes` on the store thread."""
        return await self._batched(self.store.in_progress_nodes)

    async def interrupt_nodes(self, nodes: Sequence[str]) -> list[tuple[str, str]]:
        """`Store.interrupt_nodes` on the store thread."""
        return await self._batched(self.store.interrupt_nodes, nodes)

    async def create_conversation(self, owner: str = "local", conversation_id: str | None = None) -> str:
        """`Store.create_conversation` on the store thread."""
        return await self._batched(self.store.create_conversation, owner, conversation_id)

    async def conversation_last_seq(self, conversation_id: str, owner: str | None = None) -> int | None:
        """`Store.conversation_last_seq` on the store thread."""
        return await self._batched(self.store.conversation_last_seq, conversation_id, owner)

    async def owns_attachment(self, owner: str, sha256: str) -> bool:
        """`Store.owns_attachment` on the store thread."""
        return await self._batched(self.store.owns_attachment, owner, sha256)

    async def add_user_turn(
        self, conversation_id: str, parts: list[PartRecord], attachments: Sequence[tuple[str, bytes]] = (), turn_id: str | None = None
    ) -> str:
        """`Store.add_user_turn` on the store thread."""
        return await self._batched(self.store.add_user_turn, conversation_id, parts, attachments, turn_id)

    async def add_parts(self, turn_id: str, parts: list[PartRecord]) -> None:
        """`Store.add_parts` on the store thread."""
        await self._batched(self.store.add_parts, turn_id, parts)

    async def begin_reply(self, conversation_id: str, user_turn_id: str, history_limit: int) -> TurnStart:
        """`Store.begin_reply` on the store thread."""
        return await self._batched(self.store.begin_reply, conversation_id, user_turn_id, history_limit)

    async def begin_turn(self, conversation_id: str, parts: list[PartRecord], history_limit: int) -> TurnStart:
        """`Store.begin_turn` on the store thread."""
        return await self._batched(self.store.begin_turn, conversation_id, parts, history_limit)

    async def finish_reply(
        self,
        turn_id: str,
        *,
        text: str,
        status: str,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        last_seq: int | None = None,
        image: tuple[str, bytes] | None = None,
        parts: Sequence[PartRecord] = (),
    ) -> str | None:
        """`Store.finish_reply` on the store thread."""
        return await self._batched(
            self.store.finish_reply, turn_id, text=text, status=status, error=error, usage=usage, last_seq=last_seq, image=image,
            parts=parts,
        )

    async def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        """`Store.attachment` on the store thread."""
        return await self._batched(self.store.attachment, sha256)

    async def raise_last_seq(self, conversation_id: str, seq: int) -> None:
        """`Store.raise_last_seq` on the store thread."""
        await self._batched(self.store.raise_last_seq, conversation_id, seq)

    async def reserve_seqs(self, conversation_id: str, until: int) -> None:
        """`Store.reserve_seqs` on the store thread."""
        await self._batched(self.store.reserve_seqs, conversation_id, until)

    async def settle_seqs(self, conversation_id: str, delivered: int, reserved: int) -> None:
        """`Store.settle_seqs` on the store thread."""
        await self._batched(self.store.settle_seqs, conversation_id, delivered, reserved)

    async def image_features(self, sha256s: list[str], encoder_id: str) -> dict[str, bytes]:
        """`Store.image_features` on the store thread."""
        return await self._batched(self.store.image_features, sha256s, encoder_id)

    async def put_image_features(self, encoder_id: str, vectors: dict[str, bytes], dim: int) -> None:
        """`Store.put_image_features` on the store thread."""
        await self._batched(self.store.put_image_features, encoder_id, vectors, dim)

    async def set_heard(self, turn_id: str, heard: str) -> None:
        """`Store.set_heard` on the store thread."""
        await self._batched(self.store.set_heard, turn_id, heard)

    async def image_descriptions(self, sha256s: list[str], describers: list[str]) -> dict[tuple[str, str], str | None]:
        """`Store.image_descriptions` on the store thread."""
        return await self._batched(self.store.image_descriptions, sha256s, describers)

    async def put_image_descriptions(self, descriptions: dict[tuple[str, str], str | None]) -> None:
        """`Store.put_image_descriptions` on the store thread."""
        await self._batched(self.store.put_image_descriptions, descriptions)

    async def conversation_images(self, conversation_id: str) -> list[ImageRef]:
        """`Store.conversation_images` on the store thread."""
        return await self._batched(self.store.conversation_images, conversation_id)

    async def begin_image_job(self, conversation_id: str, prompt: str | None, reply_to: str | None) -> tuple[str | None, str]:
        """`Store.begin_image_job` on the store thread."""
        return await self._batched(self.store.begin_image_job, conversation_id, prompt, reply_to)

    async def add_generated_images(self, owner: str, prompt: str, images: Sequence[tuple[str, bytes]]) -> tuple[str, list[str]]:
        """`Store.add_generated_images` on the store thread."""
        return await self._batched(self.store.add_generated_images, owner, prompt, images)

    async def history_page(self, conversation_id: str, before: str | None, limit: int, max_chars: int) -> tuple[list[TurnRecord], bool] | None:
        """`Store.history_page` on the store thread."""
        return await self._batched(self.store.history_page, conversation_id, before, limit, max_chars)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[TurnRecord]:
        """`Store.history` on the store thread."""
        return await self._batched(self.store.history, conversation_id, limit)

    def close(self) -> None:
        """Finish pending writes, then release the database (blocking: call it off the event loop)."""
        self.writer.close()
        self.store.close()
