"""The schema of the first release with migrations; also brings a database made before migrations to it.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

An empty database gets every table. A database made before migrations (by `create_all` of its day,
then the hand-written column additions) has some of them: it gains the tables it lacks (image
descriptions and reminders came later), `conversations.seq_reserved` and `conversations.owner` (with
their old defaults, so existing rows stay valid), and the owner index; its rows are untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _conversations() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("seq_reserved", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
    )
    op.create_index("ix_conversations_owner", "conversations", ["owner"])


def _attachments() -> None:
    op.create_table(
        "attachments",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("mime", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def _turns() -> None:
    op.create_table(
        "turns",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("conversation_id", sa.String(64), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reply_to", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
    )
    op.create_index("ix_turns_conversation_id", "turns", ["conversation_id"])


def _parts() -> None:
    op.create_table(
        "parts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("turn_pk", sa.Integer(), sa.ForeignKey("turns.pk"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("attachment_sha256", sa.String(64), sa.ForeignKey("attachments.sha256"), nullable=True),
    )
    op.create_index("ix_parts_turn_pk", "parts", ["turn_pk"])


def _image_features() -> None:
    op.create_table(
        "image_features",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("attachments.sha256"), primary_key=True),
        sa.Column("encoder_id", sa.String(200), primary_key=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )


def _image_descriptions() -> None:
    op.create_table(
        "image_descriptions",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("attachments.sha256"), primary_key=True),
        sa.Column("describer", sa.String(200), primary_key=True),
        sa.Column("text", sa.Text(), nullable=True),
    )


def _reminders() -> None:
    op.create_table(
        "reminders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("conversation_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_reminders_owner", "reminders", ["owner"])
    op.create_index("ix_reminders_active_due", "reminders", ["fired_at", "cancelled_at", "due_at"])


TABLES: dict[str, Callable[[], None]] = {
    "conversations": _conversations,
    "attachments": _attachments,
    "turns": _turns,
    "parts": _parts,
    "image_features": _image_features,
    "image_descriptions": _image_descriptions,
    "reminders": _reminders,
}
"""Each table's creation, in an order that respects foreign keys."""


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()
    if "conversations" in existing:  # made before migrations: the columns the hand-written upgrades added
        columns = {column["name"] for column in inspector.get_columns("conversations")}
        if "seq_reserved" not in columns:
            op.add_column("conversations", sa.Column("seq_reserved", sa.Integer(), nullable=False, server_default="0"))
        if "owner" not in columns:
            op.add_column("conversations", sa.Column("owner", sa.String(100), nullable=False, server_default="local"))
        if "ix_conversations_owner" not in {index["name"] for index in inspector.get_indexes("conversations")}:
            op.create_index("ix_conversations_owner", "conversations", ["owner"])


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
