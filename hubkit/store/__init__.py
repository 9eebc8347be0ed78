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
- **Schema safety.** The first ``table(spec)`` records the spec's fingerprint and columns;
  opening the table later with a changed spec evolves it in place when that loses nothing
  (new Optional or defaulted columns, removed columns kept, int -> float, T -> Optional[T]:
  ``evolve``/``evolve_apply``) and otherwise raises ``SchemaChangeError`` listing the
  differences and the ``Store.migrate`` call (``migrate``) that rewrites the table, keeping
  a copy. hubkit never drops stored data unless asked (``drop_column``, ``drop_copy``);
  every change is recorded in ``hubkit_schema_history``. A table it did not create is
  adopted only with exactly the entity's columns and a primary key or unique index on
  exactly its key; an existing file is checked before hubkit first changes it (e.g. to WAL
  mode), so a refused file is left as it was.
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
  using a closed store raises ``ClosedError``. A bad path raises ``StorePathError``, a file
  that is not SQLite or is damaged ``CorruptStoreError``, a write to a store hubkit may not
  write to ``ReadOnlyStoreError``; each names the file (see ``hubkit.store.checks``).
- **Read-only files.** A file, or folder, hubkit may not write to is opened read-only and
  read as it is, creating no ``-wal``/``-shm`` files beside it.

Speed. SQLAlchemy Core builds every statement and owns other databases (rows move as
dicts through ``executemany``). For SQLite files, rows move as Arrow data through ADBC:
small batches are bound directly from Arrow (``executemany``), large ones are staged into a
temporary table with ``adbc_ingest`` in key order and merged with one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; reads come back with
``fetch_arrow_table``. The write transaction, including state and outbox statements, runs
on the ADBC connection. ``adbc_driver_sqlite`` is imported on first use because importing
it costs about a second.

Big tables. Secondary indexes come from the entity (``@hubkit.index``) and from
``table(spec, indexes=...)``; they are created with the table and added to an existing table
that lacks them (``indexing``). ``TableStore.scan()`` is a Polars ``LazyFrame`` whose column
selection, filters and ``head`` run in SQL, read in streamed batches (``scanning``, over
``hubkit.scan``); ``query(start=, end=)`` and ``scan(start=, end=)`` keep a time range of the
entity's first datetime column (``ranges``).

PostgreSQL. ``Store("postgresql://...")`` (``postgresql+psycopg://`` for SQLAlchemy) keeps
every promise above on a server: entity columns get native types (``timestamptz``,
``numeric``, ``jsonb``, ``date``, ``boolean``), rows move as Arrow through ADBC's PostgreSQL
driver (``COPY`` into a temporary table merged with ``INSERT ... ON CONFLICT``), each change
is one PostgreSQL transaction, and several processes may write one table (see
``hubkit.store.pg``).

Layout of the package: ``engine`` (how a transaction runs, ADBC or SQLAlchemy), ``codec``
(kinds <-> SQL), ``store`` (open/close, schema check), ``table`` (rows of one entity;
``apply(changeset)``), ``outbox`` (sync-state and outbox tables and statements),
``inventory`` (what a store holds, read-only: ``store_inventory``), ``evolve`` (the
schema-change decision, no I/O), ``evolve_apply``/``evolve_ddl`` (applying it when a table
opens), ``migrate`` (explicit rewrites and drops), ``pg`` (the PostgreSQL side). A change is
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
from hubkit.store.migrate import Migration
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
    "Migration",
    "OutboxWrite",
    "Store",
    "TableInventory",
    "TableStore",
    "default_store_url",
    "store_inventory",
    "store_url",
]
