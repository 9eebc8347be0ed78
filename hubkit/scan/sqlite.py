"""Streaming SELECT results out of SQLite as Arrow batches, through ADBC.

``SqliteBatches(path)`` is a ``BatchReader`` over one file: each call opens an ADBC
connection, runs the plan's statement and yields its batches, and closes the connection
when the batches run out or the iterator is closed. A store with its own connections uses
``read_batches(cursor, plan, batch_rows, statements)`` on one of its ADBC cursors instead,
with one ``SqliteStatements`` (the compiled-statement cache) for its lifetime.

The ADBC SQLite driver types each result column from the first batch it reads; a column
that is NULL throughout that batch becomes an integer column, and a text value in a later
batch then fails the whole read ("Type mismatch"). Small batches make that likely (a
nullable column whose first 65,536 rows are NULL). So every query is read with one typed
first row in front, a UNION ALL of literals of each column's storage type, flagged by an
extra column, and that row and column are dropped before the batches are handed on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from hubkit.errors import StoreError

if TYPE_CHECKING:
    from hubkit.scan.source import ReadPlan

__all__ = [
    "SqliteBatches",
    "SqliteStatements",
    "compile_sqlite",
    "read_batches",
    "typed_first_row",
]

_DIALECT: Final = sqlite_dialect.dialect()
_FLAG: Final = "hubkit_first_row__"
_BUSY_TIMEOUT_MS: Final = 30_000
_BATCH_ROWS: Final = "adbc.sqlite.query.batch_rows"


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


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per placeholder: the plan parameter it binds, or (None, the fixed value).
    slots: tuple[tuple[str | None, Any], ...]


class SqliteStatements:
    """Compiled scan statements (with their typed first row), by plan shape.

    Compiling a statement costs about as much as an indexed query for a thousand rows, so
    plans of one shape compile once; each read binds its own values. Holds at most
    ``size`` shapes (the oldest is dropped). Thread-safe enough: a race compiles twice.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._compiled: OrderedDict[Hashable, _Compiled] = OrderedDict()

    def sql(self, plan: ReadPlan) -> tuple[str, tuple[Any, ...]]:
        """The SQL text and positional parameters that run ``plan`` (typed first row)."""
        compiled = self._compiled.get(plan.shape)
        if compiled is None:
            compiled = _compile_plan(plan)
            self._compiled[plan.shape] = compiled
            while len(self._compiled) > self.size:
                self._compiled.popitem(last=False)
        params = plan.params
        return compiled.sql, tuple(params[n] if n is not None else v for n, v in compiled.slots)


def _compile_plan(plan: ReadPlan) -> _Compiled:
    compiled = typed_first_row(plan.statement).compile(dialect=_DIALECT)
    state = compiled.construct_expanded_state()
    ours = plan.params
    slots: list[tuple[str | None, Any]] = []
    for name in state.positiontup or ():
        if state.processors.get(name) is not None:
            raise TypeError(f"parameter {name!r} of a scan needs a bind processor")
        slots.append((name, None) if name in ours else (None, state.parameters[name]))
    return _Compiled(state.statement, tuple(slots))


def read_batches(
    cursor: Any, plan: ReadPlan, batch_rows: int, statements: SqliteStatements | None = None
) -> Iterator[Any]:
    """Run ``plan`` on an ADBC SQLite ``cursor``; yield its rows as Arrow record batches.

    Batches hold at most ``batch_rows`` rows and exactly the plan's ``read`` columns.
    ``statements`` caches compiled SQL across reads (pass one that lives as long as the
    connection pool). The cursor is busy until the iterator is exhausted or closed, and
    then has its previous batch-size option back.
    """
    names = list(plan.read)
    sql, params = (statements or SqliteStatements(1)).sql(plan)
    options = cursor.adbc_statement
    before = options.get_option(_BATCH_ROWS)
    options.set_options(**{_BATCH_ROWS: str(batch_rows)})
    try:
        cursor.execute(sql, params or None)
        seen_first = False
        for batch in cursor.fetch_record_batch():
            if not seen_first and batch.num_rows:
                seen_first = True
                flags = batch.column(_FLAG)
                if flags[0].as_py() == 1:
                    batch = batch.slice(1)  # SQLite emits UNION ALL parts in order: row 0
                else:  # not promised by SQLite: find the typed row wherever it is
                    import pyarrow.compute as pc  # loaded: the driver returned Arrow

                    seen_first = bool(pc.any(pc.equal(flags, 1)).as_py())
                    batch = batch.filter(pc.equal(flags, 0))
            yield batch.select(names)
    finally:
        # The cursor may be a pool's: its other reads keep their own batch size.
        options.set_options(**{_BATCH_ROWS: before})


class SqliteBatches:
    """A ``BatchReader`` over the SQLite file at ``path`` (one ADBC connection per read).

    Reads see the data committed when their statement starts (one statement is one read
    transaction); a long read keeps the WAL from being checkpointed while it runs.
    Database failures raise ``StoreError``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(Path(path).expanduser().resolve())
        self.statements = SqliteStatements()

    def __repr__(self) -> str:
        return f"SqliteBatches({self.path!r})"

    def __call__(self, plan: ReadPlan, batch_rows: int) -> Iterator[Any]:
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
                yield from read_batches(cursor, plan, batch_rows, self.statements)
            except dbapi.Error as exc:
                raise StoreError(f"reading {self.path!r} failed: {exc}") from exc
            finally:
                cursor.close()
        finally:
            conn.close()
