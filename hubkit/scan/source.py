"""``scan_table``: a Polars LazyFrame over one SQL table, reading only what the query needs.

Polars calls the registered source with the columns the query uses, its row filter and its
row limit; ``plan_read`` (no I/O) turns those into one SELECT, and the source streams the
result batch by batch through the caller's ``BatchReader``, decoding each batch and
applying the full filter to it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Protocol

import polars as pl
import sqlalchemy as sa
from polars.io.plugins import register_io_source

from hubkit.errors import SchemaError, StoreError
from hubkit.scan.codec import Decoder, default_decoder, default_rules
from hubkit.scan.predicate import ColumnRules, Pushdown, translate

__all__ = ["DEFAULT_BATCH_ROWS", "BatchReader", "ReadPlan", "plan_read", "scan_table"]

# The SQLite driver sizes its buffers for a whole batch: a bigger batch costs a small query
# time (100,000 rows, Polars' usual hint, made a 1,200-row indexed read ~20% slower) and
# gains a full-table read little.
DEFAULT_BATCH_ROWS: Final = 16_384


class BatchReader(Protocol):
    """Runs a plan's SELECT; yields the result as Arrow record batches of <= ``batch_rows``.

    ``plan.statement`` is the SQLAlchemy SELECT. A reader that compiles it itself may
    cache the compiled text by ``plan.shape`` and bind ``plan.params`` by name (compiling
    costs more than a small indexed query). The batches carry the selected columns by
    name, with their stored values. Closing the returned iterator (a generator's
    ``close()``) must release the database connection: a query that needs only the first
    rows stops reading early.
    """

    def __call__(self, plan: ReadPlan, batch_rows: int) -> Iterator[Any]: ...


@dataclass(frozen=True)
class ReadPlan:
    """What one read of a scan does.

    ``statement`` selects the ``read`` columns of ``table`` with the pushed WHERE
    (``pushdown``) and, when set, ``limit``; each decoded batch is then filtered by
    ``predicate`` (the full one; not when the pushed WHERE is exact), cut to ``columns``
    and, when ``n_rows`` is set, the stream stops after that many rows.
    """

    table: sa.Table = field(repr=False)
    read: tuple[str, ...]
    columns: tuple[str, ...]
    predicate: pl.Expr | None
    n_rows: int | None
    limit: int | None
    pushdown: Pushdown

    @cached_property
    def statement(self) -> sa.Select[Any]:
        stmt = sa.select(*[self.table.c[n] for n in self.read])
        if self.pushdown.where is not None:
            stmt = stmt.where(self.pushdown.where)
        if self.limit is not None:
            stmt = stmt.limit(sa.bindparam("limit", self.limit, type_=sa.BigInteger()))
        return stmt

    @property
    def shape(self) -> Hashable:
        """What decides the SQL text: plans of one shape differ only in ``params``."""
        return (self.table.name, self.read, self.pushdown.shape, self.limit is not None)

    @property
    def params(self) -> dict[str, Any]:
        """The statement's bound values by name."""
        if self.limit is None:
            return self.pushdown.params
        return {**self.pushdown.params, "limit": self.limit}


def plan_read(
    table: sa.Table,
    schema: pl.Schema,
    rules: ColumnRules,
    *,
    columns: Sequence[str] | None = None,
    predicate: pl.Expr | None = None,
    n_rows: int | None = None,
) -> ReadPlan:
    """The SELECT for a scan asked for ``columns`` (None: all), ``predicate`` and ``n_rows``.

    Reads the wanted columns plus those the predicate needs, in table order; pushes the safe
    part of the predicate as WHERE; pushes ``n_rows`` as LIMIT only when the WHERE is exact
    (otherwise rows the predicate drops would count against the limit).
    """
    wanted = tuple(schema.names() if columns is None else columns)
    needed = set(wanted)
    pushdown = Pushdown(None, exact=True, table=table)
    if predicate is not None:
        needed.update(predicate.meta.root_names())
        pushdown = translate(predicate, table, rules)
    # A query that needs no column (a bare count) still needs one per row.
    read = tuple(n for n in schema.names() if n in needed) or (schema.names()[0],)
    limit = n_rows if pushdown.exact else None
    return ReadPlan(table, read, wanted, predicate, n_rows, limit, pushdown)


def scan_table(
    table: sa.Table,
    schema: pl.Schema | Mapping[str, pl.DataType],
    read_batches: BatchReader,
    *,
    decode: Decoder | None = None,
    rules: ColumnRules | None = None,
    batch_rows: int | None = None,
    on_plan: Callable[[ReadPlan], None] | None = None,
) -> pl.LazyFrame:
    """A LazyFrame of ``table``'s rows with ``schema``, read when collected.

    ``schema``: the columns (names of ``table``'s columns) and the dtypes to return.
    ``read_batches``: runs the SELECT (``SqliteBatches(path)`` for a SQLite file).
    ``decode``: stored values -> ``schema`` dtypes for any subset of the columns; ``rules``:
    which filters push into SQL and how literals are stored. Both default to hubkit's
    storage conventions (``hubkit.scan.codec``). ``batch_rows``: rows per read batch
    (default: ``DEFAULT_BATCH_ROWS``, or Polars' hint when smaller; a
    pushed LIMIT caps it). ``on_plan`` sees each read's plan
    before it runs (for logging and tests).

    Promises: a query reads only the columns it uses and filters in SQL what can be
    (comparisons, ``is_in``, ``is_between``, null checks, and ``&``/``|``/``~`` on them;
    see ``hubkit.scan.predicate``), using the table's indexes; the rest of the filter runs
    in Polars on each batch. The result always equals Polars applied to the whole table.
    ``head(n)`` on the scan (after ``select``s) is a SQL LIMIT; after a ``filter`` Polars
    does not hand the limit to the source, and ``collect(engine="streaming")`` stops
    reading after the batches that fill it. Reads stream, so a streaming aggregation
    holds a few batches at a time, not the table. Row order is the database's
    (unspecified): sort when order matters. Each ``collect`` reads again and sees the
    data committed when its statement starts.
    """
    schema = pl.Schema(schema)
    missing = [n for n in schema.names() if n not in table.c]
    if missing:
        raise SchemaError(f"table {table.name!r} has no column(s) {missing}")
    rules = default_rules(schema) if rules is None else rules
    decode = default_decoder(schema) if decode is None else decode

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        plan = plan_read(
            table, schema, rules, columns=with_columns, predicate=predicate, n_rows=n_rows
        )
        if on_plan is not None:
            on_plan(plan)
        rows = batch_rows or min(batch_size or DEFAULT_BATCH_ROWS, DEFAULT_BATCH_ROWS)
        if plan.limit is not None:
            rows = max(1, min(rows, plan.limit + 1))  # + the typed first row of a SQLite read
        return _frames(plan, read_batches(plan, rows), decode)

    return register_io_source(
        source, schema=schema, explain_name="hubkit", explain_detail=f"table {table.name}"
    )


def _frames(plan: ReadPlan, batches: Iterator[Any], decode: Decoder) -> Iterator[pl.DataFrame]:
    left = plan.n_rows
    try:
        if left == 0:
            return
        for batch in batches:
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            try:
                frame = decode(frame)
            except pl.exceptions.PolarsError as exc:
                raise StoreError(
                    f"table {plan.table.name!r} holds values that do not decode: {exc}"
                ) from exc
            if plan.predicate is not None and not plan.pushdown.exact:
                frame = frame.filter(plan.predicate)
            if plan.columns != plan.read:
                frame = frame.select(plan.columns)
            if left is not None:
                frame = frame.head(left)
                left -= frame.height
            if frame.height:
                yield frame
            if left == 0:
                return
    finally:
        if isinstance(batches, Generator):
            batches.close()
