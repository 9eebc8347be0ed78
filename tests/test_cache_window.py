"""The default cache is a bounded window: the newest rows by the entity's time column (or by
write order), read alone from SQL on real SQLite files, kept bounded as rows stream in."""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from hubkit.cache import DEFAULT_WINDOW, FrameCache
from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.entity import reflect
from hubkit.sink import open_sink
from hubkit.status import status_html, status_table, status_text
from hubkit.store import Store
from hubkit.store.window import newest_select

T0 = datetime(2024, 1, 1, tzinfo=UTC)
BIG = DEFAULT_WINDOW + 20_000  # a table bigger than the default window


@dataclass
class Tick:
    id: int
    symbol: str
    price: float
    time: datetime


@dataclass
class Note:  # no datetime field: the window follows write order
    id: int
    text: str


def ticks(ids: list[int]) -> pl.DataFrame:
    """Rows whose time grows with their id (one second apart)."""
    return pl.DataFrame(
        {
            "id": ids,
            "symbol": ["BTCUSDT" if i % 2 else "ETHUSDT" for i in ids],
            "price": [float(i) for i in ids],
            "time": [T0 + timedelta(seconds=i) for i in ids],
        },
        schema=reflect(Tick, "id").schema,
    )


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file with BIG ticks, written in shuffled order: insertion order is not time
    order, so a window by write order would hold other rows than the newest by time."""
    path = tmp_path_factory.mktemp("window") / "big.db"
    ids = list(range(BIG))
    random.Random(7).shuffle(ids)
    with Store(path) as store:
        table = store.table(reflect(Tick, "id"))
        for start in range(0, BIG, 40_000):
            table.upsert(ticks(ids[start : start + 40_000]))
    return path


@pytest.fixture
def big(big_file: Path, tmp_path: Path) -> Path:
    """A copy of the big file for one test (tests write to it)."""
    return Path(shutil.copy(big_file, tmp_path / "big.db"))


class Fetches:
    """Counts the rows the store hands back from SQL (every frame read goes through
    ``Store._read_frame``), with the SQL of each read."""

    def __init__(self, store: Store) -> None:
        self.reads: list[tuple[str, int]] = []
        original = store._read_frame

        def counted(stmt: sa.Select[Any], schema: pl.Schema) -> pl.DataFrame:
            frame = original(stmt, schema)
            self.reads.append((str(stmt), frame.height))
            return frame

        store._read_frame = counted  # type: ignore[method-assign]

    @property
    def rows(self) -> int:
        return sum(height for _, height in self.reads)


@pytest.fixture
def store(big: Path) -> Iterator[Store]:
    with Store(big) as opened:
        yield opened


def newest_ids(count: int, total: int = BIG) -> set[int]:
    return set(range(total - count, total))


# -- opening ---------------------------------------------------------------------------------


def test_default_cache_holds_exactly_the_newest_window_and_reads_only_it(store: Store) -> None:
    fetches = Fetches(store)
    with open_sink(Tick, "id", store=store) as sink:
        assert sink.cache is not None and sink.cache.max_rows == DEFAULT_WINDOW
        # only the window (and one row to learn that the table holds more) came from SQL
        assert fetches.rows == DEFAULT_WINDOW + 1
        assert all("ORDER BY" in sql and "LIMIT" in sql for sql, _ in fetches.reads)
        frame = sink.frame()
        assert frame.height == DEFAULT_WINDOW
        assert set(frame["id"].to_list()) == newest_ids(DEFAULT_WINDOW)
        assert frame["time"].is_sorted()  # oldest first, like the writes that follow
        assert sink.dao.count() == BIG  # the store keeps everything


def test_status_and_reprs_say_the_rows_are_a_window(store: Store) -> None:
    with open_sink(Tick, "id", store=store) as sink:
        assert sink.cache is not None and not sink.cache.complete
        status = sink.status()
        assert status.rows == DEFAULT_WINDOW
        assert status.window == DEFAULT_WINDOW
        assert "100,000 (window)" in status_text(status)
        assert "the store holds more" in status_html(status)
        assert status_table(status)["window"].to_list() == [DEFAULT_WINDOW]
        assert "newest window" in repr(sink)
        assert sink.cache.window == "newest 100,000 by 'time' (partial)"
        assert "newest 100,000 by 'time' (partial)" in repr(sink.cache)


def test_whole_table_cache_loads_every_row(store: Store) -> None:
    fetches = Fetches(store)
    with open_sink(Tick, "id", store=store, cache=FrameCache(max_rows=None)) as sink:
        assert fetches.rows == BIG
        assert sink.frame().height == BIG
        assert sink.status().window is None
        assert sink.cache is not None and sink.cache.window == "whole table"


def test_frame_full_reads_the_whole_table(store: Store) -> None:
    with open_sink(Tick, "id", store=store) as sink:
        full = sink.frame(full=True)
        assert full.height == BIG
        assert set(full["id"].to_list()) == set(range(BIG))
        assert sink.lazy(full=True).select(pl.len()).collect().item() == BIG
        assert sink.lazy().select(pl.len()).collect().item() == DEFAULT_WINDOW
        assert sink.frame().height == DEFAULT_WINDOW  # the cache itself stays a window


def test_a_stale_window_reloads_only_the_window(store: Store) -> None:
    with open_sink(Tick, "id", store=store) as sink:
        assert sink.cache is not None
        sink.cache.invalidate()
        fetches = Fetches(store)
        assert sink.frame().height == DEFAULT_WINDOW
        assert fetches.rows == DEFAULT_WINDOW + 1


def window_plan(path: Path) -> str:
    """SQLite's plan for the window query of the tick table."""
    with Store(path) as store:
        table = store.table(reflect(Tick, "id")).table
    stmt = newest_select(table, ("id",), DEFAULT_WINDOW + 1, "time", dialect="sqlite")
    sql = stmt.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True})
    with sqlite3.connect(path) as conn:
        return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


def indexes_of(path: Path) -> dict[str, str]:
    """{index name: its first column} of the tick table."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT il.name, ii.name FROM pragma_index_list('tick') AS il, "
            "pragma_index_info(il.name) AS ii WHERE ii.seqno = 0"
        )
        return dict(rows.fetchall())


def test_opening_indexes_the_time_column_so_the_window_query_walks_it(big: Path) -> None:
    assert "time" not in indexes_of(big).values()
    assert "TEMP B-TREE" in window_plan(big)  # without an index: a sort of the whole table
    with open_sink(Tick, "id", store=big):
        pass
    assert indexes_of(big).get("ix_tick__time") == "time"
    plan = window_plan(big)
    assert "ix_tick__time" in plan
    assert "TEMP B-TREE" not in plan  # no sort: the rows come off the index newest first


def test_an_index_that_starts_with_the_time_column_is_used_as_it_is(big: Path) -> None:
    with sqlite3.connect(big) as conn:
        conn.execute("CREATE INDEX by_time_and_symbol ON tick (time, symbol)")
    with open_sink(Tick, "id", store=big) as sink:
        assert sink.frame().height == DEFAULT_WINDOW
    assert [n for n, first in indexes_of(big).items() if first == "time"] == ["by_time_and_symbol"]
    assert "by_time_and_symbol" in window_plan(big)


def test_when_the_index_cannot_be_made_the_window_is_read_without_it(
    big: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(big) as conn:  # the index's name is taken
        conn.execute("CREATE TABLE ix_tick__time (x INTEGER)")
    with caplog.at_level("WARNING", logger="hubkit.sink"), open_sink(Tick, "id", store=big) as sink:
        assert set(sink.frame()["id"].to_list()) == newest_ids(DEFAULT_WINDOW)
    assert "read without an index on 'time'" in caplog.text
    assert "time" not in indexes_of(big).values()


def test_a_whole_table_cache_adds_no_index(big: Path) -> None:
    with open_sink(Tick, "id", store=big, cache=FrameCache(max_rows=None)):
        pass
    assert "time" not in indexes_of(big).values()


# -- streaming in ----------------------------------------------------------------------------


def test_the_window_stays_bounded_as_rows_stream_in(store: Store) -> None:
    with open_sink(Tick, "id", store=store) as sink:
        assert sink.cache is not None
        total = BIG
        for _ in range(6):
            sink.dao.upsert(ticks(list(range(total, total + 5_000))))
            total += 5_000
            assert len(sink.cache) == DEFAULT_WINDOW
            assert set(sink.frame()["id"].to_list()) == newest_ids(DEFAULT_WINDOW, total)
        # a late row older than the window is stored but does not push a newer one out
        sink.dao.upsert(ticks([-1]))
        assert set(sink.frame()["id"].to_list()) == newest_ids(DEFAULT_WINDOW, total)
        assert sink.dao.get(-1) == Tick(-1, "BTCUSDT", -1.0, T0 - timedelta(seconds=1))
        assert sink.dao.count() == total + 1


def test_a_table_smaller_than_the_window_is_held_whole(tmp_path: Path) -> None:
    with Store(tmp_path / "small.db") as store:
        store.table(reflect(Tick, "id")).upsert(ticks(list(range(50))))
        with open_sink(Tick, "id", store=store) as sink:
            assert sink.cache is not None and sink.cache.complete
            assert sink.status().window is None
            assert "(window)" not in status_text(sink.status())
            fetches = Fetches(store)
            assert sink.frame(full=True).height == 50
            assert fetches.rows == 0  # the cache answered: it holds the whole table


def test_without_a_time_column_the_window_follows_write_order(tmp_path: Path) -> None:
    with Store(tmp_path / "notes.db") as store:
        table = store.table(reflect(Note, "id"))
        ids = list(range(1_500))
        random.Random(3).shuffle(ids)
        for start in range(0, 1_500, 100):
            table.upsert([Note(i, f"note {i}") for i in ids[start : start + 100]])
        with open_sink(Note, "id", store=store, cache=FrameCache(max_rows=1_000)) as sink:
            assert sink.frame()["id"].to_list() == ids[-1_000:]  # the last inserted, in order
            assert sink.cache is not None and sink.cache.window_by is None
            sink.dao.upsert([Note(5_000, "new")])
            assert sink.frame()["id"].to_list() == [*ids[-999:], 5_000]


# -- the one-liners still return whole datasets ----------------------------------------------


def test_catalog_load_returns_every_stored_row_not_a_window(big: Path) -> None:
    async def nothing_to_sync(request: SyncRequest) -> None:
        return None

    catalog = Catalog([Dataset("ticks", Tick, "id", nothing_to_sync)])
    try:
        frame = catalog.load("ticks", store=big)
        assert frame.height == BIG
        assert set(frame.filter(symbol="BTCUSDT")["id"].to_list()) == set(range(1, BIG, 2))
    finally:
        catalog.close()


# -- the cache alone -------------------------------------------------------------------------


def test_a_time_window_evicts_the_oldest_by_time_not_by_write() -> None:
    cache = FrameCache(max_rows=3)
    cache.bind("id", reflect(Tick, "id").schema, time_column="time")
    cache.load(ticks([5, 1, 9, 7]))  # write order differs from time order
    assert sorted(cache.frame()["id"].to_list()) == [5, 7, 9]
    assert not cache.complete
    cache.put(ticks([2]))  # older than the window: dropped at the next compaction
    assert sorted(cache.frame()["id"].to_list()) == [5, 7, 9]
    cache.put(ticks([10]))
    assert sorted(cache.frame()["id"].to_list()) == [7, 9, 10]
    nulls = ticks([11]).with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("time"))
    cache.put(nulls)  # a row without a time counts as the oldest
    assert sorted(cache.frame()["id"].to_list()) == [7, 9, 10]


def test_a_cache_told_its_window_column_checks_it() -> None:
    with pytest.raises(Exception, match="window column 'when'"):
        FrameCache(newest_by="when").bind("id", reflect(Tick, "id").schema)
    cache = FrameCache(max_rows=2, newest_by="price")
    cache.bind("id", reflect(Tick, "id").schema, time_column="time")
    assert cache.window_by == "price"
    cache.load(ticks([3, 1, 2]).with_columns(pl.Series("price", [1.0, 3.0, 2.0])))
    assert sorted(cache.frame()["id"].to_list()) == [1, 2]
    assert cache.window == "newest 2 by 'price' (partial)"


# -- PostgreSQL ------------------------------------------------------------------------------


def test_on_postgresql_the_window_is_the_newest_rows_too(postgres_database: str) -> None:
    ids = list(range(40))
    random.Random(5).shuffle(ids)
    with Store(postgres_database) as store:
        store.table(reflect(Tick, "id")).upsert(ticks(ids))
        store.table(reflect(Note, "id")).upsert([Note(i, f"note {i}") for i in ids])
        fetches = Fetches(store)
        with open_sink(Tick, "id", store=store, cache=FrameCache(max_rows=10)) as sink:
            assert fetches.rows == 11
            assert sink.frame()["id"].to_list() == list(range(30, 40))  # oldest first
            assert sink.status().window == 10
            assert sink.frame(full=True).height == 40
        # without a time column nor a rowid: the largest keys
        with open_sink(Note, "id", store=store, cache=FrameCache(max_rows=10)) as sink:
            assert sorted(sink.frame()["id"].to_list()) == list(range(30, 40))
