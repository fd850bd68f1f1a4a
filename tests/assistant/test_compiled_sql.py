"""Statements compiled once and run on the DBAPI cursor write and read what SQLAlchemy's own execution does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, bindparam, create_engine, select

from assistant.compiled_sql import CompiledStatement, in_binds, insert_returning, power_of_two_sizes, select_in

metadata = MetaData()
things = Table(
    "things", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(32), unique=True),
    Column("at", DateTime(timezone=True)),
    Column("data", JSON, nullable=True),
    Column("kind", String(16)),
)
COLUMNS = ("name", "at", "data", "kind")
ROWS = [
    {"name": "a", "at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "data": {"n": 1, "s": "é"}, "kind": "x"},
    {"name": "b", "at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), "data": None, "kind": "y"},
    {"name": "c", "at": datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), "data": [1, 2], "kind": "x"},
]


@pytest.fixture
def engine(store_url):
    engine = create_engine(store_url)
    if engine.dialect.name == "sqlite":
        import pathlib

        pathlib.Path(engine.url.database or "").parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _read(engine, names):
    with engine.connect() as conn:
        rows = conn.execute(select(things.c.name, things.c.at, things.c.data, things.c.kind).where(things.c.name.in_(names)).order_by(things.c.name))
        return [(name, at.replace(tzinfo=UTC) if at.tzinfo is None else at, data, kind) for name, at, data, kind in rows]


def test_rows_written_by_executemany_read_back_as_sqlalchemys_own(engine):
    """Datetimes, JSON (None included) and strings come back the same whichever way the rows went in."""
    statement = CompiledStatement(things.insert(), engine.dialect, COLUMNS)
    with engine.begin() as conn:
        assert statement.executemany(conn, ROWS) == len(ROWS)
        conn.execute(things.insert(), [{**row, "name": row["name"] + "2"} for row in ROWS])
        assert statement.executemany(conn, []) == 0
    ours, theirs = _read(engine, ["a", "b", "c"]), _read(engine, ["a2", "b2", "c2"])
    assert [row[1:] for row in ours] == [row[1:] for row in theirs]
    assert ours[0] == ("a", ROWS[0]["at"], {"n": 1, "s": "é"}, "x")


def test_an_update_counts_the_rows_it_changed_and_keeps_its_fixed_values(engine):
    """An UPDATE with a literal in its WHERE (a fixed bind) changes only matching rows; the count is summed over the rows given."""
    with engine.begin() as conn:
        conn.execute(things.insert(), ROWS)
    update = CompiledStatement(
        things.update().where((things.c.name == bindparam("who")) & (things.c.kind == "x")).values(data=bindparam("data")), engine.dialect,
    )
    with engine.begin() as conn:
        changed = update.executemany(conn, [{"who": "a", "data": {"new": True}}, {"who": "b", "data": {"no": 1}}, {"who": "c", "data": None}])
    assert changed == 2  # b is of kind y
    assert [row[2] for row in _read(engine, ["a", "b", "c"])] == [{"new": True}, None, None]


def test_powers_of_two_sum_to_the_count():
    assert power_of_two_sizes(13) == [8, 4, 1] and power_of_two_sizes(1) == [1] and power_of_two_sizes(0) == []
    assert all(sum(power_of_two_sizes(n)) == n for n in range(600))


def test_a_multi_row_insert_returns_each_rows_key_and_an_in_list_selects_by_its_keys(engine):
    """`insert_returning` writes every row (in chunks of powers of two) and returns what RETURNING names; `select_in`
    pads its IN list to a power of two without changing what matches."""
    rows = [{**ROWS[i % 3], "name": f"n{i}"} for i in range(7)]  # 4 + 2 + 1
    with engine.begin() as conn:
        pks = dict(insert_returning(conn, things, COLUMNS, ("name", "pk"), rows))
        assert insert_returning(conn, things, COLUMNS, ("name", "pk"), []) == []
    assert sorted(pks) == [f"n{i}" for i in range(7)] and len(set(pks.values())) == 7
    assert _read(engine, ["n0", "n6"]) == [("n0", *list(ROWS[0].values())[1:]), ("n6", *list(ROWS[0].values())[1:])]

    def by_names(count):
        return select(things.c.name, things.c.pk).where(things.c.name.in_(in_binds(things.c.name, count)) & (things.c.kind == "x"))

    with engine.connect() as conn:
        found = select_in(conn, by_names, ["n0", "n1", "zzz"])  # padded to 4; n1 is of kind y
        assert select_in(conn, by_names, []) == []
        assert sorted(select_in(conn, by_names, [f"n{i}" for i in range(7)])) == sorted((f"n{i}", pks[f"n{i}"]) for i in (0, 2, 3, 5, 6))
    assert found == [("n0", pks["n0"])]
