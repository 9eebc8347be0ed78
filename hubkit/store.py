"""The store: entity tables, per-sink sync state and the outbox in one SQL database.

``Store(url)`` opens a database (a file path or a SQLAlchemy URL; default
``default_store_url()``), ``store.table(spec)`` gives the ``TableStore`` (the DAO) of one
entity, creating its table on first use::

    with Store("data.db") as store:
        trades = store.table(hubkit.reflect(Trade, key="id"))
        trades.upsert(frame, cursor="1700000000000")   # rows + cursor in one transaction
        trades.query({"symbol": "BTCUSDT"}, order_by="time", limit=100)   # -> pl.DataFrame
        trades.get("5252c117-...")                                          # -> Trade | None

Layout. Each entity table has one column per entity column and a primary key on the
entity key. Two tables of hubkit's own sit beside them: ``hubkit_sync_state`` (one row per
sink: ``cursor``, ``last_sync``, the schema ``fingerprint`` and ``columns`` it describes,
``extra`` JSON) and ``hubkit_outbox`` (local writes waiting to be pushed:
``id``, ``sink``, ``op``, ``key``, ``payload``, ``before`` (JSON), ``created_at``,
``attempts``). How values are stored, per column kind:

==========  =================================  =========================================
kind        SQL column                         stored value
==========  =================================  =========================================
str         TEXT                               the text
int         BIGINT                             the integer
float       DOUBLE                             the float
bool        BOOLEAN                            0/1 in SQLite
decimal     TEXT                               exact decimal text (compares as text)
datetime    BIGINT                             microseconds since the epoch, UTC
date        TEXT                               ISO ``YYYY-MM-DD`` (sorts as dates)
enum        TEXT (BIGINT for int values)       ``member.value``
json        TEXT                               JSON text
==========  =================================  =========================================

Promises:

- **One transaction.** ``upsert``/``delete`` change the rows, the sink's cursor/last sync
  and its outbox entries together or not at all; ``reject`` removes an outbox entry and
  rolls its row back together.
- **Whole batches.** A batch is validated (``EntitySpec.to_frame``) before anything is
  written; a bad value raises ``ValidationError`` naming the column and nothing is stored.
  An upsert of an existing key replaces the row; a key repeated inside one batch keeps its
  last row.
- **Schema safety.** The first ``table(spec)`` records the spec's fingerprint; opening the
  table later with a spec whose columns differ raises ``StoreError`` listing the columns
  that differ. hubkit never drops or rewrites stored data to make a schema fit.
- **Shared files.** SQLite runs in WAL mode with ``synchronous=NORMAL`` and a 30 s busy
  timeout on every connection, and every write transaction starts with ``BEGIN IMMEDIATE``,
  so a notebook and a scheduled job can read and write one file at the same time without
  "database is locked" in the middle of a transaction.
- **Threads.** A ``Store`` and its ``TableStore`` objects may be used from several
  threads; calls block and must not run on an event loop thread.
- **Exit.** A store nobody closes closes its connections when it is collected or at
  interpreter exit, quietly; a call made after that (work hubkit's loop finishes at exit)
  opens a connection for itself and closes it.
- **Errors.** Database failures leave as ``StoreError`` (``__cause__`` holds the original);
  using a closed store raises ``ClosedError``.

Speed. SQLAlchemy Core builds every statement and owns other databases (rows move as
dicts through ``executemany``). For SQLite files, rows move as Arrow data through ADBC:
small batches are bound directly from Arrow (``executemany``), large ones are staged into a
temporary table with ``adbc_ingest`` in key order and merged with one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; reads come back with
``fetch_arrow_table``. The write transaction, including state and outbox statements, runs
on the ADBC connection. ``adbc_driver_sqlite`` is imported on first use because importing
it costs about a second.
"""

from __future__ import annotations

import enum
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import polars as pl
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import TypeDecorator

from hubkit.entity import Column, EntitySpec, to_frame_value, to_python
from hubkit.errors import ClosedError, HubkitError, StoreError, ValidationError
from hubkit.types import OutboxEntry, SyncState

if TYPE_CHECKING:
    from sqlalchemy.sql.base import Executable

__all__ = ["OutboxWrite", "Store", "TableStore", "default_store_url"]

STATE_TABLE: Final = "hubkit_sync_state"
OUTBOX_TABLE: Final = "hubkit_outbox"
BUSY_TIMEOUT_MS: Final = 30_000

# Batches up to this many rows are bound straight from Arrow; larger ones are staged in a
# temporary table and merged with one INSERT ... SELECT (measured crossover, 2-core box).
_DIRECT_MAX: Final = 4_096
# Keys per IN (...) list when reading or deleting by key.
_KEY_CHUNK: Final = 500
# Rows per Arrow batch the ADBC SQLite driver returns. It infers each column's type from
# the first batch, so a large first batch keeps a nullable column that starts with many
# NULLs from being typed wrongly; reads that still trip over it fall back to SQLAlchemy.
_ADBC_BATCH_ROWS: Final = 1 << 22
_IDLE_CONNECTIONS: Final = 4

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def default_store_url() -> str:
    """``sqlite:///$HUBKIT_HOME/hubkit.db`` (``HUBKIT_HOME`` defaults to ``~/.cache/hubkit``).

    Creates the directory if it does not exist.
    """
    home = Path(os.environ.get("HUBKIT_HOME") or Path.home() / ".cache" / "hubkit").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'hubkit.db').resolve()}"


def _url_of(url: str | os.PathLike[str] | sa.URL | None) -> str:
    if url is None:
        return default_store_url()
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=False)
    if isinstance(url, os.PathLike) or "://" not in url:
        return f"sqlite:///{Path(os.fspath(url)).expanduser().resolve()}"
    return url


@dataclass(frozen=True)
class OutboxWrite:
    """An outbox entry to commit together with a write: see ``TableStore.upsert``.

    ``op`` is ``"create"``, ``"update"`` or ``"remove"``; ``key`` the row's key tuple;
    ``payload`` the row as written (None for remove) and ``before`` the row before the write
    (None if it did not exist), each as a column-keyed mapping or an entity instance.
    """

    op: str
    key: tuple[Any, ...]
    payload: Mapping[str, Any] | None = None
    before: Mapping[str, Any] | None = None


class _Unset(enum.Enum):
    UNSET = 0


_UNSET: Final = _Unset.UNSET


# ---------------------------------------------------------------------------------------
# values: entity column <-> stored value


def _storage_kind(col: Column) -> pl.DataType:
    if col.kind in ("int", "datetime") or (col.kind == "enum" and col.dtype == pl.Int64):
        return pl.Int64()
    if col.kind == "float":
        return pl.Float64()
    if col.kind == "bool":
        return pl.Boolean()
    return pl.String()


def _sql_type(col: Column) -> sa.types.TypeEngine[Any]:
    storage = _storage_kind(col)
    if col.kind in ("datetime", "date", "decimal", "enum", "json"):
        return _Encoded(col)
    if storage == pl.Int64:
        return sa.BigInteger()
    if storage == pl.Float64:
        return sa.Double()
    if storage == pl.Boolean:
        return sa.Boolean()
    return sa.Text()


def _storage_value(col: Column, value: Any) -> Any:
    """A Python or frame value of ``col`` -> the value stored in SQL."""
    if value is None:
        return None
    kind = col.kind
    if kind == "datetime":
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # already microseconds
        return (to_frame_value(col, value) - _EPOCH) // _ONE_US
    if kind == "date":
        d = to_frame_value(col, value)
        return d.isoformat() if isinstance(d, date) else d
    if kind in ("decimal", "enum", "json"):
        return to_frame_value(col, value)
    return value


def _python_value(col: Column, value: Any) -> Any:
    """A stored SQL value of ``col`` -> the entity's Python value."""
    if value is None:
        return None
    if col.kind == "datetime":
        return _EPOCH + timedelta(microseconds=value)
    if col.kind == "bool":
        return bool(value)
    return to_python(col, value)


class _Encoded(TypeDecorator[Any]):
    """A column whose Python values are encoded for storage (datetime, decimal, enum ...).

    Results are left as stored; hubkit decodes whole frames at once.
    """

    impl = sa.Text
    cache_ok = True

    def __init__(self, column: Column) -> None:
        super().__init__()
        self.column = column

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        base = sa.BigInteger() if _storage_kind(self.column) == pl.Int64 else sa.Text()
        return dialect.type_descriptor(base)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _storage_value(self.column, value)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _now_us() -> int:
    return time.time_ns() // 1000


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _to_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"last_sync {value!r} is a naive datetime; pass an aware one")
    return (value - _EPOCH) // _ONE_US


# ---------------------------------------------------------------------------------------
# transactions: one protocol, an ADBC (SQLite) and a SQLAlchemy implementation


class _Tx(Protocol):
    def run(self, stmt: Executable) -> None: ...

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> None: ...

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]: ...

    def frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame: ...

    def insert_many(self, table: sa.Table, rows: list[dict[str, Any]]) -> None: ...

    def upsert(self, ts: TableStore, storage: pl.DataFrame) -> None:
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


class _AdbcSession:
    """One ADBC SQLite connection in autocommit mode (hubkit issues BEGIN/COMMIT itself).

    Its one cursor (statement) lives as long as the connection and is closed before it:
    ADBC refuses to close a connection whose statements are open.
    """

    def __init__(self, dbapi: ModuleType, path: str) -> None:
        conn = dbapi.connect(path, autocommit=True)
        try:
            cur = conn.cursor()
            try:
                cur.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(_ADBC_BATCH_ROWS)}
                )
                for pragma in _SQLITE_PRAGMAS:
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


class _Pool:
    """The idle ADBC sessions of one store, shared with the store's finalizer.

    The finalizer runs when the store is collected, or at interpreter exit for a store
    nobody closed. At exit it may run before hubkit's loop closes, and work still running
    on the loop's threads may use the store after it: so once closed, the pool keeps
    nothing and every session returned to it is closed at once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_AdbcSession] = []
        self.closed = False

    def take(self) -> _AdbcSession | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give_back(self, session: _AdbcSession, *, reuse: bool) -> None:
        with self.lock:
            keep = reuse and not self.closed and len(self.idle) < _IDLE_CONNECTIONS
            if keep:
                self.idle.append(session)
        if not keep:
            with suppress(Exception):  # best effort: the session is being discarded
                session.close()

    def forget(self) -> list[_AdbcSession]:
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


_SQLITE_PRAGMAS: Final = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",  # first: the next pragma may wait for a lock
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)


class _AdbcTx:
    def __init__(self, session: _AdbcSession, pa: ModuleType) -> None:
        self.cur = session.cur
        self.pa = pa
        self.dialect = _SQLITE

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

    def upsert(self, ts: TableStore, storage: pl.DataFrame) -> None:
        if storage.height <= _DIRECT_MAX:
            # Arrow string views need no conversion (a slice of a big frame otherwise costs
            # milliseconds to convert); ADBC binds them like any string.
            arrow = storage.to_arrow(compat_level=pl.CompatLevel.newest())
            self.cur.executemany(ts._direct_sql, arrow)
            return
        self.cur.adbc_ingest(
            ts._stage_name, storage.to_arrow(), mode="create_append", temporary=True
        )
        self.cur.execute(ts._staged_sql)
        self.cur.execute(f'DELETE FROM temp."{ts._stage_name}"')

    def column_names(self, table: str) -> list[str] | None:
        self.cur.execute("SELECT name FROM pragma_table_info(?)", (table,))
        names = [r[0] for r in self.cur.fetchall()]
        return names or None


class _SaTx:
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

    def upsert(self, ts: TableStore, storage: pl.DataFrame) -> None:
        table, key = ts.table, list(ts.spec.key)
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
            for chunk in _chunks(keys, _KEY_CHUNK):
                self.conn.execute(sa.delete(table).where(ts._key_in(chunk)))
            self.conn.execute(sa.insert(table), rows)

    def column_names(self, table: str) -> list[str] | None:
        insp = sa.inspect(self.conn)
        if not insp.has_table(table):
            return None
        return [c["name"] for c in insp.get_columns(table)]


def _postgresql() -> ModuleType:
    from sqlalchemy.dialects import postgresql

    return postgresql


_SQLITE: Final = sqlite_dialect.dialect()


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# ---------------------------------------------------------------------------------------
# the store


class Store:
    """A SQL database holding entity tables, sync state and outboxes. Thread-safe, blocking.

    ``url`` is a file path (``str`` or ``PathLike``; a SQLite file, created if missing), a
    SQLAlchemy URL, or None for ``default_store_url()``. ``fast`` chooses the Arrow/ADBC
    path for SQLite files (default: on for SQLite files, off otherwise; ``False`` forces
    plain SQLAlchemy). Use as a context manager or call ``close()``; a closed store raises
    ``ClosedError`` and cannot be reopened (create a new one).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | sa.URL | None = None,
        *,
        fast: bool | None = None,
    ) -> None:
        self.url: str = _url_of(url)
        parsed = sa.make_url(self.url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        database = parsed.database or ""
        memory = is_sqlite and (database in ("", ":memory:") or "mode=memory" in database)
        plain_file = is_sqlite and not memory and parsed.get_driver_name() == "pysqlite"
        plain_file = plain_file and not parsed.query and not database.startswith("file:")
        if fast and not plain_file:
            raise StoreError(f"the fast path needs a SQLite file, not {self.url!r}")
        self._sqlite_path: str | None = (
            str(Path(database).expanduser().resolve()) if plain_file else None
        )
        self._fast = plain_file if fast is None else fast
        kwargs: dict[str, Any] = {}
        if memory:
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        try:
            self.engine: sa.Engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url!r}: {exc}") from exc
        if is_sqlite:
            _configure_sqlite(self.engine, wal=not memory)
        self._meta = sa.MetaData()
        self._state = sa.Table(
            STATE_TABLE,
            self._meta,
            sa.Column("sink", sa.String(255), primary_key=True),
            sa.Column("cursor", sa.Text),
            sa.Column("last_sync", sa.BigInteger),  # microseconds since the epoch, UTC
            sa.Column("fingerprint", sa.Text, nullable=False),
            sa.Column("columns", sa.Text, nullable=False),  # JSON: what the fingerprint covers
            sa.Column("extra", sa.Text, nullable=False),  # JSON object
        )
        self._outbox = sa.Table(
            OUTBOX_TABLE,
            self._meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sink", sa.String(255), nullable=False),
            sa.Column("op", sa.String(16), nullable=False),
            sa.Column("key", sa.Text, nullable=False),
            sa.Column("payload", sa.Text),
            sa.Column("before", sa.Text),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sqlite_autoincrement=True,  # never reuse an id a pusher may still hold
        )
        self._outbox_index = sa.Index(
            "ix_hubkit_outbox_sink_id", self._outbox.c.sink, self._outbox.c.id
        )
        self._lock = threading.Lock()
        self._tables: dict[str, TableStore] = {}
        self._closed = False
        self._pid = os.getpid()
        self._pool = _Pool()
        self._orphans: list[_AdbcSession] = []  # inherited over fork: never used nor closed
        self._adbc: tuple[ModuleType, ModuleType] | None = None
        # Close idle connections when the store is collected, or at exit if nobody closed it
        # (ADBC complains when a connection is left for the garbage collector at exit).
        self._finalizer = weakref.finalize(self, self._pool.close)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("fast" if self._fast else "sqlalchemy")
        return f"<hubkit.Store {self.url!r} ({state})>"

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection. Idempotent; later calls on the store raise ClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Directly, not through the finalizer: after the finalizers ran at exit, calling one
        # does nothing, and a store can still be used (and closed) after that.
        self._finalizer.detach()
        self._pool.close()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"store {self.url!r} is closed")

    # -- tables -------------------------------------------------------------------------

    def table(self, spec: EntitySpec, *, name: str | None = None) -> TableStore:
        """The ``TableStore`` for ``spec`` (table ``name``, default ``spec.table``).

        Creates the table on first use and records the spec's fingerprint; raises
        ``StoreError`` listing the differing columns if the table was stored for a different
        definition. ``name`` is also the sink name for sync state and the outbox.
        """
        self._check_open()
        name = name or spec.table
        if name in (STATE_TABLE, OUTBOX_TABLE):
            raise StoreError(f"table name {name!r} is reserved for hubkit")
        with self._lock:
            known = self._tables.get(name)
        if known is not None and known.spec.fingerprint == spec.fingerprint:
            return known if known.spec == spec else TableStore(self, spec, name)
        ts = TableStore(self, spec, name)
        with self._translate(f"opening table {name!r}"), self._write() as tx:
            tx.ddl(CreateTable(self._state, if_not_exists=True))
            tx.ddl(CreateTable(self._outbox, if_not_exists=True))
            tx.ddl(CreateIndex(self._outbox_index, if_not_exists=True))
            st = self._state.c
            found = tx.rows(sa.select(st.fingerprint, st.columns).where(st.sink == name))
            existing = tx.column_names(name)
            if found:
                fingerprint, described = found[0]
                if fingerprint != spec.fingerprint:
                    raise StoreError(_schema_diff(name, msgspec.json.decode(described), spec))
            elif existing is not None and sorted(existing) != sorted(spec.names):
                raise StoreError(
                    _schema_diff(name, {"columns": [[c, "?", "?"] for c in existing]}, spec)
                )
            if existing is None:
                tx.ddl(CreateTable(ts.table, if_not_exists=True))
            if not found:
                tx.run(
                    sa.insert(self._state).values(
                        sink=name,
                        cursor=None,
                        last_sync=None,
                        fingerprint=spec.fingerprint,
                        columns=_json(spec.describe()),
                        extra="{}",
                    )
                )
        with self._lock:
            self._tables[name] = ts
        return ts

    # -- sessions -----------------------------------------------------------------------

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Third-party database errors -> StoreError (hubkit's own errors pass through)."""
        try:
            yield
        except HubkitError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{what} failed: {exc}") from exc
        except Exception as exc:
            if self._adbc is not None and isinstance(exc, self._adbc[0].Error):
                raise StoreError(f"{what} failed: {exc}") from exc
            raise

    def _modules(self) -> tuple[ModuleType, ModuleType]:
        if self._adbc is None:
            import adbc_driver_sqlite.dbapi as dbapi  # ~1 s: only when a SQLite store is used
            import pyarrow

            self._adbc = (dbapi, pyarrow)
        return self._adbc

    @contextmanager
    def _session(self) -> Iterator[_AdbcSession]:
        self._check_open()
        dbapi, _ = self._modules()
        assert self._sqlite_path is not None
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's connections are not ours
                self._orphans += self._pool.forget()
                self._pid = os.getpid()
                self.engine.dispose(close=False)
        session = self._pool.take()
        if session is None:
            session = _AdbcSession(dbapi, self._sqlite_path)
        healthy = False
        try:
            yield session
            healthy = True
        finally:
            self._pool.give_back(session, reuse=healthy)

    @contextmanager
    def _read(self) -> Iterator[_Tx]:
        """A connection for reads (each statement sees the latest committed data)."""
        self._check_open()
        if self._fast:
            with self._session() as s:
                yield _AdbcTx(s, self._modules()[1])
        else:
            with self.engine.connect() as conn:
                yield _SaTx(conn)

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        self._check_open()
        if not self._fast:
            with self.engine.connect() as conn:
                conn.execution_options(hubkit_write=True)
                with conn.begin():
                    yield _SaTx(conn)
            return
        with self._session() as s:
            s.cur.execute("BEGIN IMMEDIATE")
            try:
                yield _AdbcTx(s, self._modules()[1])
            except BaseException:
                s.cur.execute("ROLLBACK")
                raise
            s.cur.execute("COMMIT")

    def _read_frame(self, stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame:
        try:
            with self._read() as tx:
                return tx.frame(stmt, schema)
        except Exception as exc:
            # The ADBC driver types columns from the first batch; a column that is NULL for
            # all of it and holds text later cannot be read that way. SQLAlchemy can.
            if not (self._fast and "Type mismatch" in str(exc)):
                raise
        with self.engine.connect() as conn:
            return _SaTx(conn).frame(stmt, schema)


def _configure_sqlite(engine: sa.Engine, *, wal: bool) -> None:
    """Pragmas on every pysqlite connection, and ``BEGIN IMMEDIATE`` for hubkit's writes."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS if wal else _SQLITE_PRAGMAS[:1]:
                cur.execute(pragma)
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("hubkit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _schema_diff(name: str, stored: Mapping[str, Any], spec: EntitySpec) -> str:
    old = {c[0]: (c[1], c[2]) for c in stored.get("columns", [])}
    new = {c[0]: (c[1], c[2]) for c in spec.describe()["columns"]}
    parts = [f"{c} (stored, not in {spec.cls.__name__})" for c in old if c not in new]
    parts += [f"{c} (not stored)" for c in new if c not in old]
    for c in new:
        if c in old and old[c] != new[c] and "?" not in old[c]:
            (ok, on), (nk, nn) = old[c], new[c]
            parts.append(
                f"{c} (stored {ok}{' nullable' if on else ''}, now {nk}{' nullable' if nn else ''})"
            )
    if "key" in stored and list(stored["key"]) != list(spec.key):
        parts.append(f"key (stored {tuple(stored['key'])}, now {spec.key})")
    return (
        f"table {name!r} holds rows of a different definition than {spec.cls.__name__}: "
        f"{'; '.join(parts) or 'columns differ'}. hubkit does not rewrite stored data: "
        "migrate the table, or use another table name"
    )


class TableStore:
    """The DAO of one entity table in a ``Store`` (get it from ``Store.table``).

    ``name`` is the table name and the sink name for sync state and the outbox; ``table``
    is the SQLAlchemy ``Table`` (use its columns in ``query(where=...)`` expressions).
    Every frame returned has exactly ``spec.schema``. Thread-safe; calls block.
    """

    def __init__(self, store: Store, spec: EntitySpec, name: str) -> None:
        self.store = store
        self.spec = spec
        self.name = name
        self.table = sa.Table(
            name,
            sa.MetaData(),
            *[
                sa.Column(
                    c.name,
                    _sql_type(c),
                    primary_key=c.name in spec.key,
                    nullable=c.nullable,
                    autoincrement=False,
                )
                for c in spec.columns
            ],
        )
        self._storage_schema = pl.Schema({c.name: _storage_kind(c) for c in spec.columns})
        self._needs_storage = any(c.kind in ("datetime", "date") for c in spec.columns)
        self._stage_name = f"hubkit_stage__{name}"
        self._direct_sql, self._staged_sql = _upsert_sql(self)

    def __repr__(self) -> str:
        return f"<hubkit.TableStore {self.name!r} of {self.spec.cls.__name__}>"

    # -- conversions --------------------------------------------------------------------

    # Both conversions use Series casts, not expressions: an expression costs a query plan
    # (~0.2 ms or more), which is most of the cost of a small stream batch.

    def _storage(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A frame of ``spec.schema`` -> the values as stored (datetimes in µs, ISO dates)."""
        if not self._needs_storage:
            return frame
        return pl.DataFrame([_to_storage(c, frame.get_column(c.name)) for c in self.spec.columns])

    def _decode(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Stored values, as the driver typed them -> a frame of ``spec.schema``."""
        try:
            return pl.DataFrame(
                [_from_storage(c, raw.get_column(c.name)) for c in self.spec.columns]
            )
        except pl.exceptions.PolarsError as exc:
            raise StoreError(
                f"table {self.name!r} holds values hubkit did not write: {exc}"
            ) from exc

    def _key_in(self, keys: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
        cols = [self.table.c[k] for k in self.spec.key]
        if len(cols) == 1:
            return cols[0].in_([k[0] for k in keys])
        return sa.tuple_(*cols).in_(list(keys))

    def _keys(self, keys: Iterable[Any]) -> list[tuple[Any, ...]]:
        if isinstance(keys, pl.DataFrame):
            return keys.select(list(self.spec.key)).rows()
        if isinstance(keys, str | bytes | Mapping | self.spec.cls):
            keys = [keys]
        return [self.spec.key_of(k) for k in keys]

    def _outbox_row(self, w: OutboxWrite, now: int) -> dict[str, Any]:
        if w.op not in ("create", "update", "remove"):
            raise ValidationError(f"outbox op must be create/update/remove, not {w.op!r}")
        key = self.spec.key_of(w.key)
        key_cols = [self.spec.column(k) for k in self.spec.key]
        return {
            "sink": self.name,
            "op": w.op,
            "key": _json([_storage_value(c, v) for c, v in zip(key_cols, key, strict=True)]),
            "payload": None if w.payload is None else _json(self._encode_row(w.payload)),
            "before": None if w.before is None else _json(self._encode_row(w.before)),
            "created_at": now,
            "attempts": 0,
        }

    def _encode_row(self, row: Any) -> dict[str, Any]:
        if isinstance(row, self.spec.cls):
            row = self.spec.to_row(row)
        return {c.name: _storage_value(c, row[c.name]) for c in self.spec.columns if c.name in row}

    def _decode_row(self, text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        raw = msgspec.json.decode(text)
        cols = {c.name: c for c in self.spec.columns}
        return {k: _python_value(cols[k], v) for k, v in raw.items() if k in cols}

    # -- writes -------------------------------------------------------------------------

    def upsert(
        self,
        rows: Iterable[Any] | pl.DataFrame,
        *,
        cursor: str | None = None,
        last_sync: datetime | None = None,
        outbox: Sequence[OutboxWrite] = (),
    ) -> pl.DataFrame:
        """Insert or replace rows by key; returns the normalised frame that was written.

        ``rows``: entities, dict rows or a frame (see ``EntitySpec.to_frame``). ``cursor``
        and ``last_sync`` (aware datetime), when given, update the sink's sync state and
        ``outbox`` entries are added, all in the same transaction as the rows. A key that
        appears twice in the batch keeps its last row. Raises ``ValidationError`` (nothing
        written) for a bad value, ``StoreError`` if the database fails (nothing written).
        """
        frame = self.spec.to_frame(rows)
        key = list(self.spec.key)
        if frame.height > _DIRECT_MAX:
            # Rows in key order turn random B-tree inserts into appends (~3x faster for 1M
            # rows); in key order, a repeated key is also cheap to spot.
            ordered = frame.sort(key, maintain_order=True)
            repeated = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in key]).any()
            if ordered.select(repeated).item():
                frame = frame.unique(subset=key, keep="last", maintain_order=True)
                ordered = ordered.unique(subset=key, keep="last", maintain_order=True)
            storage = self._storage(ordered)
        else:
            # A Python set is quicker than Polars for a few thousand keys (and than Polars
            # on a small slice of a large frame, which can cost milliseconds).
            cols = [frame.get_column(k).to_list() for k in key]
            distinct = len(set(cols[0] if len(cols) == 1 else zip(*cols, strict=True)))
            if frame.height > 1 and distinct < frame.height:
                frame = frame.unique(subset=key, keep="last", maintain_order=True)
            storage = self._storage(frame)
        now = _now_us()
        entries = [self._outbox_row(w, now) for w in outbox]
        sync = _to_us(last_sync)
        with self.store._translate(f"upsert into {self.name!r}"), self.store._write() as tx:
            if storage.height:
                tx.upsert(self, storage)
            if cursor is not None or last_sync is not None:
                values: dict[str, Any] = {}
                if cursor is not None:
                    values["cursor"] = cursor
                if last_sync is not None:
                    values["last_sync"] = sync
                tx.run(self._state_update(values))
            tx.insert_many(self.store._outbox, entries)
        return frame

    def delete(
        self, keys: Iterable[Any] | Any, *, outbox: Sequence[OutboxWrite] = ()
    ) -> pl.DataFrame:
        """Delete rows by key; returns the rows that were deleted (missing keys are skipped).

        ``keys``: key values, key tuples, entities, rows, or a frame with the key columns; a
        single str/entity/row is one key. ``outbox`` entries commit in the same transaction.
        """
        wanted = self._keys(keys)
        now = _now_us()
        entries = [self._outbox_row(w, now) for w in outbox]
        if not wanted and not entries:
            return self.spec.empty()
        parts: list[pl.DataFrame] = []
        with self.store._translate(f"delete from {self.name!r}"), self.store._write() as tx:
            for chunk in _chunks(wanted, _KEY_CHUNK):
                cond = self._key_in(chunk)
                parts.append(tx.frame(sa.select(self.table).where(cond), self._storage_schema))
                tx.run(sa.delete(self.table).where(cond))
            tx.insert_many(self.store._outbox, entries)
        return self._frames(parts)

    def _frames(self, raws: list[pl.DataFrame]) -> pl.DataFrame:
        decoded = [self._decode(r) for r in raws if r.height]
        return pl.concat(decoded) if decoded else self.spec.empty()

    def reject(self, entry: OutboxEntry) -> pl.DataFrame:
        """Undo a refused local write in one transaction.

        Deletes the outbox entry and restores the row to ``entry.before`` (deleting it when
        ``before`` is None). Returns the restored rows (empty when the row was deleted).
        """
        restored = self.spec.empty() if entry.before is None else self.spec.to_frame([entry.before])
        with self.store._translate(f"reject in {self.name!r}"), self.store._write() as tx:
            ob = self.store._outbox
            tx.run(sa.delete(ob).where(ob.c.id == entry.id, ob.c.sink == self.name))
            if entry.before is None:
                tx.run(sa.delete(self.table).where(self._key_in([self.spec.key_of(entry.key)])))
            else:
                tx.upsert(self, self._storage(restored))
        return restored

    # -- reads --------------------------------------------------------------------------

    def get(self, key: Any) -> Any | None:
        """The entity with this key (value, tuple, row or entity), or None."""
        found = self.get_rows([self.spec.key_of(key)])
        return self.spec.from_frame(found)[0] if found.height else None

    def get_rows(self, keys: Iterable[Any]) -> pl.DataFrame:
        """The stored rows for these keys (those that exist), e.g. for "before" images."""
        wanted = self._keys(keys)
        with self.store._translate(f"read from {self.name!r}"):
            raws = [
                self.store._read_frame(
                    sa.select(self.table).where(self._key_in(chunk)), self._storage_schema
                )
                for chunk in _chunks(wanted, _KEY_CHUNK)
            ]
        return self._frames(raws)

    def query(
        self,
        where: Mapping[str, Any] | ColumnElement[bool] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Rows matching ``where``, as a frame.

        ``where``: a mapping of column name to a value (equality; None matches NULL) or to
        a list/tuple/set of values (IN), all ANDed; or a SQLAlchemy expression over
        ``self.table.c`` (values are encoded for storage, e.g. datetimes). ``order_by``
        columns sort ascending unless ``descending``; ``limit`` caps the row count. Without
        ``order_by`` the order is unspecified.
        """
        stmt = sa.select(self.table)
        if isinstance(where, Mapping):
            for name, value in where.items():
                col = self.table.c[self.spec.column(name).name]
                if isinstance(value, list | tuple | set | frozenset):
                    stmt = stmt.where(col.in_(list(value)))
                elif value is None:
                    stmt = stmt.where(col.is_(None))
                else:
                    stmt = stmt.where(col == value)
        elif where is not None:
            stmt = stmt.where(where)
        if order_by is not None:
            names = [order_by] if isinstance(order_by, str) else list(order_by)
            cols = [self.table.c[self.spec.column(n).name] for n in names]
            stmt = stmt.order_by(*[c.desc() if descending else c.asc() for c in cols])
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.store._translate(f"query on {self.name!r}"):
            raw = self.store._read_frame(stmt, self._storage_schema)
        return self._decode(raw)

    def read_all(self) -> pl.DataFrame:
        """Every row, fast (Arrow end to end on SQLite); order unspecified."""
        with self.store._translate(f"read from {self.name!r}"):
            raw = self.store._read_frame(sa.select(self.table), self._storage_schema)
        return self._decode(raw)

    def count(self) -> int:
        """The number of stored rows."""
        with self.store._translate(f"count {self.name!r}"), self.store._read() as tx:
            return int(tx.rows(sa.select(sa.func.count()).select_from(self.table))[0][0])

    # -- sync state ---------------------------------------------------------------------

    def _state_update(self, values: Mapping[str, Any]) -> sa.Update:
        st = self.store._state
        return sa.update(st).where(st.c.sink == self.name).values(**values)

    def state(self) -> SyncState:
        """The sink's stored sync state (cursor, last sync, fingerprint, extra)."""
        st = self.store._state.c
        stmt = sa.select(st.cursor, st.last_sync, st.fingerprint, st.extra).where(
            st.sink == self.name
        )
        with self.store._translate(f"read state of {self.name!r}"), self.store._read() as tx:
            found = tx.rows(stmt)
        if not found:
            return SyncState()
        cursor, last_sync, fingerprint, extra = found[0]
        return SyncState(
            cursor=cursor,
            last_sync=_from_us(last_sync),
            fingerprint=fingerprint,
            extra=msgspec.json.decode(extra) if extra else {},
        )

    def set_state(
        self,
        *,
        cursor: str | _Unset | None = _UNSET,
        last_sync: datetime | _Unset | None = _UNSET,
        extra: Mapping[str, Any] | _Unset = _UNSET,
    ) -> None:
        """Change the given parts of the sync state (None clears cursor/last_sync)."""
        values: dict[str, Any] = {}
        if not isinstance(cursor, _Unset):
            values["cursor"] = cursor
        if not isinstance(last_sync, _Unset):
            values["last_sync"] = _to_us(last_sync)
        if not isinstance(extra, _Unset):
            try:
                values["extra"] = _json(dict(extra))
            except (TypeError, msgspec.EncodeError) as exc:
                raise ValidationError(f"state extra is not JSON-encodable: {exc}") from exc
        if not values:
            return
        with self.store._translate(f"set state of {self.name!r}"), self.store._write() as tx:
            tx.run(self._state_update(values))

    # -- outbox -------------------------------------------------------------------------

    def outbox_pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Outbox entries of this sink, oldest first (at most ``limit``)."""
        ob = self.store._outbox.c
        stmt = (
            sa.select(ob.id, ob.op, ob.key, ob.payload, ob.before, ob.created_at, ob.attempts)
            .where(ob.sink == self.name)
            .order_by(ob.id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.store._translate(f"read outbox of {self.name!r}"), self.store._read() as tx:
            found = tx.rows(stmt)
        key_cols = [self.spec.column(k) for k in self.spec.key]
        out = []
        for id_, op, key, payload, before, created_at, attempts in found:
            raw_key = msgspec.json.decode(key)
            out.append(
                OutboxEntry(
                    id=int(id_),
                    op=op,
                    key=tuple(_python_value(c, v) for c, v in zip(key_cols, raw_key, strict=True)),
                    payload=self._decode_row(payload),
                    before=self._decode_row(before),
                    created_at=_EPOCH + timedelta(microseconds=created_at),
                    attempts=int(attempts),
                )
            )
        return out

    def outbox_done(self, ids: Sequence[int]) -> None:
        """Remove pushed entries."""
        self._outbox_change(ids, None)

    def outbox_bump(self, ids: Sequence[int]) -> None:
        """Count one more failed push attempt for these entries."""
        self._outbox_change(ids, {"attempts": self.store._outbox.c.attempts + 1})

    def _outbox_change(self, ids: Sequence[int], values: Mapping[str, Any] | None) -> None:
        if not ids:
            return
        ob = self.store._outbox
        with self.store._translate(f"outbox of {self.name!r}"), self.store._write() as tx:
            for chunk in _chunks(list(ids), _KEY_CHUNK):
                cond = sa.and_(ob.c.sink == self.name, ob.c.id.in_(list(chunk)))
                if values is None:
                    tx.run(sa.delete(ob).where(cond))
                else:
                    tx.run(sa.update(ob).where(cond).values(**values))

    def outbox_count(self) -> int:
        """The number of entries waiting in this sink's outbox."""
        ob = self.store._outbox.c
        stmt = sa.select(sa.func.count()).where(ob.sink == self.name)
        with self.store._translate(f"count outbox of {self.name!r}"), self.store._read() as tx:
            return int(tx.rows(stmt)[0][0])


def _to_storage(c: Column, s: pl.Series) -> pl.Series:
    if c.kind == "datetime":
        return s.cast(pl.Int64)  # Datetime("us", "UTC") is µs since the epoch underneath
    if c.kind == "date":
        return s.cast(pl.String)  # ISO YYYY-MM-DD
    return s


def _from_storage(c: Column, s: pl.Series) -> pl.Series:
    if c.kind == "bool":
        return s.cast(pl.Boolean)  # SQLite hands booleans back as integers
    if c.kind == "datetime":
        return s.cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    if c.kind == "date":
        return s.cast(pl.String).str.to_date("%Y-%m-%d")
    return s.cast(c.dtype)


def _upsert_sql(ts: TableStore) -> tuple[str, str]:
    """(direct, staged) SQLite upsert statements for ``ts``'s table."""
    table, key = ts.table, list(ts.spec.key)
    names = [c.name for c in ts.spec.columns]
    others = [n for n in names if n not in key]

    def conflict(ins: Any) -> Any:
        if not others:
            return ins.on_conflict_do_nothing(index_elements=key)
        return ins.on_conflict_do_update(
            index_elements=key, set_={n: ins.excluded[n] for n in others}
        )

    direct = sqlite_dialect.insert(table).values(
        {n: sa.bindparam(f"p{i}") for i, n in enumerate(names)}
    )
    compiled = conflict(direct).compile(dialect=_SQLITE)
    assert list(compiled.positiontup or ()) == [f"p{i}" for i in range(len(names))]
    stage = sa.Table(
        ts._stage_name,
        sa.MetaData(),
        *[sa.Column(n, sa.Text) for n in names],
        schema="temp",
    )
    # SQLite needs a WHERE in INSERT ... SELECT ... ON CONFLICT to parse; true() gives one.
    staged = sqlite_dialect.insert(table).from_select(names, sa.select(*stage.c).where(sa.true()))
    return str(compiled), str(conflict(staged).compile(dialect=_SQLITE))
