"""Hot statements compiled once for the database's dialect and run straight on the DBAPI cursor.

`Connection.execute` builds every row's parameters in Python on each call: about 50 µs a row for
the store's turn inserts and updates, several times what SQLite takes to write the row. The group
commit writes the same few statements for every turn, so `CompiledStatement` does that work once:
it compiles a Core statement for the engine's dialect (the same SQL text SQLAlchemy would send,
casts and paramstyle included) and keeps each parameter's bind processor (the conversion
SQLAlchemy applies: datetimes to text on SQLite, JSON to text). Running it is a plain
`cursor.execute`/`executemany` inside the connection's open transaction.

`insert_rows` and `execute_in` run the statements whose shape depends on a count (a multi-row
INSERT, an IN list) with a compiled statement per power of two, cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, Table, bindparam, select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement


class CompiledStatement:
    """A Core statement compiled for one dialect; run with rows of parameters by bind name."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        """Compile `statement` for `dialect`; its parameters are its named binds."""
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        binds: Mapping[str, BindParameter[Any]] = compiled.binds
        escaped: Mapping[str, str] = getattr(compiled, "escaped_bind_names", None) or {}
        self._positional = bool(compiled.positional)
        names = list(compiled.positiontup or ()) if self._positional else list(binds)
        # Per parameter, in the statement's order: (its name in the values, or None for a value fixed in the
        # statement; its bind processor; what the processor makes of None (computed once: JSON's "null");
        # the fixed value, already processed). Keys for a named paramstyle.
        self._params: list[tuple[str | None, Callable[[Any], Any] | None, Any, Any]] = []
        self._keys = [escaped.get(name, name) for name in names]
        for name in names:
            bind = binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required or bind.callable is not None:
                self._params.append((name, processor, processor(None) if processor is not None else None, None))
            else:
                self._params.append((None, None, None, processor(bind.value) if processor is not None else bind.value))

    def _row(self, values: Mapping[str, Any]) -> Any:
        out = []
        for name, processor, none, fixed in self._params:
            if name is None:
                out.append(fixed)
                continue
            value = values[name]
            out.append(value if processor is None else none if value is None else processor(value))
        return tuple(out) if self._positional else dict(zip(self._keys, out, strict=True))

    def execute(self, conn: Connection, values: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run once with `values` (by bind name) in `conn`'s transaction; returns the rows it returns (RETURNING, SELECT)."""
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, self._row(values or {}))
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            cursor.close()

    def executemany(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run once per row of values in `conn`'s transaction; returns the number of rows changed in all."""
        params = [self._row(values) for values in rows]
        if not params:
            return 0
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, params)
            return int(cursor.rowcount)
        finally:
            cursor.close()


def power_of_two_sizes(count: int) -> list[int]:
    """`count` as a sum of powers of two, largest first (13 -> [8, 4, 1])."""
    return [1 << bit for bit in range(count.bit_length() - 1, -1, -1) if count >> bit & 1]


Lookup = tuple[str, "Column[Any]", "Column[Any]"]
"""(column, source, key): the inserted column takes `source` of the row whose `key` equals the value given for it
(`parts.turn_pk` from `turns.pk` by `turns.id`), looked up inside the INSERT."""


@functools.lru_cache(maxsize=256)
def _multi_row_insert(table: Table, columns: tuple[str, ...], lookups: tuple[Lookup, ...], rows: int, dialect: Dialect) -> CompiledStatement:
    looked_up = {name: (source, key) for name, source, key in lookups}

    def value(i: int, name: str) -> Any:
        if name not in looked_up:
            return bindparam(f"r{i}_{name}", type_=table.c[name].type)
        source, key = looked_up[name]
        return select(source).where(key == bindparam(f"r{i}_{name}", type_=key.type)).scalar_subquery()

    return CompiledStatement(table.insert().values([{name: value(i, name) for name in columns} for i in range(rows)]), dialect)


def insert_rows(
    conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]], lookups: tuple[Lookup, ...] = (),
) -> None:
    """Insert `rows` (values of `columns` by name) with multi-row INSERTs. A column named in `lookups` is given
    the key of the row it refers to (see `Lookup`).

    One statement writes many rows: SQLite is stepped once for it, not once per row as with `executemany`
    (each step releases and takes back the GIL, a wait of its own while the event loop runs); a row that
    RETURNING gives back costs a step, which a lookup inside the INSERT saves. The rows go in chunks whose
    sizes are powers of two, so whatever the batch sizes, at most one statement per power of two is ever
    compiled (compiling a 64-row INSERT takes tens of milliseconds)."""
    dialect = conn.dialect
    start = 0
    for size in power_of_two_sizes(len(rows)):
        chunk = rows[start:start + size]
        values = {f"r{i}_{name}": row[name] for i, row in enumerate(chunk) for name in columns}
        _multi_row_insert(table, columns, lookups, size, dialect).execute(conn, values)
        start += size


def in_binds(column: ColumnElement[Any], count: int) -> list[BindParameter[Any]]:
    """`count` binds of `column`'s type named `in0`, `in1`, ... (the members of an IN list)."""
    return [bindparam(f"in{i}", type_=column.type) for i in range(count)]


@functools.lru_cache(maxsize=256)
def _sized(make: Callable[[int], ClauseElement], count: int, dialect: Dialect) -> CompiledStatement:
    return CompiledStatement(make(count), dialect)


def execute_in(
    conn: Connection, make: Callable[[int], ClauseElement], keys: Sequence[Any], values: Mapping[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Run `make(count)`, a statement whose IN list is `in_binds(column, count)`, for `keys` (and its other
    parameters `values`); returns its rows (a SELECT's, or RETURNING's).

    The list is padded with its last key up to a power of two (a key twice in an IN list matches the same
    rows), so at most one statement per power of two is ever compiled."""
    if not keys:
        return []
    size = 1 << (len(keys) - 1).bit_length()
    padded = [*keys, *[keys[-1]] * (size - len(keys))]
    return _sized(make, size, conn.dialect).execute(conn, {**(values or {}), **{f"in{i}": key for i, key in enumerate(padded)}})
