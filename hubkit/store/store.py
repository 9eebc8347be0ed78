"""``Store``: open and close a database, check and create entity tables (see ``hubkit.store``)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import msgspec
import polars as pl
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from hubkit.entity import EntitySpec
from hubkit.errors import ClosedError, HubkitError, StoreError
from hubkit.sqlite_guard import SqliteGuard
from hubkit.store import changelog
from hubkit.store.codec import json_text
from hubkit.store.engine import (
    OUTBOX_TABLE,
    SQLITE_PRAGMAS,
    STATE_TABLE,
    AdbcSession,
    AdbcTx,
    Pool,
    SaTx,
    Tx,
    configure_sqlite,
)
from hubkit.store.outbox import bookkeeping_tables
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
    """The canonical URL of a store argument (a path becomes an absolute SQLite URL)."""
    if url is None:
        return default_store_url()
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=False)
    if isinstance(url, os.PathLike) or "://" not in url:
        return f"sqlite:///{Path(os.fspath(url)).expanduser().resolve()}"
    return url


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
        self.url: str = store_url(url)
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
        elif self._sqlite_path is not None:
            kwargs = {"poolclass": NullPool}  # no connection outlives its guarded use
        try:
            self.engine: sa.Engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url!r}: {exc}") from exc
        if is_sqlite:
            configure_sqlite(self.engine, wal=not memory)
        self.state_table, self.outbox_table, self._outbox_index = bookkeeping_tables()
        self._lock = threading.Lock()
        self._tables: dict[str, TableStore] = {}
        self._closed = False
        self._pid = os.getpid()
        self._pool = Pool()
        self._orphans: list[AdbcSession] = []  # inherited over fork: never used nor closed
        self._adbc: tuple[ModuleType, ModuleType] | None = None
        # Close idle connections when the store is collected, or at exit if nobody closed it
        # (ADBC complains when a connection is left for the garbage collector at exit).
        # One idle connection of each SQLite library on the file while the store uses it,
        # closed after the store's own (see hubkit.sqlite_guard).
        self._guard = SqliteGuard(self._sqlite_path or "", SQLITE_PRAGMAS)
        self._finalizer = weakref.finalize(self, self._guard.close, self._pool.close)

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
        self._guard.close(self._pool.close, self.engine.dispose)  # the guard closes last

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
            tx.ddl(CreateTable(self.state_table, if_not_exists=True))
            tx.ddl(CreateTable(self.outbox_table, if_not_exists=True))
            tx.ddl(CreateIndex(self._outbox_index, if_not_exists=True))
            changelog.ensure(tx, postgresql=self.engine.dialect.name == "postgresql")
            st = self.state_table.c
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
                    sa.insert(self.state_table).values(
                        sink=name,
                        cursor=None,
                        last_sync=None,
                        fingerprint=spec.fingerprint,
                        columns=json_text(spec.describe()),
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
            session = AdbcSession(dbapi, self._sqlite_path)
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
        if self._fast:
            with self._guarded(), self._session() as s:
                yield AdbcTx(s, self._modules()[1])
        else:
            with self._guarded(), self.engine.connect() as conn:
                yield SaTx(conn)

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        self._check_open()
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
            if not (self._fast and "Type mismatch" in str(exc)):
                raise
        with self._guarded(), self.engine.connect() as conn:
            return SaTx(conn).frame(stmt, schema)


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
