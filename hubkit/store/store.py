"""``Store``: open and close a database, check and create entity tables (see ``hubkit.store``)."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from hubkit.entity import Column, EntitySpec
from hubkit.errors import (
    ClosedError,
    HubkitError,
    ReadOnlyStoreError,
    SchemaChangeError,
    StoreError,
)
from hubkit.indexes import IndexSpec
from hubkit.sqlite_guard import SqliteGuard
from hubkit.store import changelog
from hubkit.store.checks import (
    file_access,
    probe,
    readonly_target,
    refusal,
    schema_diff,
    store_error,
    stored_table,
)
from hubkit.store.codec import json_text, sql_type
from hubkit.store.engine import (
    BUSY_TIMEOUT_MS,
    OUTBOX_TABLE,
    STATE_TABLE,
    AdbcSession,
    AdbcTx,
    Pool,
    SaTx,
    Tx,
    configure_sqlite,
    sqlite_pragmas,
)
from hubkit.store.evolve_apply import created, reconcile
from hubkit.store.evolve_ddl import HISTORY_TABLE
from hubkit.store.indexing import add_missing_indexes, wanted_indexes
from hubkit.store.migrate import Migration, drop_column, drop_copy, history, migrate
from hubkit.store.outbox import bookkeeping_tables
from hubkit.store.pg import PgColumn, PgSessions, is_postgresql, postgresql_url
from hubkit.store.table import TableStore


def default_store_url() -> str:
    """``sqlite:///<default home>/hubkit.db``: ``$HUBKIT_HOME``, else the platform's cache
    folder (``$XDG_CACHE_HOME/hubkit`` on Linux; see ``hubkit.home``).

    Creates the directory if it does not exist.
    """
    from hubkit.home import default_home

    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'hubkit.db').resolve()}"


def store_url(url: str | os.PathLike[str] | sa.URL | None) -> str:
    """The canonical URL of a store argument (a path becomes an absolute SQLite URL;
    ``postgresql://`` names psycopg's driver: ``postgresql+psycopg://``)."""
    if url is None:
        return default_store_url()
    if isinstance(url, os.PathLike) or (isinstance(url, str) and "://" not in url):
        return f"sqlite:///{Path(os.fspath(url)).expanduser().resolve()}"
    parsed = sa.make_url(url) if isinstance(url, sa.URL) else None
    if parsed is None and isinstance(url, str) and url.startswith(("postgresql:", "postgres:")):
        parsed = sa.make_url(url)
    if parsed is None:
        return str(url)
    return postgresql_url(parsed).render_as_string(hide_password=False)


class Store:
    """A SQL database holding entity tables, sync state and outboxes. Thread-safe, blocking.

    ``url`` is a file path (``str`` or ``PathLike``; a SQLite file, created if missing), a
    SQLAlchemy URL (``postgresql://user:password@host/db`` for PostgreSQL), or None for
    ``default_store_url()``. ``fast`` chooses the Arrow/ADBC path for SQLite files and
    PostgreSQL (default: on for those, off otherwise; ``False`` forces plain SQLAlchemy).
    Use as a context manager or call ``close()``; a closed store raises ``ClosedError`` and
    cannot be reopened (create a new one). ``busy_timeout``: how long
    (seconds) a SQLite write waits for another process's lock before it fails (default 30).

    A SQLite path is checked first: a missing folder, a folder, or a new file in a folder
    that cannot be written raise ``StorePathError``. A file (or folder) hubkit may not write
    to is opened read-only, leaving no ``-wal``/``-shm`` files behind; writes then raise
    ``ReadOnlyStoreError``. A file that is not a SQLite database, or is damaged, raises
    ``CorruptStoreError``; all three name the file (see ``hubkit.store.checks``).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | sa.URL | None = None,
        *,
        fast: bool | None = None,
        busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        self.url: str = store_url(url)
        parsed = sa.make_url(self.url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        database = parsed.database or ""
        memory = is_sqlite and (database in ("", ":memory:") or "mode=memory" in database)
        plain_file = is_sqlite and not memory and parsed.get_driver_name() == "pysqlite"
        plain_file = plain_file and not parsed.query and not database.startswith("file:")
        postgres = is_postgresql(parsed)
        if fast and not (plain_file or postgres):
            raise StoreError(f"the fast path needs a SQLite file or PostgreSQL, not {self.url!r}")
        if postgres and fast is False:
            raise StoreError("a PostgreSQL store always uses ADBC; fast=False is for SQLite")
        self._sqlite_path: str | None = (
            str(Path(database).expanduser().resolve()) if plain_file else None
        )
        self._fast = (plain_file or postgres) if fast is None else fast
        self._pg: PgSessions | None = PgSessions(parsed) if postgres and self._fast else None
        self._native = postgres  # entity columns of PostgreSQL's own types (hubkit.store.pg)
        self._access = file_access(self._sqlite_path) if self._sqlite_path is not None else None
        readonly = self._access is not None and self._access.readonly
        # What connections open: the file, or a URI that reads it without writing beside it.
        self._target = self._sqlite_path or ""
        if readonly:
            self._target = readonly_target(self._target)
        pragmas = sqlite_pragmas(round(busy_timeout * 1000))
        self._pragmas = pragmas[:1] if readonly else pragmas  # no WAL switch
        self._probed = False  # whether the file was checked before hubkit first changed it
        kwargs: dict[str, Any] = {}
        if memory:
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        elif self._sqlite_path is not None:
            kwargs = {"poolclass": NullPool}  # no connection outlives its guarded use
            if readonly:
                target = self._target
                kwargs["creator"] = lambda: sqlite3.connect(
                    target, uri=True, check_same_thread=False
                )
        try:
            self.engine: sa.Engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url!r}: {exc}") from exc
        if is_sqlite:
            configure_sqlite(self.engine, wal=not memory and not readonly, pragmas=self._pragmas)
        self.state_table, self.outbox_table, self._outbox_index = bookkeeping_tables()
        self._lock = threading.Lock()
        self._tables: dict[str, TableStore] = {}
        self._indexed: set[tuple[str, str]] = set()  # (table, index) known to exist
        self._closed = False
        self._pid = os.getpid()
        self._pool = Pool()
        self._orphans: list[AdbcSession] = []  # inherited over fork: never used nor closed
        self._adbc: tuple[ModuleType, ModuleType] | None = None
        # Close idle connections when the store is collected, or at exit if nobody closed it
        # (ADBC complains when a connection is left for the garbage collector at exit).
        # One idle connection of each SQLite library on the file while the store uses it,
        # closed after the store's own (see hubkit.sqlite_guard).
        self._guard = SqliteGuard(self._target, self._pragmas)
        pg_close = self._pg.close if self._pg is not None else _nothing
        self._finalizer = weakref.finalize(self, self._guard.close, self._pool.close, pg_close)

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
        pg_close = self._pg.close if self._pg is not None else _nothing
        self._guard.close(self._pool.close, pg_close, self.engine.dispose)  # guard last

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

    def _sql_type(self, column: Column) -> sa.types.TypeEngine[Any]:
        """The SQL type of an entity column in this store (native types on PostgreSQL)."""
        return PgColumn(column) if self._native else sql_type(column)

    def table(
        self, spec: EntitySpec, *, name: str | None = None, indexes: Iterable[IndexSpec] = ()
    ) -> TableStore:
        """The ``TableStore`` for ``spec`` (table ``name``, default ``spec.table``).

        Creates the table on first use and records the spec's fingerprint. A table stored
        for an earlier definition is evolved when that is safe (new Optional or defaulted
        fields, reordered fields, removed fields kept, widenings: see
        ``hubkit.store.evolve``); any other difference raises ``SchemaChangeError`` (a
        ``StoreError``) naming each difference and the ``migrate`` call that rewrites the
        table. ``name`` is also the sink name for sync state and the outbox.
        ``indexes``: secondary indexes (column names or tuples of them) wanted besides those
        the entity declares (``hubkit.index``); they are created with the table, and added
        to an existing table that lacks them (see ``hubkit.store.indexing``). An index on
        a column the table lacks raises ``SchemaError`` before anything is written.
        """
        self._check_open()
        name = name or spec.table
        if name in (STATE_TABLE, OUTBOX_TABLE, HISTORY_TABLE):
            raise StoreError(f"table name {name!r} is reserved for hubkit")
        with self._lock:
            known = self._tables.get(name)
        if known is not None and known.spec.fingerprint == spec.fingerprint:
            ts = known if known.spec == spec else TableStore(self, spec, name)
            wanted = self._unknown_indexes(ts, indexes)
            if wanted:
                with self._translate(f"indexing table {name!r}"), self._write() as tx:
                    add_missing_indexes(tx, ts.table, wanted)
                self._indexed.update((name, str(ix.name)) for ix in wanted)
            return ts
        ts = TableStore(self, spec, name)
        wanted = self._unknown_indexes(ts, indexes)
        access = self._access
        readonly = access is not None and access.readonly
        what = f"opening table {name!r}"
        refused: str | None = None
        # An existing file is checked before hubkit first changes it (switching it to WAL).
        if access is not None and not readonly and not self._probed and os.path.exists(access.path):
            with self._translate(what):
                probe(access.path, name, spec, self.state_table)
        with self._translate(what), self._read() if readonly else self._write() as tx:
            if not readonly:
                tx.ddl(CreateTable(self.state_table, if_not_exists=True))
                tx.ddl(CreateTable(self.outbox_table, if_not_exists=True))
                tx.ddl(CreateIndex(self._outbox_index, if_not_exists=True))
                changelog.ensure(tx, postgresql=self.engine.dialect.name == "postgresql")
            stored = stored_table(tx, name, self.state_table)
            if stored.state is not None and stored.columns is not None and not readonly:
                # A table hubkit recorded: evolved in place, or refused with the migration.
                fingerprint, recorded = stored.state
                refused = reconcile(
                    tx,
                    self.engine.dialect,
                    self.state_table,
                    self.url,
                    name,
                    spec,
                    fingerprint,
                    json_text(recorded),
                    self._sql_type if self._native else None,
                )
            else:
                problem = refusal(name, spec, stored)
                if problem is None and stored.state is not None and stored.columns is not None:
                    fingerprint, recorded = stored.state  # read-only: nothing can evolve
                    if fingerprint != spec.fingerprint:
                        problem = schema_diff(name, recorded, spec)
                if problem is not None:
                    raise StoreError(problem)
            described = json_text(spec.describe())
            if stored.columns is None:
                if access is not None and readonly:
                    raise ReadOnlyStoreError(
                        f"store {access.path} is open read-only ({access.reason}) and has "
                        f"no table {name!r} to read",
                        path=access.path,
                    )
                tx.ddl(CreateTable(ts.table, if_not_exists=True))
                described = created(tx, self.state_table, spec, name)
            if refused is None and not readonly:
                add_missing_indexes(tx, ts.table, wanted)
            if stored.state is None and not readonly:
                tx.run(
                    sa.insert(self.state_table).values(
                        sink=name,
                        cursor=None,
                        last_sync=None,
                        fingerprint=spec.fingerprint,
                        columns=described,
                        extra="{}",
                    )
                )
        if refused is not None:
            raise SchemaChangeError(refused)
        with self._lock:
            self._tables[name] = ts
            self._probed = True
            if not readonly:
                self._indexed.update((name, str(ix.name)) for ix in wanted)
        return ts

    # -- schema changes (see hubkit.store.migrate) ---------------------------------------

    def migrate(
        self, spec: EntitySpec, *, name: str | None = None, fill: Mapping[str, Any] | None = None
    ) -> Migration:
        """Rewrite table ``name`` (default ``spec.table``) for ``spec`` in one transaction,
        keeping the old table as a copy (see ``hubkit.store.migrate.migrate``)."""
        self._check_open()
        done = migrate(self, spec, name, fill)
        with self._lock:
            self._tables.pop(done.table, None)
        return done

    def drop_column(self, table: str, column: str) -> None:
        """Delete a column kept after its field was removed from the dataclass, and its data."""
        self._check_open()
        drop_column(self, table, column)

    def drop_copy(self, copy: str) -> None:
        """Delete the copy of a table that ``migrate`` kept (``Migration.copy``)."""
        self._check_open()
        drop_copy(self, copy)

    def schema_history(self, table: str | None = None) -> pl.DataFrame:
        """Every recorded schema change (when, table, what, detail), oldest first."""
        self._check_open()
        return history(self, table)

    def _unknown_indexes(self, ts: TableStore, indexes: Iterable[IndexSpec]) -> list[sa.Index]:
        """The indexes ``ts`` should have that this store has not yet seen to exist."""
        wanted = wanted_indexes(ts.table, ts.spec, indexes)
        with self._lock:
            return [ix for ix in wanted if (ts.name, str(ix.name)) not in self._indexed]

    # -- sessions -----------------------------------------------------------------------

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Third-party database errors -> StoreError (hubkit's own errors pass through)."""
        try:
            yield
        except HubkitError as exc:
            cause = exc.__cause__
            if type(exc) is StoreError and cause is not None:  # e.g. the guard's open failed
                better = store_error(what, cause, self._sqlite_path)
                if type(better) is not StoreError:
                    raise better from cause
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise store_error(what, exc, self._sqlite_path) from exc
        except Exception as exc:
            if self._adbc is not None and isinstance(exc, self._adbc[0].Error):
                raise store_error(what, exc, self._sqlite_path) from exc
            raise

    def _modules(self) -> tuple[ModuleType, ModuleType]:
        if self._adbc is None:
            import adbc_driver_sqlite.dbapi as dbapi  # ~1 s: only when a SQLite store is used
            import pyarrow

            self._adbc = (dbapi, pyarrow)
        return self._adbc

    @contextmanager
    def _session(self) -> Iterator[AdbcSession]:
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
            session = AdbcSession(dbapi, self._target, self._pragmas)
        healthy = False
        try:
            yield session
            healthy = True
        finally:
            self._pool.give_back(session, reuse=healthy)

    def _guarded(self) -> AbstractContextManager[None]:
        """Every connection to a SQLite file is opened and closed inside this."""
        return self._guard.use() if self._sqlite_path is not None else nullcontext()

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        """A connection for reads (each statement sees the latest committed data)."""
        self._check_open()
        if self._pg is not None:
            with self._pg.transaction(write=False) as tx:
                yield tx
        elif self._fast:
            with self._guarded(), self._session() as s:
                yield AdbcTx(s, self._modules()[1])
        else:
            with self._guarded(), self.engine.connect() as conn:
                yield SaTx(conn)

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        self._check_open()
        if self._access is not None and self._access.readonly:
            raise ReadOnlyStoreError(
                f"store {self._access.path} is open read-only ({self._access.reason}): hubkit "
                "cannot write to it. Make it writable, then open a new Store",
                path=self._access.path,
            )
        if self._pg is not None:
            with self._pg.transaction(write=True) as tx:
                yield tx
            return
        if not self._fast:
            with self._guarded(), self.engine.connect() as conn:
                conn.execution_options(hubkit_write=True)
                with conn.begin():
                    yield SaTx(conn)
            return
        with self._guarded(), self._session() as s:
            s.cur.execute("BEGIN IMMEDIATE")
            try:
                yield AdbcTx(s, self._modules()[1])
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
            if not (self._fast and self._pg is None and "Type mismatch" in str(exc)):
                raise
        with self._guarded(), self.engine.connect() as conn:
            return SaTx(conn).frame(stmt, schema)


def _nothing() -> None:
    return None
