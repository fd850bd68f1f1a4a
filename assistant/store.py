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

import asyncio
import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
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
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import StaticPool

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
_INSERT_PARTS = _parts.insert()
_TOUCH_CONVERSATION = _conversations.update().where(_conversations.c.id == bindparam("cid")).values(updated_at=bindparam("now"))
_END_REPLY = (
    _turns.update()
    .where((_turns.c.id == bindparam("tid")) & (_turns.c.status == "in_progress"))
    .values(status=bindparam("status"), error=bindparam("error"), usage=bindparam("usage"), finished_at=bindparam("now"))
    .returning(_turns.c.pk, _turns.c.conversation_id)
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


@dataclass(frozen=True)
class ImageRef:
    """An image part of a conversation: the turn it belongs to and its attachment."""

    turn_id: str
    role: str
    sha256: str
    mime: str


TOOL_PART_KINDS = ("tool_call", "tool_result")
"""Parts of an assistant turn that record a tool call and its result, as JSON text (see assistant.tool_loop)."""


@dataclass(frozen=True)
class PartRecord:
    """A stored part, detached from the database session."""

    kind: str
    text: str | None = None
    attachment_sha256: str | None = None
    mime: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The part as `conversation.history` sends it: attachments by sha256 and URL, not inline; a tool call or
        result (stored as JSON text) with its fields, as `tool.call` / `tool.result` carry them."""
        wire: dict[str, Any] = {"type": self.kind}
        if self.kind in TOOL_PART_KINDS and self.text:
            wire.update(json.loads(self.text))
        elif self.text is not None:
            wire["text"] = self.text
        if self.attachment_sha256:
            wire.update(sha256=self.attachment_sha256, mime=self.mime, url=f"/attachments/{self.attachment_sha256}")
        return wire


@dataclass(frozen=True)
class TurnStart:
    """What begin_turn committed and read: the new turn ids and the context history."""

    user_turn_id: str
    reply_id: str
    history: list[TurnRecord]


@dataclass(frozen=True)
class TurnRecord:
    """A stored turn with its parts, detached from the database session."""

    id: str
    role: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    usage: dict[str, Any] | None
    reply_to: str | None
    parts: list[PartRecord]

    @property
    def text(self) -> str:
        """What the turn says: its text and transcript parts, joined (image descriptions are not its words)."""
        return "\n".join(p.text for p in self.parts if p.kind in ("text", "transcript") and p.text)

    def to_wire(self) -> dict[str, Any]:
        """The turn as `conversation.history` sends it."""
        return {
            "turn_id": self.id,
            "role": self.role,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "error": self.error,
            "usage": self.usage,
            "reply_to": self.reply_to,
            "content": [p.to_wire() for p in self.parts],
        }


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
    """Synchronous store. Every method is one transaction."""

    def __init__(self, url: str, node_id: str | None = None, upgrade: bool = True) -> None:
        """Open the database at `url`: an empty one gets the schema; an older schema is upgraded when `upgrade`,
        else SchemaError; a newer one (an unknown revision) is always SchemaError. `node_id` is written on the
        replies this process starts (`turns.node`)."""
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

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def check_writable(self) -> None:
        """Raise (the driver's error) unless the database takes writes now: a write statement that changes no row."""
        with self.engine.begin() as conn:
            conn.execute(_conversations.update().where(_conversations.c.id.is_(None)).values(updated_at=_conversations.c.updated_at))

    def mark_interrupted(self, node: str | None = None) -> int:
        """Mark replies left in progress (by a crash) as interrupted; returns how many. With `node` (one node of a
        cluster starting), only that node's and those of no node: the other nodes' replies may still be running."""
        query = update(Turn).where(Turn.status == "in_progress")
        if node is not None:
            query = query.where((Turn.node == node) | Turn.node.is_(None))
        with Session(self.engine) as db, db.begin():
            result = db.execute(query.values(status="interrupted", finished_at=_now(), error="the server stopped while this reply was in progress"))
            return cast(CursorResult[Any], result).rowcount or 0

    def in_progress_nodes(self) -> list[str]:
        """The nodes that have replies in progress."""
        with Session(self.engine) as db:
            return list(db.scalars(select(Turn.node).where((Turn.status == "in_progress") & Turn.node.is_not(None)).distinct()))

    def interrupt_nodes(self, nodes: Sequence[str]) -> list[tuple[str, str]]:
        """Mark the replies in progress of `nodes` (gone) as interrupted, in one statement: of several nodes doing this
        at once, each reply is marked, and returned, by one. Returns (reply id, conversation id) of those marked here."""
        if not nodes:
            return []
        with self.engine.begin() as conn:
            rows = conn.execute(
                _turns.update()
                .where((_turns.c.status == "in_progress") & _turns.c.node.in_(list(nodes)))
                .values(status="interrupted", finished_at=_now(), error="the node serving this reply stopped")
                .returning(_turns.c.id, _turns.c.conversation_id)
            ).all()
        return [(row.id, row.conversation_id) for row in rows]

    def create_conversation(self, owner: str = "local", conversation_id: str | None = None) -> str:
        """A new, empty conversation belonging to `owner` (with the id given, else a fresh one); returns its id."""
        with Session(self.engine) as db, db.begin():
            conversation = Conversation(owner=owner) if conversation_id is None else Conversation(id=conversation_id, owner=owner)
            db.add(conversation)
            db.flush()
            return conversation.id

    def conversation_last_seq(self, conversation_id: str, owner: str | None = None) -> int | None:
        """The seq the conversation's numbering resumes after: its last event's, or its reserved seq if higher
        (after a crash, seqs up to it may have been sent); None if it does not exist (or belongs to another owner)."""
        query = select(Conversation.last_seq, Conversation.seq_reserved).where(Conversation.id == conversation_id)
        if owner is not None:
            query = query.where(Conversation.owner == owner)
        with Session(self.engine) as db:
            row = db.execute(query).first()
        return None if row is None else max(row.last_seq, row.seq_reserved or 0)

    def reserve_seqs(self, conversation_id: str, until: int) -> None:
        """Durably reserve the conversation's seqs up to `until` (never lowers the reservation)."""
        with self.engine.begin() as conn:
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.seq_reserved < until))
                .values(seq_reserved=until)
            )

    def settle_seqs(self, conversation_id: str, delivered: int, reserved: int) -> None:
        """A channel ended cleanly at `delivered`: record it, and give back the reservation up to `reserved`
        unless another channel has raised it since (so numbering goes on without a gap)."""
        with self.engine.begin() as conn:
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
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def add_user_turn(
        self, conversation_id: str, parts: list[PartRecord], attachments: Sequence[tuple[str, bytes]] = (), turn_id: str | None = None
    ) -> str:
        """Commit a user turn with its parts and attachments ((mime, bytes), stored once by sha256).

        `turn_id` stores it under an id chosen in advance (streamed speech names it in partial transcripts).
        """
        with self.engine.begin() as conn:
            for mime, data in attachments:
                self._put_attachment(conn, mime, data)
            return self._insert_turn(conn, conversation_id, "user", "completed", parts, turn_id=turn_id)

    def add_parts(self, turn_id: str, parts: list[PartRecord]) -> None:
        """Append parts to a stored turn (a transcript to its audio turn)."""
        with self.engine.begin() as conn:
            pk = conn.execute(select(_turns.c.pk).where(_turns.c.id == turn_id)).scalar_one()
            start = conn.execute(select(func.count()).where(_parts.c.turn_pk == pk)).scalar_one()
            conn.execute(_INSERT_PARTS, [
                {"turn_pk": pk, "position": start + i, "kind": p.kind, "text": p.text, "attachment_sha256": p.attachment_sha256}
                for i, p in enumerate(parts)
            ])

    def set_heard(self, turn_id: str, heard: str) -> None:
        """Record what of a spoken reply the user heard before it was cut: one `heard` part, replacing any earlier one."""
        with self.engine.begin() as conn:
            pk = conn.execute(select(_turns.c.pk).where(_turns.c.id == turn_id)).scalar_one()
            conn.execute(_parts.delete().where((_parts.c.turn_pk == pk) & (_parts.c.kind == "heard")))
            position = conn.execute(select(func.coalesce(func.max(_parts.c.position), -1)).where(_parts.c.turn_pk == pk)).scalar_one()
            conn.execute(_INSERT_PARTS, [{"turn_pk": pk, "position": position + 1, "kind": "heard", "text": heard, "attachment_sha256": None}])

    def begin_reply(self, conversation_id: str, user_turn_id: str, history_limit: int) -> TurnStart:
        """Commit a reply placeholder (in_progress) to a stored user turn, then read the context."""
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
            user_id = self._insert_turn(conn, conversation_id, "user", "completed", parts, touch=False)
            reply_id = self._insert_turn(conn, conversation_id, "assistant", "in_progress", [], reply_to=user_id)
        return TurnStart(user_id, reply_id, self._context(conversation_id, reply_id, history_limit))

    def _insert_turn(
        self, conn: Any, conversation_id: str, role: str, status: str, parts: list[PartRecord],
        reply_to: str | None = None, touch: bool = True, turn_id: str | None = None,
    ) -> str:
        now = _now()
        turn_id = turn_id or new_id()
        pk = conn.execute(_INSERT_TURN, {
            "id": turn_id, "conversation_id": conversation_id, "role": role, "status": status, "reply_to": reply_to,
            "created_at": now, "finished_at": None if status == "in_progress" else now, "error": None, "usage": None,
            "node": self.node_id if status == "in_progress" else None,
        }).inserted_primary_key[0]
        if parts:
            conn.execute(_INSERT_PARTS, [
                {"turn_pk": pk, "position": i, "kind": p.kind, "text": p.text, "attachment_sha256": p.attachment_sha256}
                for i, p in enumerate(parts)
            ])
        if touch:
            conn.execute(_TOUCH_CONVERSATION, {"cid": conversation_id, "now": now})
        return turn_id

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
        with self.engine.begin() as conn:
            row = conn.execute(
                _END_REPLY, {"tid": turn_id, "status": status, "error": error, "usage": usage, "now": now}
            ).one_or_none()
            if row is None:
                raise LookupError(f"no reply {turn_id!r} in progress")
            rows: list[dict[str, Any]] = [{"kind": p.kind, "text": p.text, "attachment_sha256": None} for p in parts]
            if text:
                rows.append({"kind": "text", "text": text, "attachment_sha256": None})
            sha256 = None
            if image is not None:
                sha256 = self._put_attachment(conn, *image)
                rows.append({"kind": "image", "text": None, "attachment_sha256": sha256})
            if rows:
                conn.execute(_INSERT_PARTS, [{"turn_pk": row.pk, "position": i, **p} for i, p in enumerate(rows)])
            conn.execute(_TOUCH_AND_RAISE_SEQ, {"cid": row.conversation_id, "now": now, "seq": last_seq or 0})
        return sha256

    def _put_attachment(self, conn: Any, mime: str, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if conn.execute(_ATTACHMENT_EXISTS, {"sha": sha256}).first() is None:
            conn.execute(self._insert_attachment, {"sha256": sha256, "mime": mime, "size": len(data), "data": data, "created_at": _now()})
        return sha256

    def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        """(mime, bytes) of a stored attachment, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(_ATTACHMENT, {"sha": sha256}).first()
        return None if row is None else (row.mime, row.data)

    def raise_last_seq(self, conversation_id: str, seq: int) -> None:
        """Record that the conversation's events reached `seq` (never lowers the stored value)."""
        with self.engine.begin() as conn:
            conn.execute(
                _conversations.update()
                .where((_conversations.c.id == conversation_id) & (_conversations.c.last_seq < seq))
                .values(last_seq=seq)
            )

    def image_features(self, sha256s: list[str], encoder_id: str) -> dict[str, bytes]:
        """Stored feature vectors (float32 bytes) of these images for `encoder_id`, by sha256; missing ones left out."""
        if not sha256s:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_FEATURES, {"shas": list(set(sha256s)), "enc": encoder_id})
            return {row.sha256: row.vector for row in rows}

    def put_image_features(self, encoder_id: str, vectors: dict[str, bytes], dim: int) -> None:
        """Store feature vectors (float32 bytes of `dim` floats) by sha256 for `encoder_id`; existing ones are kept."""
        with self.engine.begin() as conn:
            have = {row.sha256 for row in conn.execute(_FEATURES, {"shas": list(vectors), "enc": encoder_id})}
            rows = [{"sha256": sha, "encoder_id": encoder_id, "dim": dim, "vector": vector} for sha, vector in vectors.items() if sha not in have]
            if rows:
                conn.execute(self._insert_features, rows)

    def image_descriptions(self, sha256s: list[str], describers: list[str]) -> dict[tuple[str, str], str | None]:
        """Stored descriptions by (sha256, describer) for these images and describers; missing ones left out."""
        if not sha256s or not describers:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_DESCRIPTIONS, {"shas": list(set(sha256s)), "keys": list(set(describers))})
            return {(row.sha256, row.describer): row.text for row in rows}

    def put_image_descriptions(self, descriptions: dict[tuple[str, str], str | None]) -> None:
        """Store descriptions by (sha256, describer); existing ones are kept."""
        if not descriptions:
            return
        with self.engine.begin() as conn:
            shas, keys = [sha for sha, _ in descriptions], [key for _, key in descriptions]
            have = {(row.sha256, row.describer) for row in conn.execute(_DESCRIPTIONS, {"shas": list(set(shas)), "keys": list(set(keys))})}
            rows = [{"sha256": sha, "describer": key, "text": text} for (sha, key), text in descriptions.items() if (sha, key) not in have]
            if rows:
                conn.execute(self._insert_descriptions, rows)

    def conversation_images(self, conversation_id: str) -> list[ImageRef]:
        """Every image part of the conversation (sent or generated), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(_CONVERSATION_IMAGES, {"cid": conversation_id}).all()
        return [ImageRef(row.turn_id, row.role, row.sha256, row.mime) for row in rows]

    def begin_image_job(self, conversation_id: str, prompt: str | None, reply_to: str | None) -> tuple[str | None, str]:
        """Commit an image job's assistant turn (in_progress), after a user turn holding `prompt` if given.

        Returns (user turn id or None, job turn id). A job claimed from a text turn passes that
        turn as `reply_to` and no prompt; an `image.generate` event passes its prompt, stored as an
        `image_request` part (kept out of the dialogue context).
        """
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
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
        with self.engine.connect() as conn:
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
        """The conversation's turns in order, oldest first; the last `limit` when given."""
        with self.engine.connect() as conn:
            query, params = (_HISTORY_ALL, {"cid": conversation_id}) if limit is None else (_HISTORY, {"cid": conversation_id, "limit": limit})
            turns = list(reversed(conn.execute(query, params).all()))
            parts: dict[int, list[PartRecord]] = {t.pk: [] for t in turns}
            if turns:
                for row in conn.execute(_HISTORY_PARTS, {"pks": list(parts)}):
                    parts[row.turn_pk].append(PartRecord(row.kind, row.text, row.attachment_sha256, row.mime))
        return [_record(t, parts[t.pk]) for t in turns]


class AsyncStore:
    """The store for async code: one `async def` per `Store` method, each run on the store's own thread.

    Each method looks up `self.store.<method>` when called (tests may replace one) and has the `Store`
    method's signature and return type; see the `Store` method for what it does.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `method(*args, **kwargs)` on the store thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(method, *args, **kwargs))

    async def check_writable(self) -> None:
        """`Store.check_writable` on the store thread."""
        await self.call(self.store.check_writable)

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
        return await self.call(self.store.mark_interrupted, node)

    async def in_progress_nodes(self) -> list[str]:
        """`Store.in_progress_nodes` on the store thread."""
        return await self.call(self.store.in_progress_nodes)

    async def interrupt_nodes(self, nodes: Sequence[str]) -> list[tuple[str, str]]:
        """`Store.interrupt_nodes` on the store thread."""
        return await self.call(self.store.interrupt_nodes, nodes)

    async def create_conversation(self, owner: str = "local", conversation_id: str | None = None) -> str:
        """`Store.create_conversation` on the store thread."""
        return await self.call(self.store.create_conversation, owner, conversation_id)

    async def conversation_last_seq(self, conversation_id: str, owner: str | None = None) -> int | None:
        """`Store.conversation_last_seq` on the store thread."""
        return await self.call(self.store.conversation_last_seq, conversation_id, owner)

    async def owns_attachment(self, owner: str, sha256: str) -> bool:
        """`Store.owns_attachment` on the store thread."""
        return await self.call(self.store.owns_attachment, owner, sha256)

    async def add_user_turn(
        self, conversation_id: str, parts: list[PartRecord], attachments: Sequence[tuple[str, bytes]] = (), turn_id: str | None = None
    ) -> str:
        """`Store.add_user_turn` on the store thread."""
        return await self.call(self.store.add_user_turn, conversation_id, parts, attachments, turn_id)

    async def add_parts(self, turn_id: str, parts: list[PartRecord]) -> None:
        """`Store.add_parts` on the store thread."""
        await self.call(self.store.add_parts, turn_id, parts)

    async def begin_reply(self, conversation_id: str, user_turn_id: str, history_limit: int) -> TurnStart:
        """`Store.begin_reply` on the store thread."""
        return await self.call(self.store.begin_reply, conversation_id, user_turn_id, history_limit)

    async def begin_turn(self, conversation_id: str, parts: list[PartRecord], history_limit: int) -> TurnStart:
        """`Store.begin_turn` on the store thread."""
        return await self.call(self.store.begin_turn, conversation_id, parts, history_limit)

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
        return await self.call(
            self.store.finish_reply, turn_id, text=text, status=status, error=error, usage=usage, last_seq=last_seq, image=image,
            parts=parts,
        )

    async def attachment(self, sha256: str) -> tuple[str, bytes] | None:
        """`Store.attachment` on the store thread."""
        return await self.call(self.store.attachment, sha256)

    async def raise_last_seq(self, conversation_id: str, seq: int) -> None:
        """`Store.raise_last_seq` on the store thread."""
        await self.call(self.store.raise_last_seq, conversation_id, seq)

    async def reserve_seqs(self, conversation_id: str, until: int) -> None:
        """`Store.reserve_seqs` on the store thread."""
        await self.call(self.store.reserve_seqs, conversation_id, until)

    async def settle_seqs(self, conversation_id: str, delivered: int, reserved: int) -> None:
        """`Store.settle_seqs` on the store thread."""
        await self.call(self.store.settle_seqs, conversation_id, delivered, reserved)

    async def image_features(self, sha256s: list[str], encoder_id: str) -> dict[str, bytes]:
        """`Store.image_features` on the store thread."""
        return await self.call(self.store.image_features, sha256s, encoder_id)

    async def put_image_features(self, encoder_id: str, vectors: dict[str, bytes], dim: int) -> None:
        """`Store.put_image_features` on the store thread."""
        await self.call(self.store.put_image_features, encoder_id, vectors, dim)

    async def set_heard(self, turn_id: str, heard: str) -> None:
        """`Store.set_heard` on the store thread."""
        await self.call(self.store.set_heard, turn_id, heard)

    async def image_descriptions(self, sha256s: list[str], describers: list[str]) -> dict[tuple[str, str], str | None]:
        """`Store.image_descriptions` on the store thread."""
        return await self.call(self.store.image_descriptions, sha256s, describers)

    async def put_image_descriptions(self, descriptions: dict[tuple[str, str], str | None]) -> None:
        """`Store.put_image_descriptions` on the store thread."""
        await self.call(self.store.put_image_descriptions, descriptions)

    async def conversation_images(self, conversation_id: str) -> list[ImageRef]:
        """`Store.conversation_images` on the store thread."""
        return await self.call(self.store.conversation_images, conversation_id)

    async def begin_image_job(self, conversation_id: str, prompt: str | None, reply_to: str | None) -> tuple[str | None, str]:
        """`Store.begin_image_job` on the store thread."""
        return await self.call(self.store.begin_image_job, conversation_id, prompt, reply_to)

    async def add_generated_images(self, owner: str, prompt: str, images: Sequence[tuple[str, bytes]]) -> tuple[str, list[str]]:
        """`Store.add_generated_images` on the store thread."""
        return await self.call(self.store.add_generated_images, owner, prompt, images)

    async def history_page(self, conversation_id: str, before: str | None, limit: int, max_chars: int) -> tuple[list[TurnRecord], bool] | None:
        """`Store.history_page` on the store thread."""
        return await self.call(self.store.history_page, conversation_id, before, limit, max_chars)

    async def history(self, conversation_id: str, limit: int | None = None) -> list[TurnRecord]:
        """`Store.history` on the store thread."""
        return await self.call(self.store.history, conversation_id, limit)

    def close(self) -> None:
        """Finish pending writes, then release the database (blocking: call it off the event loop)."""
        self._executor.shutdown(wait=True)
        self.store.close()
