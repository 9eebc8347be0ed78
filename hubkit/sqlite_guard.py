"""Keeping a SQLite file's commits durable when two SQLite libraries share one process.

The problem. A Python process usually holds two copies of the SQLite library: the system one
behind the standard ``sqlite3`` module (and so behind SQLAlchemy's pysqlite, pandas'
``read_sql`` on a ``sqlite3`` connection, ``pl.read_database`` on one), and the copy that
the ADBC SQLite driver's wheel carries inside it (hubkit's fast path, and Polars'
``read_database_uri(engine="adbc")``). SQLite's locks are POSIX advisory locks, which belong
to the *process*: the two copies never see each other's locks, and closing any descriptor
of a file drops every lock the process holds on it. Each copy keeps its own list of the
connections it has open on a file, and when the *last* connection of that copy closes, it
takes an exclusive lock (which succeeds: the other copy's locks are the process's own),
checkpoints the write-ahead log and deletes it, with the ``-shm`` index. The other copy
keeps writing its commits into the deleted log: its connections still report them, a new
connection sees none of them, and a crash loses them all.

The rule. For as long as hubkit uses a SQLite file, a ``SqliteGuard`` keeps one idle
connection of each library open on it, each in WAL mode and holding the shared lock SQLite
keeps on a WAL database between transactions (never a transaction: the log can still be
checkpointed). A connection of either library that closes is then never the last of its
copy, so it neither deletes the log nor closes the descriptor that carries the locks. The
guard closes last: once the store is closed and none of its operations is still in flight,
after the store's own connections. While it is open, no new connection of either copy is
the first of its copy either, which would re-initialise the ``-shm`` index under the other.
It costs two idle connections per store and nothing per commit.

What this makes safe, in the process that holds a hubkit store on the file:

- reading through the standard ``sqlite3`` module (open, query, close), and what is built
  on it: ``pandas.read_sql`` and ``pl.read_database`` on a ``sqlite3`` connection,
  SQLAlchemy's ``sqlite:///`` URLs (pysqlite), another ``hubkit.Store(path, fast=False)``;
- reading through ADBC, as ``pl.read_database_uri(uri, engine="adbc")`` does (the copy of
  hubkit's fast path; beside a ``fast=False`` store it is the other copy, and guarded).

Such a reader never loses or damages what hubkit committed, and sees every commit that
finished before its query began (``tests/test_durable_sqlite.py`` checks each one, killing
the process after it). A query through the other copy that runs *while* hubkit commits
from another thread is not isolated from that commit (the copies cannot see each other's
read locks): read through hubkit when that matters.

Still unsafe, and not made safe by anything here:

- *writing* to the file through the other library in the same process, or checkpointing
  it (``PRAGMA wal_checkpoint``) from there: the two copies cannot exclude each other;
- a third copy of SQLite, as a library that bundles its own (connectorx does);
- keeping a connection of the other library open across the store's close: it keeps
  reading the log of that moment, and writes through it are lost. Open, read, close.

One store per file needs one guard; a second store on the same file holds its own, which
does no harm. Guards are per process: after ``fork`` the child's guard opens its own
connections and leaves the inherited ones untouched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from hubkit.errors import StoreError

__all__ = ["SqliteGuard"]

# A read that makes a connection open the WAL and its index, and take the shared lock SQLite
# keeps on a WAL database from then on.
_TOUCH = "SELECT count(*) FROM sqlite_schema"


class SqliteGuard:
    """Holds one idle connection of each SQLite library on the file ``path``.

    Wrap every use of a connection of your own to the file in ``with guard.use():`` (open
    the connection inside it and close it, or hand it back to a pool, before leaving it):
    the first use opens the guard, later ones cost a lock. ``close(*first)`` runs each of
    ``first`` (closing your idle connections), then closes the guard's connections as soon
    as no ``use()`` is in progress, so they are always the last to go. A use that begins
    after ``close`` still gets a guard, opened for it and closed after it.

    ``pragmas`` (the store's own connection settings: busy timeout first, then
    ``journal_mode = WAL``, ...) run on both guard connections, the ADBC one first, so the
    file is in WAL mode before the standard-library connection opens. Thread-safe. Raises
    ``StoreError`` naming the file when a guard connection cannot be opened.
    """

    def __init__(self, path: str, pragmas: Sequence[str] = ()) -> None:
        self.path = path
        self._pragmas = tuple(pragmas)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._adbc: Any = None
        self._system: sqlite3.Connection | None = None
        self._users = 0
        self._closed = False
        # Connections inherited over fork: the parent's, never used nor closed here.
        self._inherited: list[object] = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("held" if self.held else "idle")
        return f"<SqliteGuard {self.path!r} ({state})>"

    @property
    def held(self) -> bool:
        """Whether the guard connections are open in this process."""
        return self._system is not None and os.getpid() == self._pid

    @contextmanager
    def use(self) -> Iterator[None]:
        """The span in which the caller may have connections of its own open on the file."""
        with self._lock:
            if os.getpid() != self._pid:
                self._inherited += [c for c in (self._adbc, self._system) if c is not None]
                self._adbc, self._system, self._users = None, None, 0
                self._pid = os.getpid()
            if self._system is None:
                try:
                    self._adbc = self._open_adbc()
                    self._system = self._open_system()
                except Exception as exc:
                    self._release()
                    raise StoreError(f"cannot open SQLite file {self.path!r}: {exc}") from exc
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._closed and self._users == 0:
                    self._release()

    def close(self, *first: Callable[[], object]) -> None:
        """Run each of ``first``, then close the guard connections once no use is left.

        Idempotent; ``first`` run every time, even when the guard was never opened.
        """
        try:
            for step in first:
                step()
        finally:
            with self._lock:
                self._closed = True
                if self._users == 0 and os.getpid() == self._pid:
                    self._release()

    def _open_adbc(self) -> Any:
        import adbc_driver_sqlite.dbapi as dbapi  # ~1 s: imported with the first guard

        conn = dbapi.connect(self.path, autocommit=True)
        try:
            # The cursor is closed at once: an open ADBC statement may hold a read
            # transaction, which would keep the log from being checkpointed.
            with conn.cursor() as cur:
                for statement in (*self._pragmas, _TOUCH):
                    cur.execute(statement)
                    cur.fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_system(self) -> sqlite3.Connection:
        # Autocommit (no implicit transaction is ever left open); closable from any thread
        # (the store may close from its finalizer).
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            uri=self.path.startswith("file:"),  # a read-only store's URI (hubkit.store.checks)
        )
        try:
            for statement in (*self._pragmas, _TOUCH):
                conn.execute(statement).fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _release(self) -> None:
        # ADBC's copy first, then the standard library's: the order of a store's close.
        adbc, system, self._adbc, self._system = self._adbc, self._system, None, None
        if adbc is not None:
            with suppress(Exception):  # best effort: the guard only holds idle connections
                adbc.close()
        if system is not None:
            with suppress(Exception):
                system.close()
