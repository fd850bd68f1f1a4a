"""Schema migrations: a database of the release before migrations upgraded with its rows, newer schemas refused, `assistant db`."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, make_url, text

import assistant.reminders  # noqa: F401  (the reminders table is part of the schema)
from assistant import cli
from assistant.reminders import ReminderStore
from assistant.schema import SchemaError, head_revision, migrate, state
from assistant.store import Base, PartRecord, Store, open_engine

OLD = Path(__file__).resolve().parents[1] / "data" / "store_before_migrations"
"""The schema and rows of the release before migrations, one SQL file per dialect: made by that release's
Store and ReminderStore (two conversations, turns with text, image, tool and in-progress parts, attachments,
image features and descriptions, a waiting and a fired reminder), dumped by sqlite3's iterdump and pg_dump."""
PNG = bytes(range(64))
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def load_old_release(url: str) -> None:
    """Fill the empty database at `url` with the previous release's schema and rows."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(make_url(url).database)
        db.executescript((OLD / "sqlite.sql").read_text())
        db.close()
        return
    parsed = make_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database, autocommit=True) as conn:
        conn.execute((OLD / "postgresql.sql").read_text().encode())


def schema_differences(store: Store) -> list:
    """What Alembic's autogenerate would change to make the database match the models (nothing, when they agree)."""
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


@pytest.fixture
def old_url(store_url):
    """A database holding the previous release's schema and rows, on SQLite and on PostgreSQL."""
    if store_url.startswith("sqlite"):
        Path(make_url(store_url).database).parent.mkdir(parents=True)
    load_old_release(store_url)
    return store_url


def test_migrations_make_exactly_the_models_schema(store_url):
    """An empty database upgraded by the migrations has the models' schema, nothing more or less, at the head revision."""
    store = Store(store_url)
    try:
        assert schema_differences(store) == []
        assert state(store.engine).current == head_revision()
    finally:
        store.close()


def test_a_database_of_the_previous_release_is_upgraded_and_keeps_every_row(old_url):
    """The previous release's database is refused with upgrading off, then upgraded: every row reads back through the store."""
    with pytest.raises(SchemaError, match="assistant db upgrade"):
        Store(old_url, upgrade=False)
    store = Store(old_url)
    try:
        assert schema_differences(store) == [] and state(store.engine).up_to_date
        assert store.conversation_last_seq("c-alice", owner="alice") == 20 and store.conversation_last_seq("c-bob", owner="alice") is None
        alice = store.history("c-alice")
        assert [(t.role, t.status, t.text) for t in alice] == [
            ("user", "completed", "what is in this picture?"), ("assistant", "completed", "A cat on a sofa. ünïcödé ✓"),
            ("user", "completed", "and this one?"), ("assistant", "completed", "It is 5."),
        ]
        assert alice[1].usage == {"completion_tokens": 7} and alice[1].reply_to == alice[0].id
        assert alice[0].created_at.tzinfo is not None and alice[1].finished_at >= alice[1].created_at
        assert [p.kind for p in alice[2].parts] == ["text", "image"] and alice[2].parts[1].mime == "image/png"
        call = {"type": "tool_call", "call_id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "needs_confirmation": False}
        assert alice[3].to_wire()["content"][0] == call
        assert store.attachment(PNG_SHA) == ("image/png", PNG) and store.owns_attachment("alice", PNG_SHA)
        assert store.image_features([PNG_SHA], "clip-test") == {PNG_SHA: b"\x00\x01\x02\x03" * 6}
        assert store.image_descriptions([PNG_SHA], ["ocr", "labels"]) == {(PNG_SHA, "ocr"): "HELLO", (PNG_SHA, "labels"): None}
        assert [(i.role, i.mime) for i in store.conversation_images("c-alice")] == [("user", "image/png")]
        reminders = ReminderStore(store.engine)
        [waiting] = reminders.active("alice")
        assert (waiting.text, waiting.due_at, waiting.timezone) == ("water the plants", datetime(2031, 1, 2, 9, 30, tzinfo=UTC), "Europe/Berlin")
        assert reminders.active("bob") == [] and reminders.claim_due(datetime(2032, 1, 1, tzinfo=UTC), ["bob"]) == []
        assert store.mark_interrupted() == 1, "the reply the old release left in progress"
        assert [t.status for t in store.history("c-bob")] == ["completed", "interrupted"]
        begun = store.begin_turn("c-alice", [PartRecord("text", "still there?")], history_limit=10)
        assert len(begun.history) == 5, "new rows follow the old ones (the id sequences carried over)"
        store.finish_reply(begun.reply_id, text="yes", status="completed", last_seq=25)
        assert store.conversation_last_seq("c-alice") == 25
    finally:
        store.close()


def test_a_database_from_before_owners_and_reminders_gains_them(tmp_path):
    """An older database still (no owner or seq_reserved column, no reminders or image descriptions) gains them; its rows belong to `local`."""
    url = f"sqlite:///{tmp_path / 'older.db'}"
    load_old_release(url)
    db = sqlite3.connect(tmp_path / "older.db")
    db.executescript(
        "DROP TABLE reminders; DROP TABLE image_descriptions; DROP INDEX ix_conversations_owner; ALTER TABLE conversations DROP COLUMN owner;"
        " ALTER TABLE conversations DROP COLUMN seq_reserved;"
    )
    db.close()
    store = Store(url)
    try:
        assert schema_differences(store) == []
        assert store.conversation_last_seq("c-alice", owner="local") == 20
        assert [t.text for t in store.history("c-alice", limit=1)] == ["It is 5."]
    finally:
        store.close()


def test_a_newer_schema_is_always_refused(store_url):
    """A revision the code does not know (a newer release wrote it) is refused, whether upgrading is on or off; nothing is changed."""
    Store(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for upgrade in (True, False):
        with pytest.raises(SchemaError, match="revision 9999, which this assistant does not know"):
            Store(store_url, upgrade=upgrade)
    with pytest.raises(SchemaError):
        migrate(engine)
    assert state(engine).current == "9999"
    engine.dispose()


def test_nodes_upgrading_one_postgresql_database_together_upgrade_it_once(postgres_url):
    """Four stores opening one empty PostgreSQL database at once all succeed, and the schema is made once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            Store(postgres_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = open_engine(postgres_url)
    assert state(engine).up_to_date
    engine.dispose()


def write_config(tmp_path: Path, url: str, upgrade: bool = True) -> str:
    path = tmp_path / "config.toml"
    engines = '[engines]\ndialogue = ""\nasr = ""\nspeech_synthesizer = ""\n'
    path.write_text(f'[server]\nport = 0\n[store]\nurl = "{url}"\nupgrade = {str(upgrade).lower()}\n{engines}')
    return str(path)


def test_db_current_and_db_upgrade(tmp_path, capsys):
    """`db current` names the revision and whether it is the head (exit 1 when older); `db upgrade` brings it there once."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    load_old_release(url)
    config = write_config(tmp_path, url)
    assert cli.main(["db", "current", "--config", config]) == 1
    assert "made before migrations (no revision recorded)" in capsys.readouterr().out
    assert cli.main(["db", "--config", config, "upgrade"]) == 0
    assert capsys.readouterr().out == f"upgraded a database made before migrations to {head_revision()} (head)\n"
    assert cli.main(["db", "upgrade", "--config", config]) == 0
    assert "already the head" in capsys.readouterr().out
    assert cli.main(["db", "current", "--config", config]) == 0
    assert capsys.readouterr().out == f"{head_revision()} (head)\n"


def test_serve_refuses_an_older_schema_with_upgrading_off_and_a_newer_one_always(tmp_path, capsys):
    """`assistant serve` stops with one line and a non-zero exit: on an older schema with `[store] upgrade = false`, on a newer one always."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    load_old_release(url)
    assert cli.main(["serve", "--config", write_config(tmp_path, url, upgrade=False)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "run `assistant db upgrade`" in err
    Store(url).close()
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("UPDATE alembic_version SET version_num = 'abc123'")
    db.commit()
    db.close()
    assert cli.main(["serve", "--config", write_config(tmp_path, url)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("assistant: the database schema is at revision abc123, which this assistant does not know")
    assert cli.main(["db", "current", "--config", write_config(tmp_path, url)]) == 2
