"""How a store transaction runs: ADBC sessions for SQLite files, SQLAlchemy otherwise.

``Tx`` is the small protocol every transaction offers (statements, DDL, rows, Arrow frames,
multi-row inserts and entity upserts); ``AdbcTx`` runs it on an ADBC SQLite connection,
``SaTx`` on a SQLAlchemy connection. ``Backend`` is what a table needs of its store: a read,
a write transaction and the translation of third-party errors into ``StoreError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol

import polars as pl
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ColumnElement

if TYPE_CHECKING:
    from sqlalchemy.sql.base import Executable

    from hubkit.entity import Column

STATE_TABLE: Final = "hubkit_sync_state"
OUTBOX_TABLE: Final = "hubkit_outbox"
BUSY_TIMEOUT_MS: Final = 30_000

# Batches up to this many rows are bound straight from Arrow; larger ones are staged in a
# temporary table and merged with one INSERT ... SELECT (measured crossover, 2-core box).
DIRECT_MAX: Final = 4_096
# Keys per IN (...) list when reading or deleting by key.
KEY_CHUNK: Final = 500
# Rows per Arrow batch the ADBC SQLite driver returns. It infers each column's type from
# the first batch, so a large first batch keeps a nullable column that starts with many
# NULLs from being typed wrongly; reads that still trip over it fall back to SQLAlchemy.
_ADBC_BATCH_ROWS: Final = 1 << 22
_IDLE_CONNECTIONS: Final = 4


@dataclass(frozen=True)
class UpsertPlan:
    """The upsert of one entity table: its ``table``, ``key`` columns and, for ADBC, the
    prepared ``direct_sql`` (bound from Arrow) and ``staged_sql`` (merged from ``stage_name``)."""

    table: sa.Table
    key: tuple[str, ...]
    direct_sql: str
    staged_sql: str
    stage_name: str

    @property
    def name(self) -> str:
        return self.table.name


def key_in(
    table: sa.Table, key: Sequence[str], keys: Sequence[tuple[Any, ...]]
) -> ColumnElement[bool]:
    """``key IN (keys)`` for a one- or many-column key."""
    cols = [table.c[k] for k in key]
    if len(cols) == 1:
        return cols[0].in_([k[0] for k in keys])
    return sa.tuple_(*cols).in_(list(keys))


class Tx(Protocol):
    def run(self, stmt: Executable) -> None: ...

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> None: ...

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]: ...

    def frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame: ...

    def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None: ...

    def upsert(self, plan: UpsertPlan, storage: pl.DataFrame) -> None:
        """Insert or replace ``storage`` rows (stored values; large batches in key order)."""
        ...

    def column_names(self, table: str) -> list[str] | None: ...


def _compile(stmt: Executable, dialect: Dialect) -> tuple[str, tuple[Any, ...]]:
    """SQL text with ``?`` placeholders and the bound values, encoded by their column types."""
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    state = compiled.construct_expanded_state()
    processors = state.processors
    params = []
    for name in state.positiontup or ():
        value = state.parameters[name]
        proc = processors.get(name)
        if proc is None and name in compiled.binds:
            proc = compiled.binds[name].type.bind_processor(dialect)
        params.append(proc(value) if proc is not None else value)
    return state.statement, tuple(params)


def sqlite_pragmas(busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> tuple[str, ...]:
    """The pragmas of every connection hubkit opens on a SQLite file."""
    return (
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",  # first: the next may wait for a lock
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
    )


SQLITE_PRAGMAS: Final = sqlite_pragmas()


class AdbcSession:
    """One ADBC SQLite connection in autocommit mode (hubkit issues BEGIN/COMMIT itself).

    Its one cursor (statement) lives as long as the connection and is closed before it:
    ADBC refuses to close a connection whose statements are open.
    """

    def __init__(
        self, dbapi: ModuleType, path: str, pragmas: tuple[str, ...] = SQLITE_PRAGMAS
    ) -> None:
        conn = dbapi.connect(path, autocommit=True)
        try:
            cur = conn.cursor()
            try:
                cur.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(_ADBC_BATCH_ROWS)}
                )
                for pragma in pragmas:
                    cur.execute(pragma)
                    cur.fetchall()
            except BaseException:
                cur.close()
                raise
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.cur = cur

    def close(self) -> None:
        try:
            self.cur.close()
        finally:
            self.conn.close()


class Pool:
    """The idle ADBC sessions of one store, shared with the store's finalizer.

    The finalizer runs when the store is collected, or at interpreter exit for a store
    nobody closed. At exit it may run before hubkit's loop closes, and work still running
    on the loop's threads may use the store after it: so once closed, the pool keeps
    nothing and every session returned to it is closed at once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[AdbcSession] = []
        self.closed = False

    def take(self) -> AdbcSession | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give_back(self, session: AdbcSession, *, reuse: bool) -> None:
        with self.lock:
            keep = reuse and not self.closed and len(self.idle) < _IDLE_CONNECTIONS
            if keep:
                self.idle.append(session)
        if not keep:
            with suppress(Exception):  # best effort: the session is being discarded
                session.close()

    def forget(self) -> list[AdbcSession]:
        """Hand over the idle sessions without closing them (they belong to another process)."""
        with self.lock:
            sessions, self.idle[:] = list(self.idle), []
        return sessions

    def close(self) -> None:
        with self.lock:
            self.closed = True
            sessions, self.idle[:] = list(self.idle), []
        for session in sessions:
            with suppress(Exception):  # best effort: nothing is pending on an idle session
                session.close()


class AdbcTx:
    def __init__(self, session: AdbcSession, pa: ModuleType) -> None:
        self.cur = session.cur
        self.pa = pa
        self.dialect = SQLITE

    def _execute(self, stmt: Executable) -> None:
        sql, params = _compile(stmt, self.dialect)
        self.cur.execute(sql, params or None)

    def run(self, stmt: Executable) -> None:
        self._execute(stmt)

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> None:
        self.cur.execute(str(element.compile(dialect=self.dialect)))

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]:
        self._execute(stmt)
        return list(self.cur.fetchall())

    def frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame:
        self._execute(stmt)
        out = pl.from_arrow(self.cur.fetch_arrow_table())
        assert isinstance(out, pl.DataFrame)
        return out

    def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = list(rows[0])
        stmt = sa.insert(table).values({n: sa.bindparam(f"p{i}") for i, n in enumerate(names)})
        compiled = stmt.compile(dialect=self.dialect)
        order = [int(p[1:]) for p in compiled.positiontup or ()]
        data = self.pa.table({f"p{i}": [r[names[i]] for r in rows] for i in order})
        self.cur.executemany(str(compiled), data)

    def upsert(self, plan: UpsertPlan, storage: pl.DataFrame) -> None:
        if storage.height <= DIRECT_MAX:
            # Arrow string views need no conversion (a slice of a big frame otherwise costs
            # milliseconds to convert); ADBC binds them like any string.
            arrow = storage.to_arrow(compat_level=pl.CompatLevel.newest())
            self.cur.executemany(plan.direct_sql, arrow)
            return
        self.cur.adbc_ingest(
            plan.stage_name, storage.to_arrow(), mode="create_append", temporary=True
        )
        self.cur.execute(plan.staged_sql)
        self.cur.execute(f'DELETE FROM temp."{plan.stage_name}"')

    def column_names(self, table: str) -> list[str] | None:
        self.cur.execute("SELECT name FROM pragma_table_info(?)", (table,))
        names = [r[0] for r in self.cur.fetchall()]
        return names or None


class SaTx:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def run(self, stmt: Executable) -> None:
        self.conn.execute(stmt)

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> None:
        self.conn.execute(element)

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(stmt).all()]

    def frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame:
        rows = self.conn.execute(stmt).all()
        return pl.DataFrame(
            [tuple(r) for r in rows], schema=list(schema.items()), orient="row", strict=False
        )

    def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(sa.insert(table), rows)

    def upsert(self, plan: UpsertPlan, storage: pl.DataFrame) -> None:
        table, key = plan.table, list(plan.key)
        rows = storage.to_dicts()
        name = self.conn.dialect.name
        others = [c for c in table.c if c.name not in key]
        if name in ("sqlite", "postgresql"):
            mod: Any = sqlite_dialect if name == "sqlite" else _postgresql()
            ins = mod.insert(table)
            stmt = (
                ins.on_conflict_do_update(
                    index_elements=key, set_={c.name: ins.excluded[c.name] for c in others}
                )
                if others
                else ins.on_conflict_do_nothing(index_elements=key)
            )
            self.conn.execute(stmt, rows)
        elif name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            ins = mysql.insert(table)
            cols = others or [table.c[key[0]]]
            self.conn.execute(
                ins.on_duplicate_key_update({c.name: ins.inserted[c.name] for c in cols}), rows
            )
        else:  # no native upsert: replace inside the transaction
            keys = storage.select(key).rows()
            for chunk in chunks(keys, KEY_CHUNK):
                self.conn.execute(sa.delete(table).where(key_in(table, key, chunk)))
            self.conn.execute(sa.insert(table), rows)

    def column_names(self, table: str) -> list[str] | None:
        insp = sa.inspect(self.conn)
        if not insp.has_table(table):
            return None
        return [c["name"] for c in insp.get_columns(table)]


def _postgresql() -> ModuleType:
    from sqlalchemy.dialects import postgresql

    return postgresql


SQLITE: Final = sqlite_dialect.dialect()


def chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def configure_sqlite(
    engine: sa.Engine, *, wal: bool, pragmas: tuple[str, ...] = SQLITE_PRAGMAS
) -> None:
    """Pragmas on every pysqlite connection, and ``BEGIN IMMEDIATE`` for hubkit's writes."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        try:
            for pragma in pragmas if wal else pragmas[:1]:
                cur.execute(pragma)
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("hubkit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Backend(Protocol):
    """What a table needs of its store (``hubkit.store.Store`` is one)."""

    url: str
    engine: sa.Engine
    state_table: sa.Table
    outbox_table: sa.Table

    @property
    def _fast(self) -> bool: ...  # the Arrow/ADBC path

    @property
    def _native(self) -> bool: ...  # entity columns in the database's own types

    @property
    def _pg(self) -> object | None: ...  # the PostgreSQL sessions, when on PostgreSQL

    def _guarded(self) -> AbstractContextManager[None]: ...

    def _session(self) -> AbstractContextManager[AdbcSession]: ...

    def _translate(self, what: str) -> AbstractContextManager[None]: ...

    def _read(self) -> AbstractContextManager[Tx]: ...

    def _write(self) -> AbstractContextManager[Tx]: ...

    def _read_frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame: ...

    def _sql_type(self, column: Column) -> sa.types.TypeEngine[Any]: ...


class TableRef(Protocol):
    """One entity table of a store, as the store's helpers see it (``TableStore`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def table(self) -> sa.Table: ...

    @property
    def store(self) -> Backend: ...
