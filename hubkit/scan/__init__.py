"""Lazy queries over stored tables: Polars LazyFrames whose filters run in SQL.

``scan_table(table, schema, read_batches)`` returns a ``pl.LazyFrame`` over one SQL table
(see ``hubkit.scan.source``); ``SqliteBatches(path)`` reads a SQLite file for it::

    lf = scan_table(table, schema, SqliteBatches("data.db"))
    lf.filter((pl.col("symbol") == "BTCUSDT") & pl.col("time").is_between(t0, t1)).collect()
    lf.group_by("symbol").agg(pl.col("size").sum()).collect(engine="streaming")

Parts: ``predicate`` (Polars filter -> pushed condition, no I/O), ``condition`` (that
condition's tree form and SQL), ``codec`` (hubkit's storage conventions by dtype),
``source`` (the Polars IO source), ``sqlite`` (ADBC batches, compiled-statement cache).
"""

from hubkit.scan.codec import Decoder, default_decoder, default_rules
from hubkit.scan.condition import Condition
from hubkit.scan.predicate import ColumnRules, Comparability, Encoder, Pushdown, translate
from hubkit.scan.source import DEFAULT_BATCH_ROWS, BatchReader, ReadPlan, plan_read, scan_table
from hubkit.scan.sqlite import (
    SqliteBatches,
    SqliteStatements,
    compile_sqlite,
    read_batches,
    typed_first_row,
)

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "BatchReader",
    "ColumnRules",
    "Comparability",
    "Condition",
    "Decoder",
    "Encoder",
    "Pushdown",
    "ReadPlan",
    "SqliteBatches",
    "SqliteStatements",
    "compile_sqlite",
    "default_decoder",
    "default_rules",
    "plan_read",
    "read_batches",
    "scan_table",
    "translate",
    "typed_first_row",
]
