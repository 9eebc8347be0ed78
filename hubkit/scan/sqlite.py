"""Streaming SELECT results out of SQLite as Arrow batches, through ADBC.

``SqliteBatches(path)`` is a ``BatchReader`` over one file: each call opens a read-only
ADBC connection, runs the statement and yields its batches, and closes the connection when
the batches run out or the iterator is closed. A store with its own connections uses
``read_batches(cursor, stmt, batch_rows)`` on one of its ADBC cursors instead.

The ADBC SQLite driver types each result column from the first batch it reads; a column
that is NULL throughout that batch becomes an integer column, and a text value in a later
batch then fails the whole read ("Type mismatch"). Small batches make that likely (a
nullable column whose first 65,536 rows are NULL). So every query is read with one typed
first row in front, a UNION ALL of literals of each column's storage type, flagged by an
extra column, and that row and column are dropped before the batches are handed on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from hubkit.errors import StoreError

__all__ = ["SqliteBatches", "compile_sqlite", "read_batches", "typed_first_row"]

_DIALECT: Final = sqlite_dialect.dialect()
_FLAG: Final = "hubkit_first_row__"
_BUSY_TIMEOUT_MS: Final = 30_000


def _typed_literal(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A literal with the SQLite affinity of ``column``'s declared type (SQLite's rules)."""
    declared = column.type.compile(dialect=_DIALECT).upper()
    if "INT" in declared:
        text = "0"
    elif any(t in declared for t in ("CHAR", "CLOB", "TEXT")):
        text = "''"
    elif "BLOB" in declared or not declared:
        text = "x''"
    elif any(t in declared for t in ("REAL", "FLOA", "DOUB")):
        text = "0.0"
    else:
        text = "0"  # NUMERIC affinity: BOOLEAN, DECIMAL, DATE ... (hubkit stores integers there)
    return sa.literal_column(text)


def typed_first_row(stmt: sa.Select[Any]) -> sa.CompoundSelect[Any]:
    """``stmt`` with a first row of typed literals in front, flagged by a last column.

    Rows of ``stmt`` carry 0 in the flag column, the typed row 1.
    """
    columns = list(stmt.selected_columns)
    first = sa.select(
        *[_typed_literal(c).label(c.name) for c in columns], sa.literal_column("1").label(_FLAG)
    )
    inner = stmt.subquery("hubkit_scan")
    rows = sa.select(*[inner.c[c.name] for c in columns], sa.literal_column("0").label(_FLAG))
    return sa.union_all(first, rows)


def compile_sqlite(stmt: sa.Executable) -> tuple[str, tuple[Any, ...]]:
    """SQL text with ``?`` placeholders and its parameters, encoded by their bound types."""
    compiled = stmt.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    state = compiled.construct_expanded_state()
    params = []
    for name in state.positiontup or ():
        value = state.parameters[name]
        processor = state.processors.get(name)
        params.append(processor(value) if processor is not None else value)
    return state.statement, tuple(params)


def read_batches(cursor: Any, stmt: sa.Select[Any], batch_rows: int) -> Iterator[Any]:
    """Run ``stmt`` on an ADBC SQLite ``cursor``; yield its rows as Arrow record batches.

    Batches hold at most ``batch_rows`` rows and exactly ``stmt``'s columns. The cursor is
    busy until the iterator is exhausted or closed.
    """
    names = [c.name for c in stmt.selected_columns]
    sql, params = compile_sqlite(typed_first_row(stmt))
    cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
    cursor.execute(sql, params or None)
    seen_first = False
    for batch in cursor.fetch_record_batch():
        if not seen_first:
            flags = batch.column(_FLAG)
            if flags.to_pylist().count(1):
                seen_first = True
                # SQLite emits UNION ALL parts in order (row 0), but drop it wherever it is.
                import pyarrow.compute as pc  # pyarrow is loaded: the driver returned Arrow

                batch = batch.filter(pc.equal(flags, 0))
        yield batch.select(names)


class SqliteBatches:
    """A ``BatchReader`` over the SQLite file at ``path`` (one ADBC connection per read).

    Reads see the data committed when their statement starts (one statement is one read
    transaction); a long read keeps the WAL from being checkpointed while it runs.
    Database failures raise ``StoreError``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(Path(path).expanduser().resolve())

    def __repr__(self) -> str:
        return f"SqliteBatches({self.path!r})"

    def __call__(self, stmt: sa.Select[Any], batch_rows: int) -> Iterator[Any]:
        import adbc_driver_sqlite.dbapi as dbapi  # ~1 s to import: only when a scan reads

        if not Path(self.path).is_file():  # connecting would create an empty database
            raise StoreError(f"no SQLite database at {self.path!r}")
        try:
            conn = dbapi.connect(self.path, autocommit=True)
        except dbapi.Error as exc:
            raise StoreError(f"cannot open {self.path!r} to read: {exc}") from exc
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                cursor.fetchall()
                yield from read_batches(cursor, stmt, batch_rows)
            except dbapi.Error as exc:
                raise StoreError(f"reading {self.path!r} failed: {exc}") from exc
            finally:
                cursor.close()
        finally:
            conn.close()
