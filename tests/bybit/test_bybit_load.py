"""``hubkit.load`` of the ByBit datasets against the simulator on loopback."""

from __future__ import annotations

import dataclasses
import socket
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import hubkit
from hubkit._api import load
from hubkit.bybit.datasets import default_catalog
from hubkit.bybit.klines import to_ms
from hubkit.errors import OfflineError, StaleDataWarning
from hubkit.testing.bybit import BybitSimulator


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bybit_sim: BybitSimulator) -> Path:
    """HUBKIT_HOME in tmp_path and the ByBit URLs pointed at the simulator."""
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", bybit_sim.rest_url)
    monkeypatch.setenv("HUBKIT_BYBIT_WS_URL", bybit_sim.ws_url)
    return tmp_path


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A loopback URL where nothing listens (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_instruments_of_every_category_in_one_frame(env: Path, bybit_sim: BybitSimulator) -> None:
    df = hubkit.load("instruments")
    assert isinstance(df, pl.DataFrame)
    assert sorted(df["category"].unique()) == ["inverse", "linear", "option", "spot"]
    served = bybit_sim.requests["/v5/market/instruments-info"]
    assert served >= 4
    assert df.filter(pl.col("category") == "linear").height > 500  # more than one default page
    assert df.select("category", "symbol").is_duplicated().sum() == 0
    assert (env / "hubkit.db").exists()


def test_second_load_within_stale_after_makes_no_request(
    env: Path, bybit_sim: BybitSimulator
) -> None:
    first = hubkit.load("instruments")
    before = bybit_sim.request_count
    second = hubkit.load("instruments")
    assert bybit_sim.request_count == before
    assert second.equals(first)
    bybit_sim.stop()
    third = hubkit.load("instruments")  # the simulator is gone: fresh data needs no network
    assert third.equals(first)


def test_one_category(env: Path, bybit_sim: BybitSimulator) -> None:
    df = load("instruments", category="spot")
    assert df["category"].unique().to_list() == ["spot"]
    assert bybit_sim.requests["/v5/market/instruments-info"] == 1


def test_offline_with_data_warns_with_its_age(
    env: Path, bybit_sim: BybitSimulator, dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = load("trades", symbol="BTCUSDT")
    assert stored.height > 0
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", dead_url)
    catalog = default_catalog()
    # make the stored trades stale, then load with ByBit unreachable
    catalog.add(dataclasses.replace(catalog["trades"], stale_after=timedelta(0)), replace=True)
    with pytest.warns(StaleDataWarning, match=r"could not be synced.*stored rows, \d+ s old"):
        df = load("trades", catalog=catalog, symbol="BTCUSDT")
    assert df.equals(stored)


def test_offline_without_data_says_how_to_use_the_simulator(
    env: Path, dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", dead_url)
    with pytest.raises(OfflineError, match="hubkit simulate") as info:
        load("instruments")
    assert "HUBKIT_BYBIT_REST_URL" in str(info.value)


def test_trades_accumulate_and_come_back_oldest_first(env: Path, bybit_sim: BybitSimulator) -> None:
    df = load("trades", symbol="ETHUSDT", limit=50)
    assert df.height == 50
    assert df["symbol"].unique().to_list() == ["ETHUSDT"]
    assert df["time"].is_sorted()
    truth = bybit_sim.ground_truth("trades").filter(
        (pl.col("category") == "linear") & (pl.col("symbol") == "ETHUSDT")
    )
    assert set(df["exec_id"]) <= set(truth["exec_id"])


def test_tickers_snapshot(env: Path, bybit_sim: BybitSimulator) -> None:
    df = load("tickers")
    assert df.height > 100
    assert df["category"].unique().to_list() == ["linear"]
    one = load("tickers", category="spot", symbol="BTCUSDT")
    assert one["symbol"].to_list() == ["BTCUSDT"]
    assert one["last_price"][0] > 0


def test_klines_over_a_past_range(env: Path, bybit_sim: BybitSimulator) -> None:
    start, end = "2024-01-01", "2024-03-01T00:00:00Z"
    df = load("klines", symbol="BTCUSDT", interval="60", start=start, end=end)
    hours = (to_ms(end) - to_ms(start)) // 3_600_000 + 1
    assert df.height == hours  # every candle, both ends included, no gap
    assert df["start"].is_sorted()
    assert df["start"].diff().drop_nulls().dt.total_hours().unique().to_list() == [1]
    assert df["confirm"].all()
    requests = bybit_sim.requests["/v5/market/kline"]
    assert requests == -(-hours // 1000)  # pages of 1000
    # an overlapping, already covered range: served from the store
    sub = load("klines", symbol="BTCUSDT", interval="60", start="2024-02-01", end="2024-02-02")
    assert sub.height == 25
    assert bybit_sim.requests["/v5/market/kline"] == requests


def test_unknown_parameters_are_refused(env: Path) -> None:
    with pytest.raises(ValueError, match="needs the parameter symbol"):
        load("trades")
    with pytest.raises(ValueError, match="no parameter colour"):
        load("instruments", colour="red")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="unknown kline interval"):
            load("klines", symbol="BTCUSDT", interval="7", start=0)
