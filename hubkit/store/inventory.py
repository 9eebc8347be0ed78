"""What a store holds, read without changing it: one ``TableInventory`` per sink (for
``hubkit status`` and anything else that lists a store)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from hubkit.errors import StoreError
from hubkit.store.codec import from_us
from hubkit.store.engine import OUTBOX_TABLE, STATE_TABLE
from hubkit.store.store import store_url

__all__ = ["TableInventory", "read_inventory"]


@dataclass(frozen=True)
class TableInventory:
    """One sink's table: ``rows`` (None when the table is missing), ``last_sync`` (UTC),
    ``pending`` outbox entries and the stored ``cursor``."""

    name: str
    rows: int | None
    last_sync: datetime | None
    pending: int
    cursor: str | None


def read_inventory(
    store: str | os.PathLike[str] | sa.URL | None = None,
) -> tuple[str, list[TableInventory]]:
    """The store's URL and its sinks' tables (those with a sync-state row), sorted by name.

    ``store``: a path, a SQLAlchemy URL or None (``default_store_url()``). Read-only: nothing
    is created; a SQLite file that does not exist raises ``StoreError``, and so does a
    database that cannot be read.
    """
    url = store_url(store)
    parsed = sa.make_url(url)
    database = parsed.database or ""
    is_file = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if is_file and not database.startswith("file:") and not Path(database).exists():
        raise StoreError(f"no store at {database}")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return url, _read(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"cannot read store {url}: {exc}") from exc
    finally:
        engine.dispose()


def _read(conn: sa.Connection) -> list[TableInventory]:
    names = set(sa.inspect(conn).get_table_names())
    if STATE_TABLE not in names:
        return []
    pending: dict[str, int] = {}
    if OUTBOX_TABLE in names:
        outbox = sa.table(OUTBOX_TABLE, sa.column("sink"))
        query = sa.select(outbox.c.sink, sa.func.count()).group_by(outbox.c.sink)
        pending = {str(sink): int(n) for sink, n in conn.execute(query)}
    state = sa.table(STATE_TABLE, sa.column("sink"), sa.column("cursor"), sa.column("last_sync"))
    tables: list[TableInventory] = []
    for sink, cursor, last_sync in conn.execute(
        sa.select(state.c.sink, state.c.cursor, state.c.last_sync)
    ):
        name = str(sink)
        rows: int | None = None
        if name in names:
            count = sa.select(sa.func.count()).select_from(sa.table(name))
            rows = int(conn.execute(count).scalar_one())
        last = None if last_sync is None else from_us(int(last_sync))
        tables.append(TableInventory(name, rows, last, pending.get(name, 0), cursor))
    return sorted(tables, key=lambda t: t.name)
