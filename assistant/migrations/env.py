"""Alembic's environment for the store: migrations run on the connection assistant.schema hands over.

The models (`target_metadata`) serve `alembic revision --autogenerate` when a developer writes the next
revision: with an alembic.ini whose script_location is assistant/migrations, and the database URL as
`-x url=...`, this file opens its own connection.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import assistant.reminders  # noqa: F401  (registers the reminders table on Base.metadata)
from assistant.store import Base

target_metadata = Base.metadata


def run() -> None:
    """Run the migrations on the given connection (or on `-x url=...` when Alembic's command line runs them)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("run the migrations with `assistant db upgrade`, or give alembic the database as -x url=...")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
