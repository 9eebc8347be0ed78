"""What a store holds: its hubkit tables with rows, last sync, cursor, pending pushes and schema.

::

    from hubkit.store import store_inventory

    found = store_inventory("data.db")      # a Store, a path or a SQLAlchemy URL
    for table in found.tables:              # sorted by name
        table.name, table.rows, table.last_sync, table.cursor, table.pending
        table.key, table.columns            # the schema recorded when the table was created
    found.table("bybit_instrument")         # -> TableInventory (else NotFoundError)

(The function is not called ``inventory``: a package attribute named like its submodule is
replaced by the submodule once that is imported.)

Promises:

- **Read-only.** Nothing is created or changed: a SQLite file that does not exist raises
  ``StoreError`` naming it (no empty file is left behind), and a database without hubkit's
  sync-state table has no hubkit tables.
- **Every hubkit table.** A hubkit table is one with a row in the store's sync state (every
  table a sink, a dataset or ``Store.table`` opened); its outbox entries and the schema
  recorded for it come with it. A table named in the sync state but since dropped is listed
  with ``rows=None``.
- **Plain values.** The answer is frozen dataclasses of plain Python values, safe to keep
  after the store is closed.
- **Errors.** Database failures leave as ``StoreError`` (``__cause__`` holds the original).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hubkit.errors import NotFoundError, StoreError
from hubkit.store.codec import from_us
from hubkit.store.engine import OUTBOX_TABLE as _OUTBOX
from hubkit.store.engine import STATE_TABLE as _STATE
from hubkit.store.store import Store, store_url

__all__ = ["ColumnInventory", "Inventory", "TableInventory", "store_inventory"]


@dataclass(frozen=True)
class ColumnInventory:
    """One column of a table as recorded in the store: name, kind (``"str"``, ``"float"``,
    ``"datetime"``, ...) and whether it may hold nulls."""

    name: str
    kind: str
    nullable: bool


@dataclass(frozen=True)
class TableInventory:
    """One hubkit table of a store.

    ``rows`` is ``None`` when the table named in the sync state no longer exists;
    ``last_sync`` is the time of the last successful sync (UTC) or ``None`` when it never
    synced; ``pending`` counts outbox entries waiting to be pushed; ``key`` and ``columns``
    are the schema recorded when the table was created (empty when none was recorded).
    """

    name: str
    rows: int | None
    last_sync: datetime | None
    cursor: str | None
    pending: int
    key: tuple[str, ...]
    columns: tuple[ColumnInventory, ...]
    fingerprint: str | None


@dataclass(frozen=True)
class Inventory:
    """The hubkit tables of the store at ``url``, sorted by name."""

    url: str
    tables: tuple[TableInventory, ...]

    def __iter__(self) -> Iterator[TableInventory]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def names(self) -> list[str]:
        """The table names, sorted."""
        return [t.name for t in self.tables]

    def table(self, name: str) -> TableInventory:
        """The table called ``name``; when absent, ``NotFoundError`` (a ``KeyError``) naming
        the known tables."""
        for found in self.tables:
            if found.name == name:
                return found
        known = ", ".join(self.names()) or "none"
        raise NotFoundError(f"no hubkit table {name!r} in {self.url} (tables: {known})")


def store_inventory(store: Store | str | os.PathLike[str] | sa.URL | None = None) -> Inventory:
    """List the hubkit tables of ``store``: a ``hubkit.Store`` (read through its engine, left
    open), a file path or SQLAlchemy URL (read with a connection of its own, closed on
    return), or ``None`` for the default store. Blocking; read-only.

    Raises ``StoreError`` when a SQLite file does not exist or the database cannot be read.
    """
    if isinstance(store, Store):
        return _read(store.url, store.engine)
    # The canonical URL of a path (absolute, SQLite), worked out without opening anything.
    url = store_url(store)
    missing = _missing_sqlite_file(url)
    if missing is not None:
        raise StoreError(f"no store at {missing}")
    engine = sa.create_engine(url)
    try:
        return _read(url, engine)
    finally:
        engine.dispose()


def _missing_sqlite_file(url: str) -> Path | None:
    """The path of a SQLite file URL whose file does not exist (else None)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query:
        return None
    path = Path(database)
    return None if path.exists() else path


def _read(url: str, engine: sa.Engine) -> Inventory:
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if _STATE not in names:
                return Inventory(url, ())
            pending: dict[str, int] = {}
            if _OUTBOX in names:
                outbox = sa.table(_OUTBOX, sa.column("sink"))
                counts = sa.select(outbox.c.sink, sa.func.count()).group_by(outbox.c.sink)
                pending = {str(sink): int(n) for sink, n in conn.execute(counts)}
            state = sa.table(
                _STATE,
                sa.column("sink"),
                sa.column("cursor"),
                sa.column("last_sync"),
                sa.column("fingerprint"),
                sa.column("columns"),
            )
            tables = []
            for sink, cursor, last_sync, fingerprint, described in conn.execute(
                sa.select(
                    state.c.sink,
                    state.c.cursor,
                    state.c.last_sync,
                    state.c.fingerprint,
                    state.c.columns,
                )
            ):
                name = str(sink)
                rows = None
                if name in names:
                    count = sa.select(sa.func.count()).select_from(sa.table(name))
                    rows = int(conn.execute(count).scalar_one())
                key, columns = _schema(described)
                tables.append(
                    TableInventory(
                        name=name,
                        rows=rows,
                        last_sync=_utc(last_sync),
                        cursor=None if cursor is None else str(cursor),
                        pending=pending.get(name, 0),
                        key=key,
                        columns=columns,
                        fingerprint=None if fingerprint is None else str(fingerprint),
                    )
                )
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"reading the inventory of {url} failed: {exc}") from exc
    return Inventory(url, tuple(sorted(tables, key=lambda t: t.name)))


def _utc(microseconds: Any) -> datetime | None:
    """The sync state keeps times as microseconds since the epoch, UTC."""
    return None if microseconds is None else from_us(int(microseconds))


def _schema(described: Any) -> tuple[tuple[str, ...], tuple[ColumnInventory, ...]]:
    """Key and columns from the recorded description ``{"columns": [[name, kind, nullable],
    ...], "key": [...]}``; empty when it is missing or unreadable."""
    try:
        data = json.loads(described) if described else {}
        key = tuple(str(k) for k in data.get("key", ()))
        columns = tuple(
            ColumnInventory(str(c[0]), str(c[1]), bool(c[2])) for c in data.get("columns", ())
        )
    except (ValueError, TypeError, IndexError, AttributeError):
        return (), ()
    return key, columns
