"""The change log: which rows of which table each commit changed, for followers.

Every ``TableStore.apply`` that upserts or deletes rows adds, in the same transaction, one
entry to ``hubkit_changes``::

    hubkit_changes  table_name, seq (PK)  committed_at  origin  upserted  deleted
    hubkit_commits  table_name (PK)  seq          PostgreSQL: one counter row per table

``seq`` counts the table's commits 1, 2, 3 ... with no gaps, in commit order. SQLite
serialises writers, so one ``INSERT ... SELECT MAX(seq) + 1`` does it. On PostgreSQL the
table's counter row in ``hubkit_commits`` is bumped by an ``INSERT ... ON CONFLICT DO
UPDATE`` late in the transaction and stays locked until the commit, so writers of one table
commit their entries one after another. ``committed_at`` is the writer's clock
(µs since the epoch, UTC) just before the commit; ``origin`` names the ``TableStore``
object that wrote it; ``upserted``/``deleted`` hold the keys of the rows written and of
the rows actually deleted, as JSON, one list per key column (datetimes in µs, dates ISO,
decimals as text). Rows are not copied: a follower reads the current rows by key. A commit
of more than ``KEYS_MAX`` rows logs ``WHOLE`` instead of its keys (``Entry.whole``): a
follower re-reads the table for it, which is cheaper than reading that many rows by key, and
a bulk load does not pay for writing every key twice.

A follower remembers the last ``seq`` it applied, polls ``head`` (one index lookup)
and reads ``entries`` after it. The log is bounded: every ``PRUNE_EVERY`` commits of a
table, entries older than the last ``KEEP`` of that table are deleted in the writer's
transaction. A follower that fell further behind finds the entry after its position gone
(``entries(...)[0].seq`` is not ``position + 1``) and must re-read the table instead.

On PostgreSQL a trigger on ``hubkit_changes`` also sends ``NOTIFY hubkit_commits`` with the
table and ``seq`` (the ``hubkit.pgnotify`` payload), delivered when the commit is: a follower
LISTENs and reads the log when told, instead of waiting for its next poll.

``PRAGMA data_version`` (SQLite) only tells that some connection committed something; the
log tells which table and which keys, so a follower reads only the changed rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import polars as pl
import sqlalchemy as sa

from hubkit.store.codec import from_storage, now_us, to_storage
from hubkit.store.engine import AdbcTx, SaTx

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec
    from hubkit.store.engine import TableRef, Tx

__all__ = [
    "CHANGES_TABLE",
    "COMMITS_TABLE",
    "KEEP",
    "KEYS_MAX",
    "PRUNE_EVERY",
    "WHOLE",
    "Entry",
    "decode_keys",
    "encode_keys",
    "ensure",
    "entries",
    "head",
    "new_origin",
    "record",
]

CHANGES_TABLE: Final = "hubkit_changes"
COMMITS_TABLE: Final = "hubkit_commits"  # the same table as ``hubkit.pgnotify``'s
# Entries kept per table (older ones are pruned), and how often a writer prunes.
KEEP: Final = 20_000
PRUNE_EVERY: Final = 500

_META = sa.MetaData()
commits = sa.Table(
    COMMITS_TABLE,
    _META,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
changes = sa.Table(
    CHANGES_TABLE,
    _META,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("committed_at", sa.BigInteger, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("upserted", sa.Text, nullable=True),
    sa.Column("deleted", sa.Text, nullable=True),
)

# One statement that both SQLite (3.35+) and PostgreSQL run as written.
_BUMP = sa.text(
    f"INSERT INTO {COMMITS_TABLE} (table_name, seq) VALUES (:name, 1) "
    f"ON CONFLICT (table_name) DO UPDATE SET seq = {COMMITS_TABLE}.seq + 1 RETURNING seq"
).bindparams(sa.bindparam("name", type_=sa.Text))

# SQLite: the next seq and the entry in one statement (writers are serialised).
_APPEND = sa.text(
    f"INSERT INTO {CHANGES_TABLE} (table_name, seq, committed_at, origin, upserted, deleted) "
    "SELECT :name, COALESCE(MAX(seq), 0) + 1, :at, :origin, :up, :down "
    f"FROM {CHANGES_TABLE} WHERE table_name = :name RETURNING seq"
)
_APPEND_SQL: Final = (
    f"INSERT INTO {CHANGES_TABLE} (table_name, seq, committed_at, origin, upserted, deleted) "
    "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ? "
    f"FROM {CHANGES_TABLE} WHERE table_name = ? RETURNING seq"
)

# PostgreSQL: NOTIFY hubkit_commits '{"table": ..., "seq": ...}' for each logged commit, the
# payload ``hubkit.pgnotify.Listener`` decodes.
CHANNEL: Final = "hubkit_commits"
_NOTIFY_FUNCTION = sa.DDL(  # type: ignore[no-untyped-call]
    "CREATE OR REPLACE FUNCTION hubkit_changes_notify() RETURNS trigger AS $$ BEGIN "
    f"PERFORM pg_notify('{CHANNEL}', "
    "json_build_object('table', NEW.table_name, 'seq', NEW.seq)::text); "
    "RETURN NEW; END $$ LANGUAGE plpgsql"
)
_NOTIFY_TRIGGER = sa.DDL(  # type: ignore[no-untyped-call]
    "CREATE OR REPLACE TRIGGER hubkit_changes_notify AFTER INSERT ON "
    f"{CHANGES_TABLE} FOR EACH ROW EXECUTE FUNCTION hubkit_changes_notify()"
)

_decoder = msgspec.json.Decoder(list[list[Any]])

# Above this many rows in one commit, the keys are not logged (see the module doc).
KEYS_MAX: Final = 50_000
# Logged instead of the keys of such a commit (never valid key JSON, which is a list).
WHOLE: Final = "whole"


@dataclass(frozen=True)
class Entry:
    """One logged commit of a table: its ``seq``, the writer's ``committed_at`` (µs UTC),
    the ``origin`` that wrote it, and the keys it upserted and deleted (one list of values
    per key column, as logged; see ``decode_keys``)."""

    seq: int
    committed_at: int
    origin: str
    upserted: list[list[Any]]
    deleted: list[list[Any]]
    whole: bool = False  # too many rows to log their keys: re-read the table


def new_origin() -> str:
    """A fresh origin name for one writer (a ``TableStore`` object)."""
    return uuid.uuid4().hex


def ensure(tx: Tx, *, postgresql: bool = False) -> None:
    """Create the two log tables if they do not exist. On PostgreSQL also a trigger that
    announces each logged commit on ``hubkit.pgnotify``'s channel (delivered on commit)."""
    tx.ddl(sa.schema.CreateTable(commits, if_not_exists=True))
    tx.ddl(sa.schema.CreateTable(changes, if_not_exists=True))
    if postgresql:
        tx.ddl(_NOTIFY_FUNCTION)
        tx.ddl(_NOTIFY_TRIGGER)


def encode_keys(spec: EntitySpec, keys: pl.DataFrame) -> str | None:
    """The key columns of ``keys`` (a frame of ``spec.schema`` types) as logged JSON."""
    if keys.height == 0:
        return None
    columns = []
    for name in spec.key:
        column = spec.column(name)
        series = to_storage(column, keys.get_column(name))
        if series.dtype == pl.Decimal or isinstance(series.dtype, pl.Enum | pl.Categorical):
            series = series.cast(pl.String)
        columns.append(series.to_list())
    return msgspec.json.encode(columns).decode()


def decode_keys(spec: EntitySpec, columns: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Logged key columns -> a frame of the key columns in ``spec.schema`` types."""
    series = []
    for name, values in zip(spec.key, columns, strict=True):
        column = spec.column(name)
        raw = pl.Series(name, list(values), strict=False)
        if column.kind == "bool":
            raw = raw.cast(pl.Int64, strict=False)
        series.append(from_storage(column, raw))
    return pl.DataFrame(series)


def record(
    tx: Tx,
    spec: EntitySpec,
    name: str,
    origin: str,
    upserted: pl.DataFrame,
    deleted: pl.DataFrame,
) -> int | None:
    """Log the keys of ``upserted`` and ``deleted`` rows of table ``name`` in the open
    transaction ``tx``; returns the commit's ``seq`` (None when no row changed). Call it
    last in the transaction (on PostgreSQL the counter row stays locked until the commit)."""
    if upserted.height + deleted.height > KEYS_MAX:
        up: str | None = WHOLE
        down: str | None = None
    else:
        up = encode_keys(spec, upserted)
        down = encode_keys(spec, deleted)
        if up is None and down is None:
            return None
    if isinstance(tx, AdbcTx):  # SQLite files: one statement, compiled once
        tx.cur.execute(_APPEND_SQL, (name, now_us(), origin, up, down, name))
        seq = int(tx.cur.fetchall()[0][0])
    elif isinstance(tx, SaTx) and tx.conn.dialect.name == "sqlite":
        values = {"name": name, "at": now_us(), "origin": origin, "up": up, "down": down}
        seq = int(tx.rows(_APPEND.bindparams(**values))[0][0])
    else:
        seq = int(tx.rows(_BUMP.bindparams(name=name))[0][0])
        tx.run(
            sa.insert(changes).values(
                table_name=name,
                seq=seq,
                committed_at=now_us(),
                origin=origin,
                upserted=up,
                deleted=down,
            )
        )
    if seq % PRUNE_EVERY == 0 and seq > KEEP:
        c = changes.c
        tx.run(sa.delete(changes).where(c.table_name == name, c.seq <= seq - KEEP))
    return seq


# -- reading ------------------------------------------------------------------------------


def head(table: TableRef) -> int:
    """The ``seq`` of the table's last logged commit (0 before any)."""
    c = changes.c
    stmt = sa.select(sa.func.max(c.seq)).where(c.table_name == table.name)
    what = f"reading the change log of {table.name!r}"
    with table.store._translate(what), table.store._read() as tx:
        rows = tx.rows(stmt)
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def entries(table: TableRef, after: int, limit: int) -> list[Entry]:
    """At most ``limit`` logged commits of the table with ``seq > after``, oldest first."""
    c = changes.c
    stmt = (
        sa.select(c.seq, c.committed_at, c.origin, c.upserted, c.deleted)
        .where(c.table_name == table.name, c.seq > after)
        .order_by(c.seq)
        .limit(limit)
    )
    what = f"reading the change log of {table.name!r}"
    with table.store._translate(what), table.store._read() as tx:
        rows = tx.rows(stmt)
    return [
        Entry(
            seq=int(seq),
            committed_at=int(at),
            origin=str(origin),
            upserted=_decoder.decode(up) if up and up != WHOLE else [],
            deleted=_decoder.decode(down) if down else [],
            whole=up == WHOLE,
        )
        for seq, at, origin, up, down in rows
    ]
