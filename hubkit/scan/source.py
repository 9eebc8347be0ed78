"""``scan_table``: a Polars LazyFrame over one SQL table, reading only what the query needs.

Polars calls the registered source with the columns the query uses, its row filter and its
row limit; ``plan_read`` (no I/O) turns those into one SELECT, and the source streams the
result batch by batch through the caller's ``BatchReader``, decoding each batch and
applying the full filter to it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import polars as pl
import sqlalchemy as sa
from polars.io.plugins import register_io_source

from hubkit.errors import SchemaError
from hubkit.scan.codec import Decoder, default_decoder, default_rules
from hubkit.scan.predicate import ColumnRules, Pushdown, translate

__all__ = ["DEFAULT_BATCH_ROWS", "BatchReader", "ReadPlan", "plan_read", "scan_table"]

DEFAULT_BATCH_ROWS: Final = 65_536


class BatchReader(Protocol):
    """Runs a SELECT and yields its result as Arrow record batches of at most ``batch_rows``.

    The batches carry the selected columns by name, with their stored values. Closing the
    returned iterator (a generator's ``close()``) must release the database connection:
    a query that needs only the first rows stops reading early.
    """

    def __call__(self, stmt: sa.Select[Any], batch_rows: int) -> Iterator[Any]: ...


@dataclass(frozen=True)
class ReadPlan:
    """What one read of a scan does.

    ``statement`` selects ``read`` columns with the pushed WHERE and LIMIT; each decoded
    batch is then filtered by ``predicate`` (the full one), cut to ``columns`` and, when
    ``n_rows`` is set, the stream stops after that many rows.
    """

    statement: sa.Select[Any]
    read: tuple[str, ...]
    columns: tuple[str, ...]
    predicate: pl.Expr | None
    n_rows: int | None
    pushdown: Pushdown


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
    pushdown = Pushdown(None, exact=True)
    if predicate is not None:
        needed.update(predicate.meta.root_names())
        pushdown = translate(predicate, table, rules)
    # A query that needs no column (a bare count) still needs one per row.
    read = tuple(n for n in schema.names() if n in needed) or (schema.names()[0],)
    stmt = sa.select(*[table.c[n] for n in read])
    if pushdown.where is not None:
        stmt = stmt.where(pushdown.where)
    if n_rows is not None and pushdown.exact:
        stmt = stmt.limit(n_rows)
    return ReadPlan(stmt, read, wanted, predicate, n_rows, pushdown)


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
    (default: Polars' hint, else ``DEFAULT_BATCH_ROWS``). ``on_plan`` sees each read's plan
    before it runs (for logging and tests).

    Promises: ``select``/``filter``/``head`` before ``collect`` read only the columns used,
    filter in SQL what can be (comparisons, ``is_in``, ``is_between``, null checks, and
    ``&``/``|``/``~`` on them; see ``hubkit.scan.predicate``) and stop after the rows asked
    for; the result always equals Polars applied to the whole table. Reads stream, so
    ``collect(engine="streaming")`` of an aggregation holds a batch at a time, not the
    table. Row order is the database's (unspecified): sort when order matters. Each
    ``collect`` reads again and sees the committed data of that moment.
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
        rows = batch_rows or batch_size or DEFAULT_BATCH_ROWS
        return _frames(plan, read_batches(plan.statement, rows), decode)

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
            frame = decode(frame)
            if plan.predicate is not None:
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
