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

Layout of the package: ``engine`` (how a transaction runs, ADBC or SQLAlchemy), ``codec``
(kinds <-> SQL), ``store`` (open/close, schema check), ``table`` (rows of one entity;
``apply(changeset)``), ``outbox`` (sync-state and outbox tables and statements),
``inventory`` (what a store holds, read-only: ``store_inventory``). A change is
one ``hubkit.changeset.ChangeSet`` applied by ``TableStore.apply`` in one transaction.
"""

from __future__ import annotations

from hubkit.changeset import UNSET, Applied, ChangeSet, OutboxWrite
from hubkit.store.engine import (
    BUSY_TIMEOUT_MS,
    DIRECT_MAX,
    OUTBOX_TABLE,
    STATE_TABLE,
)
from hubkit.store.inventory import ColumnInventory, Inventory, TableInventory, store_inventory
from hubkit.store.store import Store, default_store_url, store_url
from hubkit.store.table import TableStore

# the batch size above which upserts are staged (kept under its former name for callers)
_DIRECT_MAX = DIRECT_MAX

__all__ = [
    "BUSY_TIMEOUT_MS",
    "OUTBOX_TABLE",
    "STATE_TABLE",
    "UNSET",
    "Applied",
    "ChangeSet",
    "ColumnInventory",
    "Inventory",
    "OutboxWrite",
    "Store",
    "TableInventory",
    "TableStore",
    "default_store_url",
    "store_inventory",
    "store_url",
]
