"""Statements compiled once and run on the DBAPI cursor write and read what SQLAlchemy's own execution does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, MetaData, String, Table, bindparam, create_engine, func, select

from assistant.compiled_sql import CompiledStatement, execute_in, in_binds, insert_rows, power_of_two_sizes

metadata = MetaData()
things = Table(
    "things", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(32), unique=True),
    Column("at", DateTime(timezone=True)),
    Column("data", JSON, nullable=True),
    Column("kind", String(16)),
)
notes = Table(
    "notes", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("thing_pk", ForeignKey("things.pk")),
    Column("text", String(32)),
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
    statement = CompiledStatement(things.insert().values({name: bindparam(name, type_=things.c[name].type) for name in COLUMNS}), engine.dialect)
    with engine.begin() as conn:
        assert statement.executemany(conn, ROWS) == len(ROWS)
        conn.execute(things.insert(), [{**row, "name": row["name"] + "2"} for row in ROWS])
        assert statement.executemany(conn, []) == 0
    ours, theirs = _read(engine, ["a", "b", "c"]), _read(engine, ["a2", "b2", "c2"])
    assert [row[1:] for row in ours] == [row[1:] for row in theirs]
    assert ours[0] == ("a", ROWS[0]["at"], {"n": 1, "s": "é"}, "x")
    with engine.connect() as conn:  # None as SQLAlchemy stores it (JSON's "null", not SQL NULL), the same both ways
        stored = dict(conn.execute(select(things.c.name, things.c.data.is_(None))).all())
    assert stored["b"] == stored["b2"] and stored["a"] == stored["a2"]


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


def _pks(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(things.c.name, things.c.pk)).tuples().all())


def test_a_multi_row_insert_writes_every_row_and_an_in_list_selects_by_its_keys(engine):
    """`insert_rows` writes every row (in chunks of powers of two, none for no rows); `execute_in` pads its IN
    list to a power of two without changing what matches, for a SELECT and an UPDATE alike."""
    rows = [{**ROWS[i % 3], "name": f"n{i}"} for i in range(7)]  # 4 + 2 + 1
    with engine.begin() as conn:
        insert_rows(conn, things, COLUMNS, rows)
        insert_rows(conn, things, COLUMNS, [{**ROWS[0], "name": f"m{i}"} for i in range(3)])
        insert_rows(conn, things, COLUMNS, [])
    pks = _pks(engine)
    assert sorted(pks) == sorted([f"n{i}" for i in range(7)] + [f"m{i}" for i in range(3)]) and len(set(pks.values())) == 10
    assert _read(engine, ["m2", "n0", "n6"]) == [(name, *list(ROWS[0].values())[1:]) for name in ("m2", "n0", "n6")]

    def by_names(count):
        return select(things.c.name, things.c.pk).where(things.c.name.in_(in_binds(things.c.name, count)) & (things.c.kind == "x"))

    def retag(count):
        return things.update().where(things.c.name.in_(in_binds(things.c.name, count))).values(kind=bindparam("kind"))

    with engine.begin() as conn:
        found = execute_in(conn, by_names, ["n0", "n1", "zzz"])  # padded to 4; n1 is of kind y
        assert execute_in(conn, by_names, []) == []
        assert sorted(execute_in(conn, by_names, [f"n{i}" for i in range(7)])) == sorted((f"n{i}", pks[f"n{i}"]) for i in (0, 2, 3, 5, 6))
        execute_in(conn, retag, ["n1", "n2", "m0"], {"kind": "z"})
    assert found == [("n0", pks["n0"])]
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(things.c.kind, func.count()).group_by(things.c.kind)).all())
    assert kinds == {"x": 6, "y": 1, "z": 3}  # x: n0 n2 n3 n5 n6 m0 m1 m2, y: n1 n4; then n1 n2 m0 became z


def test_a_column_looked_up_by_key_refers_to_the_row_of_that_key(engine):
    """With `lookups`, a row gives the key of the row it refers to (a name), and the INSERT stores that row's pk,
    rows written in the same transaction included; a key that matches nothing leaves the column NULL."""
    by_name = (("thing_pk", things.c.pk, things.c.name),)
    with engine.begin() as conn:
        insert_rows(conn, things, COLUMNS, [{**ROWS[0], "name": f"k{i}"} for i in range(3)])
        insert_rows(conn, notes, ("thing_pk", "text"), [
            {"thing_pk": f"k{i % 3}", "text": f"note {i}"} for i in range(7)  # 4 + 2 + 1
        ] + [{"thing_pk": "nobody", "text": "orphan"}], lookups=by_name)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(notes.c.text, notes.c.thing_pk)).all())
    pks = _pks(engine)
    assert stored == {**{f"note {i}": pks[f"k{i % 3}"] for i in range(7)}, "orphan": None}
