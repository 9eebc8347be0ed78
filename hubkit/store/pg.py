"""The PostgreSQL side of a store: native column types, ADBC sessions and transactions.

A ``Store("postgresql://...")`` builds its statements with SQLAlchemy Core and runs them on
ADBC's PostgreSQL driver (``hubkit.pgbulk``): rows go in with binary ``COPY`` into a
temporary table merged by ``INSERT ... ON CONFLICT``, and come out as Arrow. A write is one
PostgreSQL transaction: rows, deletes, sync state and outbox entries commit together.

Entity columns use PostgreSQL's own types where it has them (``pgbulk.column_type``):
``timestamptz`` for datetimes, ``numeric`` for decimals, ``jsonb`` for JSON, ``date``,
``boolean``. Values read back are the ones hubkit wrote: decimals as canonical text, JSON as
compact text (with ``jsonb``'s key order: shorter keys first).

Several processes (and machines) can write one store: upserts lock rows in key order, so
concurrent writers of one table wait for each other instead of deadlocking, and table
creation is serialised by an advisory lock.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec
import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import TypeDecorator

from hubkit.entity import Column, canonical_decimal, to_frame_value
from hubkit.errors import StoreError
from hubkit.store.codec import EPOCH
from hubkit.store.engine import DIRECT_MAX, UpsertPlan

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager.dbapi import Connection, Cursor
    from sqlalchemy.sql.base import Executable

__all__ = ["PgColumn", "PgSessions", "PgTx", "is_postgresql", "postgresql_url"]

# Serialises DDL (CREATE TABLE IF NOT EXISTS is not safe against a concurrent one).
_DDL_LOCK: Final = 0x6875626B6974  # "hubkit"
_IDLE_CONNECTIONS: Final = 4
_CAST_KINDS: Final = frozenset({"decimal", "json", "datetime", "date"})
# hubkit's canonical decimal text (``hubkit.entity.canonical_decimal``)
_CANONICAL: Final = r"^(?:0|-?(?:0\.\d*[1-9]|[1-9]\d*(?:\.\d*[1-9])?))$"


def is_postgresql(url: sa.URL) -> bool:
    return url.get_backend_name() == "postgresql"


def postgresql_url(url: sa.URL) -> sa.URL:
    """``postgresql://`` (and ``postgres://``) -> ``postgresql+psycopg://``; other drivers kept."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


class PgColumn(TypeDecorator[Any]):
    """An entity column in PostgreSQL: its native type (``pgbulk.column_type``).

    Bound values (in ``query(where=...)``, deletes, key lookups) take every form the entity
    accepts and are cast to the column type in SQL, so text binds fine for ``numeric`` and
    ``jsonb``.
    """

    impl = sa.Text
    cache_ok = True

    def __init__(self, column: Column) -> None:
        super().__init__()
        self.column = column

    def _native(self) -> sa.types.TypeEngine[Any]:
        from hubkit import pgbulk

        return pgbulk.column_type(self.column)

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        return self._native()

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return bind_value(self.column, value)

    def bind_expression(self, bindvalue: BindParameter[Any]) -> ColumnElement[Any] | None:
        if self.column.kind not in _CAST_KINDS:
            return bindvalue
        return sa.cast(bindvalue, self._native())


def bind_value(col: Column, value: Any) -> Any:
    """A Python or frame value of ``col`` -> the value bound for its PostgreSQL column."""
    if value is None:
        return None
    if col.kind == "datetime":
        if isinstance(value, int) and not isinstance(value, bool):
            return EPOCH + timedelta(microseconds=value)
        return to_frame_value(col, value)
    if col.kind == "date":
        if isinstance(value, str):
            return date.fromisoformat(value)
        return to_frame_value(col, value)
    if col.kind in ("decimal", "enum", "json"):
        return to_frame_value(col, value)
    return value


def _frame_column(s: pl.Series, pg_type: bytes | None) -> pl.Series:
    """A column as ADBC read it -> hubkit's form (canonical decimal text, compact JSON)."""
    if pg_type == b"numeric":
        s = s.cast(pl.String)
        if s.str.contains(_CANONICAL).fill_null(True).all():
            return s  # what hubkit wrote: PostgreSQL keeps the text's digits and scale
        return s.map_elements(
            lambda v: canonical_decimal(Decimal(v)), return_dtype=pl.String, skip_nulls=True
        )
    if pg_type in (b"jsonb", b"json"):
        return s.cast(pl.String).map_elements(
            lambda v: msgspec.json.encode(msgspec.json.decode(v)).decode(),
            return_dtype=pl.String,
            skip_nulls=True,
        )
    return s


def _hubkit_form(arrow: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """Rows as ``pgbulk`` read them -> hubkit's storage forms (see ``_frame_column``)."""
    from hubkit import pgbulk

    frame = pgbulk.to_frame(arrow)
    types = [(f.metadata or {}).get(b"POSTGRESQL:type") for f in arrow.schema]
    if not any(t in (b"numeric", b"jsonb", b"json") for t in types):
        return frame
    return pl.DataFrame([_frame_column(frame.to_series(i), t) for i, t in enumerate(types)])


class PgSession:
    """One ADBC PostgreSQL connection (autocommit off) and its one cursor."""

    def __init__(self, uri: str) -> None:
        import adbc_driver_postgresql.dbapi as pgdbapi

        try:
            self.conn: Connection = pgdbapi.connect(uri)
        except Exception as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        self.cur: Cursor = self.conn.cursor()

    def end(self, *, commit: bool) -> None:
        try:
            if commit:
                self.conn.commit()
            else:
                self.conn.rollback()
        except Exception as exc:
            raise StoreError(f"{'commit' if commit else 'rollback'} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self.cur.close()
        finally:
            self.conn.close()


class PgSessions:
    """The ADBC PostgreSQL connections of one store: a few idle ones kept, none shared
    across a fork (a child opens its own), all closed by ``close``."""

    def __init__(self, url: sa.URL) -> None:
        from hubkit import pgbulk

        self.uri = pgbulk.libpq_uri(url)
        self._lock = threading.Lock()
        self._idle: list[PgSession] = []
        self._orphans: list[PgSession] = []  # inherited over fork: never used nor closed
        self._pid = os.getpid()
        self._closed = False

    def _take(self) -> PgSession:
        with self._lock:
            if os.getpid() != self._pid:
                self._orphans += self._idle
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop()
        return PgSession(self.uri)

    def _give_back(self, session: PgSession, *, reuse: bool) -> None:
        with self._lock:
            keep = reuse and not self._closed and len(self._idle) < _IDLE_CONNECTIONS
            keep = keep and os.getpid() == self._pid
            if keep:
                self._idle.append(session)
        if not keep:
            with suppress(Exception):  # best effort: the session is being discarded
                session.close()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[PgTx]:
        """One transaction: committed after a write that succeeds, else rolled back.

        Reads end their transaction too, so no connection sits idle holding locks.
        """
        session = self._take()
        healthy = False
        try:
            try:
                yield PgTx(session)
            except BaseException:
                with suppress(Exception):  # the error that ended the transaction is raised
                    session.end(commit=False)
                raise
            session.end(commit=write)
            healthy = True
        finally:
            self._give_back(session, reuse=healthy)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._idle = self._idle, []
        for session in sessions:
            with suppress(Exception):  # best effort: nothing is pending on an idle session
                session.close()


class PgTx:
    """``Tx`` (see ``hubkit.store.engine``) on an ADBC PostgreSQL connection."""

    def __init__(self, session: PgSession) -> None:
        self.cur = session.cur
        self._ddl_locked = False

    def run(self, stmt: Executable) -> None:
        from hubkit import pgbulk

        pgbulk.execute(self.cur, stmt)

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> None:
        from hubkit import pgbulk

        if not self._ddl_locked:
            self.rows(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK)))
            self._ddl_locked = True
        pgbulk.execute(self.cur, element)

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]:
        from hubkit import pgbulk

        pgbulk.execute(self.cur, stmt)
        try:
            return list(self.cur.fetchall())
        except Exception as exc:
            raise StoreError(f"reading query results failed: {exc}") from exc

    def frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame:
        from hubkit import pgbulk

        return _hubkit_form(pgbulk.fetch_arrow(self.cur, stmt))

    def frames(self, stmt: sa.Select[Any]) -> Generator[pl.DataFrame, None, None]:
        """``frame`` as the driver streams it, batch by batch (the cursor is busy until the
        iterator is exhausted or closed)."""
        from hubkit import pgbulk

        batches = pgbulk.iter_batches(self.cur, stmt)
        try:
            for batch in batches:
                if batch.num_rows:
                    yield _hubkit_form(batch)
        finally:
            batches.close()

    def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        for row in rows:  # outbox entries: few per change
            self.run(sa.insert(table).values(**row))

    def upsert(self, plan: UpsertPlan, storage: pl.DataFrame) -> None:
        from hubkit import pgbulk

        columns = [_entity_column(c) for c in plan.table.c]
        if storage.height > DIRECT_MAX:
            pgbulk.upsert(self.cur, plan.table, pgbulk.copy_table(columns, storage))
            return
        # A small batch (a stream's): bound row by row from Arrow to one prepared statement,
        # cheaper than creating and dropping a staging table. Rows go in key order, as COPY's
        # do, so that concurrent writers lock rows in the same order.
        sql, order = _direct_sql(plan)
        rows = pgbulk.copy_table(columns, storage.sort(list(plan.key)))
        try:
            self.cur.executemany(sql, rows.select(order))
        except Exception as exc:
            raise StoreError(f"upsert into {plan.name!r} failed: {exc}") from exc

    def column_names(self, table: str) -> list[str] | None:
        cols = sa.table(
            "columns",
            sa.column("column_name"),
            sa.column("table_name"),
            sa.column("table_schema"),
            sa.column("ordinal_position"),
            schema="information_schema",
        ).c
        stmt = (
            sa.select(cols.column_name)
            .where(cols.table_name == table, cols.table_schema == sa.func.current_schema())
            .order_by(cols.ordinal_position)
        )
        names = [str(r[0]) for r in self.rows(stmt)]
        return names or None


@functools.lru_cache(maxsize=256)
def _direct_sql(plan: UpsertPlan) -> tuple[str, list[str]]:
    """``INSERT ... VALUES ($1, CAST($2 AS ...), ...) ON CONFLICT`` of a table, and the
    column order of its parameters."""
    from sqlalchemy.dialects import postgresql

    from hubkit import pgbulk

    table, key = plan.table, list(plan.key)
    names = [c.name for c in table.c]
    ins = postgresql.insert(table).values(
        {n: sa.bindparam(n, type_=table.c[n].type) for n in names}
    )
    others = [n for n in names if n not in key]
    stmt = (
        ins.on_conflict_do_update(index_elements=key, set_={n: ins.excluded[n] for n in others})
        if others
        else ins.on_conflict_do_nothing(index_elements=key)
    )
    compiled = stmt.compile(dialect=pgbulk.dialect())
    return str(compiled), list(compiled.positiontup or ())


def _entity_column(c: sa.Column[Any]) -> Column:
    if not isinstance(c.type, PgColumn):
        raise StoreError(f"column {c.name!r} is not an entity column of a PostgreSQL store")
    return c.type.column
