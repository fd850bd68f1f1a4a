"""Hot statements compiled once for the database's dialect and run straight on the DBAPI cursor.

`Connection.execute` builds every row's parameters in Python on each call: about 50 µs a row for
the store's turn inserts and updates, several times what SQLite takes to write the row. The group
commit writes the same few statements for every turn, so `CompiledStatement` does that work once:
it compiles a Core statement for the engine's dialect (the same SQL text SQLAlchemy would send,
casts and paramstyle included) and keeps each parameter's bind processor (the conversion
SQLAlchemy applies: datetimes to text on SQLite, JSON to text). Running it is a plain
`cursor.execute`/`executemany` inside the connection's open transaction.

`multi_row_insert` and `sized` give the statements whose shape depends on a count (a multi-row
INSERT ... RETURNING, an IN list), one compiled statement per count, cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement

_REQUIRED = object()


class CompiledStatement:
    """A Core statement compiled for one dialect; run with rows of parameters by bind name."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None) -> None:
        """Compile `statement` for `dialect` (an INSERT or UPDATE with the columns `column_keys` when given)."""
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None))
        self.sql = compiled.string
        binds: Mapping[str, BindParameter[Any]] = compiled.binds
        escaped: Mapping[str, str] = getattr(compiled, "escaped_bind_names", None) or {}
        self._positional = bool(compiled.positional)
        names = list(compiled.positiontup or ()) if self._positional else list(binds)
        self._params: list[tuple[str, str, Callable[[Any], Any] | None, Any]] = []
        for name in names:
            bind = binds[name]
            fixed = _REQUIRED if bind.required or bind.callable is not None else bind.value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self._params.append((name, escaped.get(name, name), processor, fixed))

    def _row(self, values: Mapping[str, Any]) -> Any:
        out = []
        for name, _, processor, fixed in self._params:
            value = values[name] if fixed is _REQUIRED else values.get(name, fixed)
            out.append(processor(value) if processor is not None else value)
        if self._positional:
            return tuple(out)
        return {key: value for (_, key, _, _), value in zip(self._params, out, strict=True)}

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


def _row_bind(index: int, column: ColumnElement[Any]) -> BindParameter[Any]:
    return bindparam(f"r{index}_{column.key}", type_=column.type)


@functools.lru_cache(maxsize=512)
def multi_row_insert(table: Table, columns: tuple[str, ...], returning: tuple[str, ...], rows: int, dialect: Dialect) -> CompiledStatement:
    """INSERT of `rows` rows of `columns` in one statement, RETURNING `returning`; parameters are named
    `r<row>_<column>` (see `flatten`)."""
    values = [{name: _row_bind(i, table.c[name]) for name in columns} for i in range(rows)]
    statement = table.insert().values(values).returning(*(table.c[name] for name in returning))
    return CompiledStatement(statement, dialect)


def flatten(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows of values by column, as the named parameters of `multi_row_insert`."""
    return {f"r{i}_{name}": value for i, row in enumerate(rows) for name, value in row.items()}


def in_binds(column: ColumnElement[Any], count: int) -> list[BindParameter[Any]]:
    """`count` binds of `column`'s type named `in0`, `in1`, ... (the members of an IN list)."""
    return [bindparam(f"in{i}", type_=column.type) for i in range(count)]


@functools.lru_cache(maxsize=512)
def sized(make: Callable[[int], ClauseElement], count: int, dialect: Dialect) -> CompiledStatement:
    """`make(count)` compiled for `dialect`, once per count (a statement whose shape depends on a count, such as
    an IN list of `in_binds`)."""
    return CompiledStatement(make(count), dialect)
