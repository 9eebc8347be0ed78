"""Indexes of stored tables: created with the table, added on open, used by queries.

Every check reads the real SQLite file (``sqlite_master``, ``EXPLAIN QUERY PLAN``) or the
real PostgreSQL catalog.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa

import hubkit
from hubkit.bybit.entities import (
    INSTRUMENT_KEY,
    KLINE_KEY,
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
)
from hubkit.errors import SchemaError
from hubkit.store import Store

T0 = datetime(2024, 3, 1, tzinfo=UTC)
ONE_MINUTE = "SELECT * FROM {t} WHERE symbol = 'BTCUSDT' AND time >= 0 AND time < 60000000"


@dataclass
class Trade:
    id: str
    symbol: str
    side: str
    price: float
    time: datetime


@hubkit.index("symbol", "time")
@dataclass
class IndexedTrade:
    id: str
    symbol: str
    side: str
    price: float
    time: datetime


def trades(n: int) -> list[Trade]:
    symbols = ("BTCUSDT", "ETHUSDT")
    return [
        Trade(f"t{i:05d}", symbols[i % 2], "Buy", float(i), T0 + timedelta(seconds=i))
        for i in range(n)
    ]


def indexes_of(path: Path, table: str) -> dict[str, list[str]]:
    """Index name -> its columns, as the file holds them (the key's own index left out)."""
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND name NOT LIKE 'sqlite_autoindex%'",
                (table,),
            )
        ]
        return {n: [r[2] for r in conn.execute(f"PRAGMA index_info('{n}')")] for n in sorted(names)}


def plan_of(path: Path, sql: str) -> str:
    with sqlite3.connect(path) as conn:
        return " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


def table_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_declared_and_sink_indexes_are_created_with_the_table(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    # No cache: the default one's window would add an index on its time column of its own.
    with hubkit.open_sink(IndexedTrade, "id", store=path, indexes=["side", ("price",)], cache=None):
        pass
    assert indexes_of(path, "indexed_trade") == {
        "ix_indexed_trade__price": ["price"],
        "ix_indexed_trade__side": ["side"],
        "ix_indexed_trade__symbol__time": ["symbol", "time"],
    }
    sql = ONE_MINUTE.format(t="indexed_trade")
    assert "USING INDEX ix_indexed_trade__symbol__time (symbol=? AND time>? AND time<?)" in (
        plan_of(path, sql)
    )


def test_an_existing_table_gets_the_indexes_it_lacks_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with hubkit.open_sink(Trade, "id", store=path, cache=None) as sink:
        sink.dao.upsert(trades(500))
    before = table_rows(path, "trade")
    sql = ONE_MINUTE.format(t="trade")
    assert indexes_of(path, "trade") == {}
    assert "SCAN trade" in plan_of(path, sql)

    with hubkit.open_sink(Trade, "id", store=path, cache=None, indexes=[("symbol", "time")]):
        pass
    assert indexes_of(path, "trade") == {"ix_trade__symbol__time": ["symbol", "time"]}
    assert "USING INDEX ix_trade__symbol__time" in plan_of(path, sql)
    assert table_rows(path, "trade") == before

    # Reopening without asking keeps the index; asking again creates nothing new.
    with hubkit.open_sink(Trade, "id", store=path, cache=None, indexes=[("symbol", "time")]):
        pass
    with hubkit.open_sink(Trade, "id", store=path, cache=None):
        pass
    assert indexes_of(path, "trade") == {"ix_trade__symbol__time": ["symbol", "time"]}


def test_an_entity_that_declares_an_index_later_gets_it_on_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with Store(path) as store:
        store.table(hubkit.reflect(Trade, "id")).upsert(trades(10))

    @dataclass
    class Trade2:  # the same columns, now with a declaration
        __hubkit_indexes__: ClassVar = [("symbol", "time")]
        id: str
        symbol: str
        side: str
        price: float
        time: datetime

    with Store(path) as store:
        table = store.table(hubkit.reflect(Trade2, "id", table="trade"))
        assert table.count() == 10
    assert indexes_of(path, "trade") == {"ix_trade__symbol__time": ["symbol", "time"]}


def test_one_store_adds_indexes_asked_for_by_a_later_call(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    spec = hubkit.reflect(Trade, "id")
    with Store(path) as store:
        store.table(spec)
        assert indexes_of(path, "trade") == {}
        store.table(spec, indexes=["side"])
        assert indexes_of(path, "trade") == {"ix_trade__side": ["side"]}


def test_a_hand_made_index_on_the_same_columns_is_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with Store(path) as store:
        store.table(hubkit.reflect(Trade, "id"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE INDEX mine ON trade (symbol, time)")
    with Store(path) as store:
        store.table(hubkit.reflect(Trade, "id"), indexes=[("symbol", "time")])
    assert indexes_of(path, "trade") == {"mine": ["symbol", "time"]}


def test_an_index_on_an_unknown_column_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with hubkit.open_sink(Trade, "id", store=path, cache=None) as sink:
        sink.dao.upsert(trades(20))
    before = table_rows(path, "trade")
    with pytest.raises(SchemaError, match=r"no column\(s\) \['venue'\]"):
        hubkit.open_sink(Trade, "id", store=path, indexes=[("symbol", "venue")])
    with pytest.raises(SchemaError, match="names a column twice"):
        hubkit.open_sink(Trade, "id", store=path, indexes=[("time", "time")])
    assert table_rows(path, "trade") == before
    assert indexes_of(path, "trade") == {}


def test_indexes_on_postgresql(postgres_database: str) -> None:
    with Store(postgres_database) as store:
        table = store.table(hubkit.reflect(IndexedTrade, "id"), indexes=["side"])
        table.upsert(trades_of(IndexedTrade, 5))
    with Store(postgres_database) as store:  # reopening finds them and adds nothing
        store.table(hubkit.reflect(IndexedTrade, "id"), indexes=["side"])
        found = sa.inspect(store.engine).get_indexes("indexed_trade")
    assert sorted((i["name"], tuple(i["column_names"])) for i in found) == [
        ("ix_indexed_trade__side", ("side",)),
        ("ix_indexed_trade__symbol__time", ("symbol", "time")),
    ]


def trades_of(cls: type, n: int) -> list[object]:
    return [cls(f"t{i}", "BTCUSDT", "Buy", float(i), T0 + timedelta(seconds=i)) for i in range(n)]


@pytest.mark.parametrize(
    ("cls", "key", "sql", "index"),
    [
        (
            PublicTrade,
            PUBLIC_TRADE_KEY,
            "SELECT * FROM {t} WHERE symbol = 'X' AND time >= 0 AND time < 9",
            "(symbol=? AND time>? AND time<?)",
        ),
        (Ticker, TICKER_KEY, "SELECT * FROM {t} WHERE symbol = 'X'", "(symbol=?)"),
        (Instrument, INSTRUMENT_KEY, "SELECT * FROM {t} WHERE symbol = 'X'", "(symbol=?)"),
        (
            Kline,
            KLINE_KEY,
            "SELECT * FROM {t} WHERE symbol = 'X' AND start >= 0 AND start <= 9",
            "(symbol=? AND start>? AND start<?)",
        ),
        (Kline, KLINE_KEY, "SELECT * FROM {t} WHERE start >= 0", "(start>?)"),
    ],
)
def test_bybit_entities_ship_the_indexes_their_reads_use(
    tmp_path: Path, cls: type, key: tuple[str, ...], sql: str, index: str
) -> None:
    path = tmp_path / "bybit.db"
    spec = hubkit.reflect(cls, key)
    with Store(path) as store:
        store.table(spec)
    plan = plan_of(path, sql.format(t=spec.table))
    assert "USING INDEX ix_" in plan and index in plan, plan
