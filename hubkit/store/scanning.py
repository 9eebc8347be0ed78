"""Lazy scans of a store's tables: ``TableStore.scan()`` reads through the store's connections.

``StoreBatches`` is the ``hubkit.scan.BatchReader`` of one table of a ``Store``: on a SQLite
file it runs each read on one of the store's pooled ADBC connections (returned to the pool
when the read ends), elsewhere on a SQLAlchemy connection with results streamed in
batches. Values decode with the store's own codec (``hubkit.store.codec``), so a scanned
row equals the row ``query`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any, cast

import polars as pl

from hubkit.scan import (
    ColumnRules,
    Encoder,
    ReadPlan,
    SqliteStatements,
    default_rules,
    read_batches,
    scan_table,
)
from hubkit.store.codec import from_storage, storage_kind

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec
    from hubkit.store.engine import Backend
    from hubkit.store.pg import PgTx

__all__ = ["StoreBatches", "scan_store_table"]


class StoreBatches:
    """Runs scan reads of one table on ``store``'s connections (a ``BatchReader``).

    ``storage``: the stored value types by column (for the SQLAlchemy path, which gets rows
    rather than Arrow data). Database failures raise ``StoreError``; a closed store raises
    ``ClosedError`` when a read starts.
    """

    def __init__(self, store: Backend, storage: pl.Schema) -> None:
        self.store = store
        self.storage = storage
        self.statements = SqliteStatements()

    def __call__(self, plan: ReadPlan, batch_rows: int) -> Iterator[Any]:
        store = self.store
        with store._translate(f"scan of {plan.table.name!r}"):
            if store._pg is not None:
                # PostgreSQL: the driver streams the result; re-cut to ``batch_rows``.
                with store._read() as tx:
                    frames = cast("PgTx", tx).frames(plan.statement)
                    try:
                        for frame in frames:
                            for part in frame.iter_slices(batch_rows):
                                yield part.to_arrow()
                    finally:
                        frames.close()
                return
            if store._fast:
                with store._guarded(), store._session() as session:
                    yield from read_batches(session.cur, plan, batch_rows, self.statements)
                return
            schema = {n: self.storage[n] for n in plan.read}
            with store._guarded(), store.engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(plan.statement)
                for rows in result.partitions(batch_rows):
                    frame = pl.DataFrame(
                        [tuple(r) for r in rows], schema=schema, orient="row", strict=False
                    )
                    yield frame.to_arrow()


def _native_encoder(spec: EntitySpec, encode: Encoder) -> Encoder:
    """``encode``, but datetimes (as UTC) and dates stay values of their own type."""
    kinds = {c.name: c.kind for c in spec.columns}

    def native(name: str, value: Any) -> Any:
        kind = kinds.get(name)
        if kind == "datetime":
            encode(name, value)  # the same checks: a datetime, aware as the column is
            return value.astimezone(UTC) if value.tzinfo is not None else value
        if kind == "date":
            encode(name, value)
            return value
        return encode(name, value)

    return native


def scan_store_table(
    store: Backend,
    table: Any,
    spec: EntitySpec,
    *,
    batch_rows: int | None = None,
    on_plan: Callable[[ReadPlan], None] | None = None,
) -> pl.LazyFrame:
    """A LazyFrame over ``table`` (an entity table of ``store``) with ``spec.schema``."""
    columns = {c.name: c for c in spec.columns}
    storage = pl.Schema({c.name: storage_kind(c) for c in spec.columns})

    def decode(frame: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame([from_storage(columns[s.name], s) for s in frame.iter_columns()])

    rules = default_rules(spec.schema)
    if store.engine.dialect.name != "sqlite":
        # Booleans are pushed as 0/1, which only SQLite compares with a BOOLEAN column. On a
        # store of native types (PostgreSQL) datetimes and dates are pushed as themselves
        # (cast in SQL: ``hubkit.scan.condition``), so a time range uses the indexes;
        # decimals are compared by Polars after the read.
        kept = {"bool"} | ({"decimal"} if store._native else set())
        skip = {c.name for c in spec.columns if c.kind in kept}
        compare = {n: c for n, c in rules.compare.items() if n not in skip}
        encode = _native_encoder(spec, rules.encode) if store._native else rules.encode
        rules = ColumnRules(encode=encode, compare=compare, native_times=store._native)
    return scan_table(
        table,
        spec.schema,
        StoreBatches(store, storage),
        decode=decode,
        rules=rules,
        batch_rows=batch_rows,
        on_plan=on_plan,
    )
