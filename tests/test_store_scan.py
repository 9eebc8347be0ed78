"""``sink.scan()`` / ``TableStore.scan()`` and ``query(start=, end=)`` on real stores.

The scan's promise is checked against Polars on the whole frame that was written, for a
set of random filters; pushdown is checked by counting the rows that leave the database.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy.dialects import postgresql

import hubkit
import hubkit.store.scanning as scanning
from hubkit.errors import ClosedError, SchemaError, ValidationError
from hubkit.scan import ReadPlan
from hubkit.store import Store, TableStore

ROWS = 200_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]
T0 = datetime(2024, 3, 1, tzinfo=UTC)


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


@hubkit.index("symbol", "time")
@dataclass
class Fill:
    id: str
    symbol: str | None
    price: float | None
    qty: int
    side: Side
    time: datetime
    settled: datetime | None
    day: date
    block: bool | None
    fee: Decimal | None


def generated(rows: int, seed: int = 3) -> pl.DataFrame:
    """Fills in time order (one every 10 ms), with nulls in the nullable columns."""
    rng = np.random.default_rng(seed)
    nulls = [pl.Series(rng.random(rows) < 0.05) for _ in range(5)]
    times = pl.Series(np.arange(rows, dtype="int64") * 10_000 + 1_709_251_200_000_000)
    frame = pl.DataFrame(
        {
            "id": [f"f{i:07d}" for i in range(rows)],
            "symbol": pl.Series(rng.choice(SYMBOLS, rows)),
            "price": pl.Series(np.round(rng.uniform(10, 1000, rows), 2)),
            "qty": pl.Series(rng.integers(-50, 50, rows)),
            "side": pl.Series(rng.choice(["Buy", "Sell"], rows)),
            "time": times.cast(pl.Datetime("us", "UTC")),
            "settled": (times + 5_000_000).cast(pl.Datetime("us", "UTC")),
            "day": (times // 86_400_000_000).cast(pl.Int32).cast(pl.Date),
            "block": pl.Series(rng.random(rows) < 0.1),
            "fee": pl.Series([f"0.{i % 97:02d}" for i in range(rows)]),
        }
    )
    return frame.with_columns(
        pl.when(~nulls[i]).then(pl.col(c)).alias(c)
        for i, c in enumerate(["symbol", "price", "settled", "block", "fee"])
    )


@dataclass
class Filled:
    path: Path
    store: Store
    table: TableStore
    frame: pl.DataFrame  # what was written, as hubkit normalised it


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    path = tmp_path_factory.mktemp("scan") / "fills.db"
    with Store(path) as store:
        table = store.table(hubkit.reflect(Fill, "id"))
        written = table.upsert(generated(ROWS))
        yield Filled(path, store, table, written)


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Counts the rows (and records the SQL) of every scan read from the database."""
    seen: dict[str, Any] = {"rows": 0, "sql": []}
    real = scanning.read_batches

    def counting(cursor: Any, plan: ReadPlan, batch_rows: int, statements: Any) -> Iterator[Any]:
        seen["sql"].append(statements.sql(plan)[0])
        for batch in real(cursor, plan, batch_rows, statements):
            seen["rows"] += batch.num_rows
            yield batch

    monkeypatch.setattr(scanning, "read_batches", counting)
    return seen


def by_id(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("id")


# -- random filters: the scan equals Polars on the whole frame -------------------------------


def random_leaf(rng: random.Random) -> pl.Expr:
    t = T0 + timedelta(seconds=rng.uniform(0, ROWS / 100))
    d = date(2024, 3, 1) + timedelta(days=rng.randrange(0, 4))
    lo = rng.uniform(10, 1000)
    leaves = [
        lambda: pl.col("symbol") == rng.choice(SYMBOLS),
        lambda: pl.col("symbol") != rng.choice(SYMBOLS),
        lambda: pl.col("symbol").is_in(rng.sample(SYMBOLS, 2)),
        lambda: pl.col("symbol").is_null(),
        lambda: pl.col("price").is_not_null(),
        lambda: pl.col("price") > lo,
        lambda: pl.col("price") <= lo,
        lambda: pl.col("price").is_between(lo, lo + 50, closed=rng.choice(["both", "left"])),
        lambda: pl.col("qty") < rng.randrange(-50, 50),
        lambda: pl.col("qty").is_in([1, 2, 3]),
        lambda: pl.col("time") >= t,
        lambda: pl.col("time").is_between(t, t + timedelta(seconds=30)),
        lambda: pl.col("settled") < t,
        lambda: pl.col("day") == d,
        lambda: pl.col("block"),
        lambda: pl.col("side") == rng.choice(["Buy", "Sell"]),
        lambda: pl.col("fee") > "0.50",
        lambda: pl.col("symbol").str.starts_with("B"),  # not pushed: Polars applies it
        lambda: (pl.col("price") * 2) > lo,  # not pushed
    ]
    return rng.choice(leaves)()


def random_filter(rng: random.Random, depth: int = 2) -> pl.Expr:
    if depth == 0 or rng.random() < 0.3:
        return random_leaf(rng)
    a, b = random_filter(rng, depth - 1), random_filter(rng, depth - 1)
    combined = rng.choice([a & b, a | b, a & b, ~a & b])
    return ~combined if rng.random() < 0.15 else combined


def test_scan_equals_polars_on_the_whole_frame_for_random_filters(filled: Filled) -> None:
    rng = random.Random(11)
    lazy = filled.table.scan()
    for _ in range(30):
        expr = random_filter(rng)
        got = lazy.filter(expr).collect()
        assert_frame_equal(by_id(got), by_id(filled.frame.filter(expr))), str(expr)


def test_scan_composes_with_select_head_and_streaming(filled: Filled) -> None:
    lazy = filled.table.scan()
    assert lazy.collect_schema() == filled.frame.schema
    picked = lazy.filter(pl.col("symbol") == "ETHUSDT").select("id", "price").collect()
    want = filled.frame.filter(pl.col("symbol") == "ETHUSDT").select("id", "price")
    assert_frame_equal(by_id(picked), by_id(want))
    assert lazy.head(7).collect().height == 7
    vwap = ((pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum()).alias("vwap")
    streamed = lazy.group_by("symbol").agg(vwap, pl.len()).collect(engine="streaming")
    eager = filled.frame.group_by("symbol").agg(vwap, pl.len())
    assert_frame_equal(streamed.sort("symbol"), eager.sort("symbol"), rel_tol=1e-9)


def test_a_filter_for_ten_rows_reads_about_ten_rows(
    filled: Filled, fetched: dict[str, Any]
) -> None:
    # Ten consecutive fills are 100 ms apart; one symbol's share of them is smaller.
    t = T0 + timedelta(seconds=1000)
    expr = pl.col("time").is_between(t, t + timedelta(milliseconds=99))
    got = filled.table.scan().filter(expr).collect()
    assert got.height == 10
    assert fetched["rows"] <= 11  # the rows asked for (and the typed first row at most)

    fetched["rows"] = 0
    one = (pl.col("symbol") == "BTCUSDT") & pl.col("time").is_between(t, t + timedelta(seconds=1))
    got = filled.table.scan().filter(one).collect()
    assert got.height == filled.frame.filter(one).height > 0
    assert fetched["rows"] <= got.height + 1
    assert "WHERE" in fetched["sql"][-1]

    fetched["rows"] = 0
    assert filled.table.scan().head(5).collect().height == 5
    assert fetched["rows"] <= 6


def test_the_pushed_query_uses_the_declared_index(filled: Filled) -> None:
    import sqlite3

    plans: list[ReadPlan] = []
    t = T0 + timedelta(seconds=50)
    lazy = filled.table.scan(on_plan=plans.append)
    lazy.filter((pl.col("symbol") == "SOLUSDT") & (pl.col("time") >= t)).collect()
    sql, params = scanning.SqliteStatements().sql(plans[-1])
    with sqlite3.connect(filled.path) as conn:
        plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX ix_fill__symbol__time (symbol=? AND time>?)" in plan


def test_scan_sees_rows_written_after_it_was_made(tmp_path: Path) -> None:
    with hubkit.open_sink(Fill, "id", store=tmp_path / "s.db") as sink:
        lazy = sink.scan()
        assert lazy.collect().height == 0
        sink.dao.upsert(generated(30))
        assert lazy.select(pl.len()).collect().item() == 30
        since = T0 + timedelta(milliseconds=100)
        assert sink.scan(start=since).collect().height == 20
    with pytest.raises(ClosedError):
        lazy.collect()


def test_scan_through_sqlalchemy_and_postgresql(tmp_path: Path, postgres_database: str) -> None:
    frame = generated(2_000)
    expr = (pl.col("symbol").is_in(["BTCUSDT", "SOLUSDT"]) & (pl.col("price") > 300)) | (
        pl.col("block") & pl.col("fee").is_null()
    )
    for url, fast in ((tmp_path / "plain.db", False), (postgres_database, None)):
        with Store(url, fast=fast) as store:
            table = store.table(hubkit.reflect(Fill, "id"))
            written = table.upsert(frame)
            got = table.scan(batch_rows=300).filter(expr).collect()
            assert_frame_equal(by_id(got), by_id(written.filter(expr)))
            assert table.scan().head(3).collect().height == 3


def test_postgresql_scans_push_time_and_date_filters(postgres_database: str) -> None:
    # Datetimes and dates are native there: pushed as such, a time range uses the indexes
    # instead of reading the whole table into Polars.
    frame = generated(3_000)
    t0 = T0 + timedelta(seconds=5)
    queries = [
        (pl.col("symbol") == "BTCUSDT") & pl.col("time").is_between(t0, t0 + timedelta(seconds=3)),
        pl.col("settled") < t0,
        pl.col("settled").is_null() | (pl.col("time") >= t0 + timedelta(microseconds=10_001)),
        pl.col("day") == frame.get_column("day")[0],
        pl.col("time").is_in([T0, T0 + timedelta(milliseconds=10), T0 + timedelta(hours=1)]),
    ]
    with Store(postgres_database) as store:
        table = store.table(hubkit.reflect(Fill, "id"))
        written = table.upsert(frame)
        for query in queries:
            plans: list[ReadPlan] = []
            got = table.scan(on_plan=plans.append).filter(query).collect()
            assert_frame_equal(by_id(got), by_id(written.filter(query)))
            assert plans[-1].pushdown.exact, query
        plans = []
        table.scan(start=t0, end=t0 + timedelta(seconds=1), on_plan=plans.append).collect()
        where = str(plans[-1].statement.compile(dialect=postgresql.dialect()))
        assert "fill.time >= CAST(" in where and "fill.time < CAST(" in where


def test_postgresql_scans_stream_and_stop_early(postgres_database: str) -> None:
    frame = generated(20_000)
    with Store(postgres_database) as store:
        table = store.table(hubkit.reflect(Fill, "id"))
        written = table.upsert(frame)
        lazy = table.scan(batch_rows=1_000)
        # not pushable: Polars filters each batch and stops pulling once it has five
        late = pl.col("id").str.ends_with("7")
        got = lazy.filter(late).head(5).collect(engine="streaming")
        assert got.height == 5 and got.get_column("id").str.ends_with("7").all()
        # the early stop ended its read: the store's connections serve writes and reads
        table.upsert(generated(1, seed=9).with_columns(pl.lit("extra").alias("id")))
        assert table.count() == 20_001
        vwap = (pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum()
        streamed = lazy.group_by("symbol").agg(vwap, pl.len()).collect(engine="streaming")
        whole = table.read_all().group_by("symbol").agg(vwap, pl.len())
        assert_frame_equal(streamed.sort("symbol"), whole.sort("symbol"))
        assert written.height == 20_000


# -- time ranges in query and scan -------------------------------------------------------------


def test_query_and_scan_take_the_same_time_range(filled: Filled) -> None:
    start, end = T0 + timedelta(seconds=10), T0 + timedelta(seconds=12)
    want = filled.frame.filter((pl.col("time") >= start) & (pl.col("time") < end))
    assert want.height == 200
    queried = filled.table.query(start=start, end=end, order_by="id")
    assert_frame_equal(queried, by_id(want))
    assert_frame_equal(by_id(filled.table.scan(start=start, end=end).collect()), by_id(want))
    # Text bounds (UTC when no zone is given), an open side, and other conditions with it.
    texts = filled.table.query(
        {"symbol": "XRPUSDT"}, start="2024-03-01T00:00:10", end="2024-03-01T00:00:12Z"
    )
    assert_frame_equal(by_id(texts), by_id(want.filter(pl.col("symbol") == "XRPUSDT")))
    tail = filled.table.query(start=T0 + timedelta(seconds=(ROWS - 5) / 100))
    assert tail.height == 5
    settled = filled.table.query(end=T0 + timedelta(seconds=5), time_column="settled")
    assert_frame_equal(
        by_id(settled), by_id(filled.frame.filter(pl.col("settled") < T0 + timedelta(seconds=5)))
    )


def test_sink_dao_query_takes_a_time_range(tmp_path: Path) -> None:
    with hubkit.open_sink(Fill, "id", store=tmp_path / "s.db") as sink:
        sink.dao.upsert(generated(100))
        got = sink.dao.query(start=T0 + timedelta(milliseconds=500), order_by="time", limit=3)
        assert got.get_column("id").to_list() == ["f0000050", "f0000051", "f0000052"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start": datetime(2024, 3, 1)}, ValidationError, "naive datetime"),
        ({"end": "yesterday"}, ValidationError, "end='yesterday' is not an ISO 8601"),
        ({"start": 1.5}, ValidationError, "start=1.5 is not a time"),
        ({"start": T0, "time_column": "venue"}, ValidationError, "no column 'venue'"),
        ({"start": "0.1", "time_column": "fee"}, SchemaError, "a decimal column"),
    ],
)
def test_bad_ranges_are_refused_naming_what_is_wrong(
    filled: Filled, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        filled.table.query(**kwargs)
    with pytest.raises(error, match=message):
        filled.table.scan(**kwargs)


def test_an_entity_without_a_datetime_column_needs_time_column(tmp_path: Path) -> None:
    @dataclass
    class Count:
        id: str
        n: int

    with Store(tmp_path / "c.db") as store:
        table = store.table(hubkit.reflect(Count, "id"))
        table.upsert([Count("a", 1), Count("b", 5), Count("c", 9)])
        with pytest.raises(SchemaError, match="no datetime column"):
            table.query(start=1)
        got = table.query(start=2, end=9, time_column="n")
        assert got.get_column("id").to_list() == ["b"]


def test_query_with_a_range_runs_on_the_index(tmp_path: Path) -> None:
    import sqlite3

    import sqlalchemy as sa

    path = tmp_path / "q.db"
    seen: list[tuple[str, Any]] = []
    with Store(path, fast=False) as store:  # SQLAlchemy: its statements can be watched
        table = store.table(hubkit.reflect(Fill, "id"))
        frame = generated(1_000)
        table.upsert(frame)

        @sa.event.listens_for(store.engine, "before_cursor_execute")
        def watch(conn: Any, cursor: Any, sql: str, params: Any, *args: Any) -> None:
            seen.append((sql, params))

        got = table.query({"symbol": "BTCUSDT"}, start=T0, end=T0 + timedelta(seconds=2))
    assert got.height == frame.head(200).filter(pl.col("symbol") == "BTCUSDT").height > 0
    sql, params = next((s, p) for s, p in seen if s.lstrip().startswith("SELECT"))
    with sqlite3.connect(path) as conn:
        plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX ix_fill__symbol__time (symbol=? AND time>? AND time<?)" in plan
