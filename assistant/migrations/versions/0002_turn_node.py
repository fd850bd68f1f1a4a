"""turns.node: the node running an in-progress reply.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Written on assistant turns inserted in progress by a store opened with a node id; NULL on every
earlier row and when no node id is configured.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("turns", sa.Column("node", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("node")
