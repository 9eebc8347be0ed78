"""``TableStore``: the rows of one entity table, and every change to them as one transaction.

``apply(changeset)`` is the one write: rows, deletes, sync state and outbox edits commit
together or not at all (see ``hubkit.changeset``). ``upsert``, ``delete``, ``reject``,
``set_state``, ``outbox_done`` and ``outbox_bump`` are change-sets of one kind each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import ColumnElement

from hubkit.changeset import UNSET, Applied, ChangeSet, OutboxWrite, Unset
from hubkit.entity import EntitySpec
from hubkit.errors import StoreError
from hubkit.store import changelog
from hubkit.store.codec import (
    from_storage,
    now_us,
    storage_kind,
    to_storage,
)
from hubkit.store.engine import (
    DIRECT_MAX,
    KEY_CHUNK,
    SQLITE,
    Backend,
    UpsertPlan,
    chunks,
    key_in,
)
from hubkit.store.outbox import Bookkeeping, state_values
from hubkit.store.pg import PgColumn
from hubkit.store.ranges import range_clause, range_expr
from hubkit.store.ranges import time_column as time_column_of
from hubkit.store.window import dialect_of, newest_select
from hubkit.types import OutboxEntry

if TYPE_CHECKING:
    from hubkit.scan import ReadPlan


class TableStore(Bookkeeping):
    """The DAO of one entity table in a ``Store`` (get it from ``Store.table``).

    ``name`` is the table name and the sink name for sync state and the outbox; ``table``
    is the SQLAlchemy ``Table`` (use its columns in ``query(where=...)`` expressions).
    Every frame returned has exactly ``spec.schema``. Thread-safe; calls block.
    """

    def __init__(self, store: Backend, spec: EntitySpec, name: str) -> None:
        self.store = store
        self.spec = spec
        self.name = name
        self.table = sa.Table(
            name,
            sa.MetaData(),
            *[
                sa.Column(
                    c.name,
                    store._sql_type(c),
                    primary_key=c.name in spec.key,
                    nullable=c.nullable,
                    autoincrement=False,
                )
                for c in spec.columns
            ],
        )
        self._storage_schema = pl.Schema({c.name: storage_kind(c) for c in spec.columns})
        self._needs_storage = any(c.kind in ("datetime", "date") for c in spec.columns)
        self._stage_name = f"hubkit_stage__{name}"
        self._empty = spec.empty()
        # SQLite's statements; a PostgreSQL store builds its own (hubkit.store.pg)
        native = any(isinstance(c.type, PgColumn) for c in self.table.c)
        direct_sql, staged_sql = (
            ("", "") if native else _upsert_sql(self.table, spec, self._stage_name)
        )
        self._plan = UpsertPlan(self.table, spec.key, direct_sql, staged_sql, self._stage_name)
        self.origin = changelog.new_origin()  # names this writer in the change log

    def empty(self) -> pl.DataFrame:
        """A new empty frame of ``spec.schema`` (cheap: building one from the spec is not)."""
        return self._empty.clear()

    def __repr__(self) -> str:
        return f"<hubkit.TableStore {self.name!r} of {self.spec.cls.__name__}>"

    # -- conversions --------------------------------------------------------------------

    # Both conversions use Series casts, not expressions: an expression costs a query plan
    # (~0.2 ms or more), which is most of the cost of a small stream batch.

    def _storage(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A frame of ``spec.schema`` -> the values as stored (datetimes in µs, ISO dates)."""
        if not self._needs_storage:
            return frame
        return pl.DataFrame([to_storage(c, frame.get_column(c.name)) for c in self.spec.columns])

    def _decode(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Stored values, as the driver typed them -> a frame of ``spec.schema``."""
        try:
            return pl.DataFrame(
                [from_storage(c, raw.get_column(c.name)) for c in self.spec.columns]
            )
        except pl.exceptions.PolarsError as exc:
            raise StoreError(
                f"table {self.name!r} holds values hubkit did not write: {exc}"
            ) from exc

    def _key_in(self, keys: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
        return key_in(self.table, self.spec.key, keys)

    def _keys(self, keys: Iterable[Any]) -> list[tuple[Any, ...]]:
        if isinstance(keys, pl.DataFrame):
            return keys.select(list(self.spec.key)).rows()
        if isinstance(keys, str | bytes | Mapping | self.spec.cls):
            keys = [keys]
        return [self.spec.key_of(k) for k in keys]

    # -- writes -------------------------------------------------------------------------

    def apply(self, change: ChangeSet) -> Applied:
        """Apply ``change`` in one transaction (see ``hubkit.changeset`` for the order).

        Everything is validated before anything is written: a bad row raises
        ``ValidationError``, a bad outbox op or state value too, and nothing is stored. A
        database failure raises ``StoreError`` and nothing of the change is stored.
        """
        frame, storage = self._prepare(change.upsert)
        wanted = [self.spec.key_of(k) for k in change.delete]
        state = state_values(change.cursor, change.last_sync, change.extra)
        now = now_us()
        added = [self._outbox_row(w, now) for w in change.outbox_add]
        if not (
            wanted or storage.height or state or added or change.outbox_done or change.outbox_bump
        ):
            return Applied(frame, self.empty())
        parts: list[pl.DataFrame] = []
        with self.store._translate(f"change of {self.name!r}"), self.store._write() as tx:
            for chunk in chunks(wanted, KEY_CHUNK):
                cond = self._key_in(chunk)
                parts.append(tx.frame(sa.select(self.table).where(cond), self._storage_schema))
                tx.run(sa.delete(self.table).where(cond))
            if storage.height:
                tx.upsert(self._plan, storage)
            self._bookkeeping(tx, change, state, added)
            deleted = self._frames(parts)
            changelog.record(tx, self.spec, self.name, self.origin, frame, deleted)
        return Applied(
            frame,
            deleted,
            outbox_added=len(added),
            outbox_removed=len(change.outbox_done),
        )

    def _prepare(self, rows: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the normalised frame, its stored values in write order) of ``rows``."""
        frame = self.empty() if rows is None else self.spec.to_frame(rows)
        if frame.height == 0:
            return frame, frame
        key = list(self.spec.key)
        if frame.height > DIRECT_MAX:
            # Rows in key order turn random B-tree inserts into appends (~3x faster for 1M
            # rows); in key order, a repeated key is also cheap to spot.
            ordered = frame.sort(key, maintain_order=True)
            repeated = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in key]).any()
            if ordered.select(repeated).item():
                frame = frame.unique(subset=key, keep="last", maintain_order=True)
                ordered = ordered.unique(subset=key, keep="last", maintain_order=True)
            return frame, self._storage(ordered)
        # A Python set is quicker than Polars for a few thousand keys (and than Polars on a
        # small slice of a large frame, which can cost milliseconds).
        cols = [frame.get_column(k).to_list() for k in key]
        distinct = len(set(cols[0] if len(cols) == 1 else zip(*cols, strict=True)))
        if frame.height > 1 and distinct < frame.height:
            frame = frame.unique(subset=key, keep="last", maintain_order=True)
        return frame, self._storage(frame)

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
        change = ChangeSet(
            upsert=rows if isinstance(rows, pl.DataFrame) else list(rows),
            cursor=UNSET if cursor is None else cursor,
            last_sync=UNSET if last_sync is None else last_sync,
            outbox_add=outbox,
        )
        return self.apply(change).upserted

    def delete(
        self, keys: Iterable[Any] | Any, *, outbox: Sequence[OutboxWrite] = ()
    ) -> pl.DataFrame:
        """Delete rows by key; returns the rows that were deleted (missing keys are skipped).

        ``keys``: key values, key tuples, entities, rows, or a frame with the key columns; a
        single str/entity/row is one key. ``outbox`` entries commit in the same transaction.
        """
        return self.apply(ChangeSet(delete=self._keys(keys), outbox_add=outbox)).deleted

    def reject(self, entry: OutboxEntry) -> pl.DataFrame:
        """Undo a refused local write in one transaction.

        Deletes the outbox entry and restores the row to ``entry.before`` (deleting it when
        ``before`` is None). Returns the restored rows (empty when the row was deleted).
        """
        if entry.before is None:
            change = ChangeSet(delete=[self.spec.key_of(entry.key)], outbox_done=[entry.id])
        else:
            change = ChangeSet(upsert=[entry.before], outbox_done=[entry.id])
        return self.apply(change).upserted

    def set_state(
        self,
        *,
        cursor: str | Unset | None = UNSET,
        last_sync: datetime | Unset | None = UNSET,
        extra: Mapping[str, Any] | Unset = UNSET,
    ) -> None:
        """Change the given parts of the sync state (None clears cursor/last_sync)."""
        self.apply(ChangeSet(cursor=cursor, last_sync=last_sync, extra=extra))

    def outbox_done(self, ids: Sequence[int]) -> None:
        """Remove pushed entries."""
        self.apply(ChangeSet(outbox_done=list(ids)))

    def outbox_bump(self, ids: Sequence[int]) -> None:
        """Count one more failed push attempt for these entries."""
        self.apply(ChangeSet(outbox_bump=list(ids)))

    def _frames(self, raws: list[pl.DataFrame]) -> pl.DataFrame:
        decoded = [self._decode(r) for r in raws if r.height]
        return pl.concat(decoded) if decoded else self.empty()

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
                for chunk in chunks(wanted, KEY_CHUNK)
            ]
        return self._frames(raws)

    def query(
        self,
        where: Mapping[str, Any] | ColumnElement[bool] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        descending: bool = False,
        limit: int | None = None,
        start: Any = None,
        end: Any = None,
        time_column: str | None = None,
    ) -> pl.DataFrame:
        """Rows matching ``where``, as a frame.

        ``where``: a mapping of column name to a value (equality; None matches NULL) or to
        a list/tuple/set of values (IN), all ANDed; or a SQLAlchemy expression over
        ``self.table.c`` (values are encoded for storage, e.g. datetimes). ``start``/``end``
        keep rows whose ``time_column`` (default: the entity's first datetime column) is in
        ``[start, end)`` (see ``hubkit.store.ranges``). ``order_by`` columns sort ascending
        unless ``descending``; ``limit`` caps the row count. Without ``order_by`` the order
        is unspecified. The conditions run in SQL and use the table's indexes.
        """
        stmt = sa.select(self.table)
        if start is not None or end is not None:
            ranged = range_clause(self.table, time_column_of(self.spec, time_column), start, end)
            if ranged is not None:
                stmt = stmt.where(ranged)
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

    def scan(
        self,
        *,
        start: Any = None,
        end: Any = None,
        time_column: str | None = None,
        batch_rows: int | None = None,
        on_plan: Callable[[ReadPlan], None] | None = None,
    ) -> pl.LazyFrame:
        """A Polars ``LazyFrame`` over the stored rows (``spec.schema``), read when collected.

        Column selection, row filters (comparisons, ``is_in``, ``is_between``, null checks
        and ``&``/``|``/``~`` of them) and ``head`` run in SQL and use the table's indexes;
        the rest of a query runs in Polars on each batch read, so the result always equals
        Polars on the whole table. Reads stream in batches of ``batch_rows``:
        ``collect(engine="streaming")`` of an aggregation never holds the whole table.
        ``start``/``end``/``time_column`` filter a time range as in ``query``. Each
        ``collect`` reads again (committed data at that moment); row order is unspecified.
        ``on_plan`` sees each read's ``hubkit.scan.ReadPlan`` (its SQL) before it runs.
        """
        from hubkit.store.scanning import scan_store_table

        lazy = scan_store_table(
            self.store, self.table, self.spec, batch_rows=batch_rows, on_plan=on_plan
        )
        if start is None and end is None:
            return lazy
        expr = range_expr(time_column_of(self.spec, time_column), start, end)
        return lazy if expr is None else lazy.filter(expr)

    def read_all(self) -> pl.DataFrame:
        """Every row, fast (Arrow end to end on SQLite); order unspecified."""
        with self.store._translate(f"read from {self.name!r}"):
            raw = self.store._read_frame(sa.select(self.table), self._storage_schema)
        return self._decode(raw)

    def read_newest(self, limit: int, by: str | None = None) -> pl.DataFrame:
        """The ``limit`` newest rows, oldest first: the largest values of column ``by``, or
        (None) the last inserted rows. Reads only those rows (see ``hubkit.store.window``)."""
        stmt = newest_select(self.table, self.spec.key, limit, by, dialect=dialect_of(self))
        with self.store._translate(f"read from {self.name!r}"):
            raw = self.store._read_frame(stmt, self._storage_schema)
        return self._decode(raw).reverse()

    def count(self) -> int:
        """The number of stored rows."""
        with self.store._translate(f"count {self.name!r}"), self.store._read() as tx:
            return int(tx.rows(sa.select(sa.func.count()).select_from(self.table))[0][0])

    # -- sync state ---------------------------------------------------------------------


def _upsert_sql(table: sa.Table, spec: EntitySpec, stage_name: str) -> tuple[str, str]:
    """(direct, staged) SQLite upsert statements for ``table``."""
    key = list(spec.key)
    names = [c.name for c in spec.columns]
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
    compiled = conflict(direct).compile(dialect=SQLITE)
    assert list(compiled.positiontup or ()) == [f"p{i}" for i in range(len(names))]
    stage = sa.Table(
        stage_name,
        sa.MetaData(),
        *[sa.Column(n, sa.Text) for n in names],
        schema="temp",
    )
    # SQLite needs a WHERE in INSERT ... SELECT ... ON CONFLICT to parse; true() gives one.
    staged = sqlite_dialect.insert(table).from_select(names, sa.select(*stage.c).where(sa.true()))
    return str(compiled), str(conflict(staged).compile(dialect=SQLITE))
