"""Lazy scans of a real SQLite file: pushdown, equality with Polars, streaming, indexes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as dbapi
import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from hubkit.errors import SchemaError, StoreError
from hubkit.indexes import table_indexes
from hubkit.scan import (
    DEFAULT_BATCH_ROWS,
    ReadPlan,
    SqliteBatches,
    SqliteStatements,
    compile_sqlite,
    read_batches,
    scan_table,
    typed_first_row,
)

ROWS = 200_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]
T0 = datetime(2024, 3, 1, tzinfo=UTC)
SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "symbol": pl.String,
        "price": pl.Float64,
        "size": pl.Float64,
        "time": pl.Datetime("us", "UTC"),
        "block": pl.Boolean,
        "day": pl.Date,
        "side": pl.Enum(["Buy", "Sell"]),
        "fee": pl.Decimal(20, 4),
        "note": pl.String,
    }
)
NULLABLE = ("symbol", "price", "block", "fee", "note")


def make_table() -> sa.Table:
    key = {"id"}
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "price": sa.Double(),
        "size": sa.Double(),
        "time": sa.BigInteger(),
        "block": sa.Boolean(),
    }
    return sa.Table(
        "trades",
        sa.MetaData(),
        *[
            sa.Column(n, types.get(n, sa.Text()), primary_key=n in key, nullable=n in NULLABLE)
            for n in SCHEMA.names()
        ],
    )


def generated(rows: int, seed: int = 7) -> pl.DataFrame:
    """Trades in time order, with nulls; ``note`` is null in the first three quarters."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.integers(1, 20_000, rows)).astype("int64")  # µs steps
    nulls = rng.random((4, rows)) < 0.05
    frame = pl.DataFrame(
        {
            "id": [f"t{i:07d}" for i in range(rows)],
            "symbol": pl.Series(rng.choice(SYMBOLS, rows)).set(pl.Series(nulls[0]), None),
            "price": pl.Series(np.round(rng.uniform(10, 100, rows), 2)).set(
                pl.Series(nulls[1]), None
            ),
            "size": np.round(rng.exponential(1.0, rows), 3),
            "time": (pl.Series(times) + int(T0.timestamp() * 1_000_000)).cast(
                pl.Datetime("us", "UTC")
            ),
            "block": pl.Series(rng.random(rows) < 0.3).set(pl.Series(nulls[2]), None),
            "day": pl.Series(rng.integers(19_700, 19_730, rows)).cast(pl.Date),
            "side": pl.Series(rng.choice(["Buy", "Sell"], rows)).cast(SCHEMA["side"]),
            "fee": pl.Series([str(v) for v in np.round(rng.uniform(0, 1, rows), 4)])
            .cast(SCHEMA["fee"])
            .set(pl.Series(nulls[3]), None),
            "note": [None if i < rows * 3 // 4 else f"n{i % 97}" for i in range(rows)],
        },
        schema=SCHEMA,
    )
    return frame


def stored(frame: pl.DataFrame) -> pl.DataFrame:
    """The values as hubkit stores them (datetimes in µs, 0/1, ISO dates, decimal text)."""
    return frame.with_columns(
        pl.col("time").cast(pl.Int64),
        pl.col("block").cast(pl.Int64),
        pl.col("day").cast(pl.String),
        pl.col("side").cast(pl.String),
        pl.col("fee").cast(pl.String),
    )


def write_table(path: Path, table: sa.Table, frame: pl.DataFrame, *, index: bool) -> None:
    dialect = sqlite_dialect.dialect()
    with dbapi.connect(str(path)) as conn, conn.cursor() as cur:
        cur.execute(str(CreateTable(table).compile(dialect=dialect)))
        if index:
            for ix in table_indexes(table, [("symbol", "time")], key=("id",)):
                cur.execute(str(CreateIndex(ix).compile(dialect=dialect)))
        cur.adbc_ingest(table.name, stored(frame).to_arrow(), mode="append")
        conn.commit()


@dataclass
class Counting:
    """A BatchReader that records the SQL it ran and the rows and batches it fetched."""

    inner: Callable[[ReadPlan, int], Iterator[Any]]
    rows: int = 0
    batches: list[int] = field(default_factory=list)
    statements: list[sa.Select[Any]] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)

    def __call__(self, plan: ReadPlan, batch_rows: int) -> Iterator[Any]:
        self.statements.append(plan.statement)
        self.asked.append(batch_rows)
        for batch in self.inner(plan, batch_rows):
            self.rows += batch.num_rows
            self.batches.append(batch.num_rows)
            yield batch


@dataclass
class Trades:
    path: Path
    table: sa.Table
    frame: pl.DataFrame

    def scan(self, **options: Any) -> tuple[pl.LazyFrame, Counting, list[ReadPlan]]:
        counting = Counting(SqliteBatches(self.path))
        plans: list[ReadPlan] = []
        lf = scan_table(self.table, SCHEMA, counting, on_plan=plans.append, **options)
        return lf, counting, plans


@pytest.fixture(scope="module")
def trades(tmp_path_factory: pytest.TempPathFactory) -> Trades:
    path = tmp_path_factory.mktemp("scan") / "trades.db"
    table, frame = make_table(), generated(ROWS)
    write_table(path, table, frame, index=True)
    return Trades(path, table, frame)


def same_rows(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert_frame_equal(got.sort("id"), want.sort("id"))


def test_a_ten_row_filter_reads_ten_rows(trades: Trades) -> None:
    btc = trades.frame.filter(pl.col("symbol") == "BTCUSDT")
    lo, hi = btc["time"][5_000], btc["time"][5_009]
    query = (pl.col("symbol") == "BTCUSDT") & pl.col("time").is_between(lo, hi)
    lf, counting, _ = trades.scan()
    got = lf.filter(query).collect()
    same_rows(got, trades.frame.filter(query))
    assert got.height == 10
    assert counting.rows == 10  # of 200,000


def test_reading_uses_the_symbol_time_index(trades: Trades) -> None:
    lf, counting, _ = trades.scan()
    lf.filter(
        (pl.col("symbol") == "ETHUSDT")
        & (pl.col("time") >= T0)
        & (pl.col("time") < T0 + timedelta(minutes=1))
    ).collect()
    # The statement as it runs (with its typed first row), explained by SQLite itself.
    sql, params = compile_sqlite(typed_first_row(counting.statements[-1]))
    with dbapi.connect(str(trades.path)) as conn, conn.cursor() as cur:
        cur.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        detail = " | ".join(str(row[-1]) for row in cur.fetchall())
    assert "USING INDEX ix_trades__symbol__time (symbol=? AND time>? AND time<?)" in detail


def test_selecting_columns_reads_only_those(trades: Trades) -> None:
    lf, counting, _ = trades.scan()
    got = lf.filter(pl.col("size") > 3).select("price", "symbol").collect()
    want = trades.frame.filter(pl.col("size") > 3).select("price", "symbol")
    assert_frame_equal(got.sort("price", "symbol"), want.sort("price", "symbol"))
    sql = compile_sqlite(counting.statements[-1])[0]
    assert sql.startswith("SELECT trades.symbol, trades.price, trades.size \nFROM trades")


def test_head_is_a_sql_limit(trades: Trades) -> None:
    lf, counting, _ = trades.scan()
    got = lf.select("id", "side").head(7).collect()
    assert got.height == 7
    assert counting.rows == 7
    assert "LIMIT" in compile_sqlite(counting.statements[-1])[0]


@pytest.mark.parametrize(
    "query",
    [pl.col("side") == "Sell", pl.col("id").str.ends_with("3")],
    ids=["pushed", "applied-by-polars"],
)
def test_a_filtered_head_stops_reading_after_the_first_batches(
    trades: Trades, query: pl.Expr
) -> None:
    # Polars hands a filtered head's limit to the source only as "stop pulling": the
    # streaming engine stops after the batches that fill it.
    lf, counting, _ = trades.scan(batch_rows=1_000)
    got = lf.filter(query).head(5).collect(engine="streaming")
    assert_frame_equal(got, got.filter(query))
    assert got.height == 5
    assert counting.rows <= 10_000  # a few batches of 1,000 out of 200,000


def test_a_streaming_aggregation_reads_the_table_batch_by_batch(trades: Trades) -> None:
    lf, counting, _ = trades.scan(batch_rows=10_000)
    vwap = (pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()
    got = lf.group_by("symbol").agg(vwap.alias("vwap"), pl.len()).collect(engine="streaming")
    want = trades.frame.group_by("symbol").agg(vwap.alias("vwap"), pl.len())
    assert_frame_equal(got.sort("symbol"), want.sort("symbol"), check_row_order=False)
    assert sum(counting.batches) == ROWS
    assert max(counting.batches) <= 10_000 and len(counting.batches) >= ROWS // 10_000


def test_default_batches_are_hubkits_size_and_a_pushed_limit_caps_them(trades: Trades) -> None:
    # Polars hints 100,000-row batches; the driver sizes its buffers for a whole batch, which
    # a small indexed read pays for, so the scan reads in batches of DEFAULT_BATCH_ROWS.
    lf, counting, _ = trades.scan()
    got = lf.select("id", "price").collect(engine="streaming")
    assert got.height == ROWS
    assert counting.asked == [DEFAULT_BATCH_ROWS]
    assert max(counting.batches) <= DEFAULT_BATCH_ROWS < ROWS
    assert len(counting.batches) >= ROWS // DEFAULT_BATCH_ROWS
    # head(n) is a LIMIT: one batch of n rows (and the typed first row) is enough.
    lf, counting, _ = trades.scan()
    assert lf.head(7).collect().height == 7
    assert counting.asked == [8] and counting.batches == [7]


def test_a_column_null_in_the_first_batches_reads_in_small_batches(trades: Trades) -> None:
    # ``note`` is null in the first 150,000 rows: the driver must not type it from them.
    lf, _, _ = trades.scan(batch_rows=1_000)
    got = lf.select("id", "note").collect()
    same_rows(got, trades.frame.select("id", "note"))


def test_each_collect_reads_what_is_committed_then(tmp_path: Path) -> None:
    table, frame = make_table(), generated(50)
    path = tmp_path / "t.db"
    write_table(path, table, frame.head(20), index=False)
    lf = scan_table(table, SCHEMA, SqliteBatches(path))
    assert lf.select(pl.len()).collect().item() == 20
    with dbapi.connect(str(path)) as conn, conn.cursor() as cur:
        cur.adbc_ingest("trades", stored(frame.tail(30)).to_arrow(), mode="append")
        conn.commit()
    same_rows(lf.collect(), frame)


def test_a_schema_column_the_table_lacks_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"no column\(s\) \['volume'\]"):
        scan_table(make_table(), {"id": pl.String, "volume": pl.Float64}, SqliteBatches("x"))


def test_a_missing_database_file_is_a_store_error_and_is_not_created(tmp_path: Path) -> None:
    lf = scan_table(make_table(), SCHEMA, SqliteBatches(tmp_path / "absent.db"))
    with pytest.raises(StoreError, match="no SQLite database"):
        lf.collect()
    assert not (tmp_path / "absent.db").exists()


# -- results equal Polars on the whole frame, for random filters ---------------------------


class Filters:
    """Random filters over the trades columns: pushable atoms, unpushable ones, and/or/not."""

    def __init__(self, frame: pl.DataFrame, seed: int) -> None:
        self.rng = random.Random(seed)
        self.frame = frame

    def value(self, column: str) -> Any:
        return self.frame[column][self.rng.randrange(self.frame.height)]

    def some(self, column: str) -> Any:
        while (v := self.value(column)) is None:
            pass
        return v

    def atom(self) -> pl.Expr:
        r = self.rng
        kind = r.choice(["cmp", "cmp", "in", "between", "null", "bool", "unpushable"])
        if kind == "cmp":
            column = r.choice(["symbol", "price", "size", "time", "day", "id", "side"])
            ops = ["==", "!="] if column == "side" else ["==", "!=", "<", "<=", ">", ">="]
            op, value = r.choice(ops), self.some(column)
            col = pl.col(column)
            exprs = {
                "==": col == value,
                "!=": col != value,
                "<": col < value,
                "<=": col <= value,
                ">": col > value,
                ">=": col >= value,
            }
            return exprs[op]
        if kind == "in":
            column = r.choice(["symbol", "side", "day", "price"])
            values = [self.value(column) for _ in range(r.randint(0, 4))]
            return pl.col(column).is_in(values, nulls_equal=r.random() < 0.5)
        if kind == "between":
            column = r.choice(["price", "time", "day", "size"])
            lo, hi = sorted([self.some(column), self.some(column)])
            closed = r.choice(["both", "left", "right", "none"])
            return pl.col(column).is_between(lo, hi, closed=closed)
        if kind == "null":
            column = r.choice(NULLABLE)
            return pl.col(column).is_null() if r.random() < 0.5 else pl.col(column).is_not_null()
        if kind == "bool":
            return pl.col("block")
        return r.choice(
            [
                pl.col("id").str.ends_with(str(r.randrange(10))),
                (pl.col("price") * pl.col("size")) > r.uniform(0, 200),
                pl.col("price") > pl.col("size") * 40,
                pl.col("fee") <= Decimal(str(round(r.random(), 2))),
                pl.col("note").str.contains("1"),
            ]
        )

    def expr(self, depth: int = 0) -> pl.Expr:
        r = self.rng.random()
        if depth >= 3 or r < 0.35:
            return self.atom()
        if r < 0.6:
            return self.expr(depth + 1) & self.expr(depth + 1)
        if r < 0.85:
            return self.expr(depth + 1) | self.expr(depth + 1)
        return ~self.expr(depth + 1)


def test_random_filters_give_what_polars_gives_on_the_whole_frame(trades: Trades) -> None:
    filters = Filters(trades.frame, seed=20261205)
    lf, counting, plans = trades.scan(batch_rows=50_000)
    pushed = exact = 0
    for i in range(60):
        query = filters.expr()
        want = trades.frame.filter(query)
        engine = "streaming" if i % 2 else "in-memory"
        if i % 5 == 4:  # a limit: any n of the matching rows
            got = lf.filter(query).head(25).collect(engine=engine)
            assert got.height == min(25, want.height), query
            assert got.join(want, on="id", how="anti").height == 0, query
        else:
            same_rows(lf.filter(query).collect(engine=engine), want)
        pushed += plans[-1].pushdown.where is not None
        exact += plans[-1].pushdown.exact
    # The generator exercises both pushed and unpushed filters.
    assert 15 <= pushed < 60 and exact > 5
    assert counting.rows < 60 * ROWS


def test_a_pooled_cursor_reads_a_scan_and_keeps_its_batch_size(trades: Trades) -> None:
    # How a store plugs in: its own ADBC cursor and one compiled-statement cache.
    option = "adbc.sqlite.query.batch_rows"
    statements = SqliteStatements()
    with dbapi.connect(str(trades.path)) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{option: "4194304"})

        def reader(plan: ReadPlan, batch_rows: int) -> Iterator[Any]:
            return read_batches(cur, plan, batch_rows, statements)

        lf = scan_table(trades.table, SCHEMA, reader, batch_rows=1_000)
        for symbol in SYMBOLS[:3]:
            query = (pl.col("symbol") == symbol) & (pl.col("price") < 11)
            same_rows(lf.filter(query).collect(), trades.frame.filter(query))
        assert lf.head(3).collect().height == 3  # closed after the first batch
        assert cur.adbc_statement.get_option(option) == "4194304"


def test_values_that_do_not_decode_are_a_store_error_naming_the_table(tmp_path: Path) -> None:
    table, frame = make_table(), generated(5)
    path = tmp_path / "t.db"
    write_table(path, table, frame, index=False)
    with dbapi.connect(str(path)) as conn, conn.cursor() as cur:
        cur.execute("UPDATE trades SET day = 'yesterday' WHERE id = 't0000003'")
        conn.commit()
    lf = scan_table(table, SCHEMA, SqliteBatches(path))
    assert lf.select("id", "price").collect().height == 5  # other columns still read
    with pytest.raises(StoreError, match="table 'trades' holds values that do not decode"):
        lf.collect()
