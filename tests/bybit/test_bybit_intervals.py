"""Kline intervals by their usual names ("1m", "1h", "1d") beside ByBit's, and datasets()."""

from __future__ import annotations

from pathlib import Path

import pytest

import hubkit
from hubkit.bybit.klines import INTERVAL_ALIASES, INTERVALS, interval_ms, kline_interval
from hubkit.bybit.presets import kline_table
from hubkit.testing.bybit import BybitSimulator


@pytest.mark.parametrize(
    ("usual", "bybit"),
    [
        ("1m", "1"),
        ("5m", "5"),
        ("15m", "15"),
        ("1h", "60"),
        ("4h", "240"),
        ("12h", "720"),
        ("1d", "D"),
        ("1w", "W"),
        ("1M", "M"),
        ("60", "60"),
        (60, "60"),
        ("D", "D"),
    ],
)
def test_usual_and_bybit_names_mean_the_same_interval(usual: str | int, bybit: str) -> None:
    assert kline_interval(usual) == bybit
    assert interval_ms(str(usual)) == interval_ms(bybit)
    assert kline_table("linear", "BTCUSDT", str(usual)) == kline_table("linear", "BTCUSDT", bybit)


@pytest.mark.parametrize("bad", ["2m", "1H", "hour", "", "7", True])
def test_an_unknown_interval_lists_the_valid_ones(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown kline interval") as info:
        kline_interval(bad)  # type: ignore[arg-type]
    text = str(info.value)
    for name in (*INTERVALS, *INTERVAL_ALIASES):
        assert name in text


def test_load_klines_by_the_usual_name_shares_the_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bybit_sim: BybitSimulator
) -> None:
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", bybit_sim.rest_url)
    start = bybit_sim.now_ms() - 6 * 3_600_000
    by_usual = hubkit.load("klines", symbol="BTCUSDT", interval="1h", start=start)
    assert by_usual.height >= 5
    assert by_usual["interval"].unique().to_list() == ["60"]
    before = bybit_sim.request_count
    by_bybit = hubkit.load("klines", symbol="BTCUSDT", interval="60", start=start)
    assert bybit_sim.request_count == before  # the same series, fresh: no request
    assert by_bybit.equals(by_usual)
    with pytest.raises(ValueError, match="1h"):
        hubkit.load("klines", symbol="BTCUSDT", interval="90m", start=start)


def test_datasets_lists_what_load_knows_with_descriptions() -> None:
    listed = hubkit.datasets()
    assert list(listed) == ["instruments", "klines", "tickers", "trades"]
    assert all(text for text in listed.values())
    assert "candles" in listed["klines"]
    custom = hubkit.Catalog([])
    assert hubkit.datasets(custom) == {}
