"""The store's schema version: the Alembic migrations in assistant/migrations, applied, checked and reported.

A database records its revision in Alembic's `alembic_version` table. Opening a store (`prepare`)
creates the schema in an empty database by running every migration; brings an older one to the head
revision when upgrading is allowed (`[store] upgrade`, on by default) and otherwise refuses with a
`SchemaError` naming `assistant db upgrade`; and always refuses a revision it does not know (a newer
release wrote it). A database made before migrations existed (its tables, no `alembic_version`) is
older: revision 0001 adds what such a database lacks and keeps its rows.

On PostgreSQL an upgrade holds an advisory lock for its transaction, so nodes starting together on
one database upgrade it once; the migrations run in that one transaction.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SqlEngine

log = logging.getLogger("assistant.schema")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_LOCK = 0x61737374  # PostgreSQL advisory lock key held while upgrading ("asst")


class SchemaError(Exception):
    """The database's schema is not one this code can use (older with upgrading off, or newer)."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None: none recorded), the code's head, and what that means."""

    current: str | None
    head: str
    empty: bool  # no tables of ours at all
    known: bool  # the revision is one of our migrations (or none is recorded)

    @property
    def up_to_date(self) -> bool:
        """The database is at the code's head revision."""
        return self.current == self.head

    def describe(self) -> str:
        """One line: the revision and whether it is the head."""
        if self.empty:
            return f"empty database (no schema yet); head is {self.head}"
        if self.current is None:
            return f"made before migrations (no revision recorded); head is {self.head}: run `assistant db upgrade`"
        if not self.known:
            return f"{self.current} is not a revision this assistant knows (a newer release made it); head is {self.head}"
        if self.up_to_date:
            return f"{self.current} (head)"
        return f"{self.current}; head is {self.head}: run `assistant db upgrade`"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """An Alembic config for the package's migrations, running on `connection` when given."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest migration's revision id."""
    head = _scripts().get_current_head()
    assert head is not None, "assistant/migrations has no revision"
    return head


def state(engine: SqlEngine) -> SchemaState:
    """Where the database at `engine` stands."""
    with engine.connect() as conn:
        return _state(conn)


def _state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    empty = current is None and not (set(inspect(conn).get_table_names()) - {"alembic_version"})
    known = True
    if current is not None:
        try:
            known = _scripts().get_revision(current) is not None
        except CommandError:
            known = False
    return SchemaState(current, head_revision(), empty, known)


def migrate(engine: SqlEngine) -> SchemaState:
    """Bring the database to the head revision (creating the schema in an empty one); returns the state before.

    SchemaError when its revision is unknown (newer than this code).
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
        before = _state(conn)  # read under the lock: another node may have upgraded meanwhile
        if not before.known:
            raise SchemaError(_newer(before))
        if not before.up_to_date:
            command.upgrade(alembic_config(conn), "head")
    if not before.up_to_date and not before.empty:
        log.info("database schema upgraded from %s to %s", before.current or "before migrations", before.head)
    return before


def prepare(engine: SqlEngine, upgrade: bool = True) -> None:
    """Make the database usable by this code at start: see the module docstring. Raises SchemaError when it cannot."""
    now = state(engine)
    if now.up_to_date:
        return
    if not now.known:
        raise SchemaError(_newer(now))
    if not now.empty and not upgrade:
        raise SchemaError(
            f"the database schema is older than this assistant's ({now.current or 'made before migrations'}; head is {now.head}): "
            "run `assistant db upgrade` (with the same --config), or set [store] upgrade = true"
        )
    migrate(engine)


def _newer(now: SchemaState) -> str:
    return (
        f"the database schema is at revision {now.current}, which this assistant does not know (head is {now.head}): "
        "a newer release made it; run that release, or point [store] url at another database"
    )
