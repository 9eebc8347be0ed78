"""``hubkit.load("trades"/"klines", start=..., end=...)``: the asked range, synced only when
something could be missing (against the simulator on loopback)."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import hubkit
from hubkit.bybit.datasets import default_catalog
from hubkit.bybit.presets import kline_table, trade_table
from hubkit.testing.bybit import BybitSimulator

RECENT = "/v5/market/recent-trade"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bybit_sim: BybitSimulator) -> Path:
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", bybit_sim.rest_url)
    monkeypatch.setenv("HUBKIT_BYBIT_WS_URL", bybit_sim.ws_url)
    return tmp_path


def test_trades_in_a_range_are_the_stored_trades_of_that_range(
    env: Path, bybit_sim: BybitSimulator
) -> None:
    every = hubkit.load("trades", symbol="BTCUSDT", limit=200)
    assert every.height == 200
    requests = bybit_sim.requests[RECENT]
    times = every.get_column("time")
    start, end = times[50], times[120]
    ranged = hubkit.load("trades", symbol="BTCUSDT", limit=200, start=start, end=end)
    want = every.filter(pl.col("time").is_between(start, end))
    assert ranged.equals(want)  # both ends included, oldest first
    assert 0 < ranged.height < every.height
    # The range does not change what a sync fetches: fresh for one range, fresh for all.
    assert bybit_sim.requests[RECENT] == requests
    text = hubkit.load(
        "trades", symbol="BTCUSDT", limit=200, start=start.isoformat(), end=end.isoformat()
    )
    assert text.equals(want)
    only_start = hubkit.load("trades", symbol="BTCUSDT", limit=200, start=start)
    assert only_start.equals(every.filter(pl.col("time") >= start))
    assert bybit_sim.requests[RECENT] == requests


def test_a_past_range_is_served_from_the_store_even_when_stale(
    env: Path, bybit_sim: BybitSimulator
) -> None:
    catalog = default_catalog()
    stale_now = dataclasses.replace(catalog["trades"], stale_after=timedelta(0))
    catalog.add(stale_now, replace=True)
    every = catalog.load("trades", symbol="ETHUSDT", limit=100)
    requests = bybit_sim.requests[RECENT]
    times = every.get_column("time")
    past = catalog.load("trades", symbol="ETHUSDT", limit=100, start=times[10], end=times[40])
    assert past.equals(every.filter(pl.col("time").is_between(times[10], times[40])))
    assert bybit_sim.requests[RECENT] == requests  # ended before the last sync: no request
    catalog.load("trades", symbol="ETHUSDT", limit=100, start=times[10])  # open end: syncs
    assert bybit_sim.requests[RECENT] == requests + 1
    catalog.close()


def test_bad_trade_ranges_are_refused(env: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset 'trades': start='soon' is not a time"):
        hubkit.load("trades", symbol="BTCUSDT", start="soon")
    with pytest.raises(ValueError, match="end='2024-01-01' is before start"):
        hubkit.load("trades", symbol="BTCUSDT", start="2024-02-01", end="2024-01-01")


def test_the_tables_loads_create_carry_the_indexes_their_ranges_use(
    env: Path, bybit_sim: BybitSimulator
) -> None:
    hubkit.load("trades", symbol="SOLUSDT", limit=20)
    hubkit.load("klines", symbol="BTCUSDT", interval="D", start="2024-01-01", end="2024-01-10")
    trades, klines = trade_table("linear"), kline_table("linear", "BTCUSDT", "D")
    with sqlite3.connect(env / "hubkit.db") as conn:

        def plan(sql: str) -> str:
            return " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))

        assert "USING INDEX" in plan(
            f"SELECT * FROM {trades} WHERE symbol = 'SOLUSDT' AND time >= 1 AND time <= 2"
        )
        assert "USING INDEX" in plan(f"SELECT * FROM {klines} WHERE start >= 1 AND start <= 2")
