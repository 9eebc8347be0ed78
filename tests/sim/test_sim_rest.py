"""REST behaviour: pagination and filters, errors, and agreement with the ground truth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
import requests
from simclient import rest, result

from hubkit.testing import BybitSimulator
from hubkit.testing.bybit.instruments import locate_datasets

START = 1_790_000_000_000  # a fixed simulated start, minute-aligned


@pytest.fixture(scope="module")
def frozen() -> Iterator[BybitSimulator]:
    """A simulator whose clock barely moves: its data cannot change under a test."""
    with BybitSimulator(seed=5, start_time_ms=START, time_scale=1e-9, history_seconds=360) as s:
        yield s


def _dataset(category: str) -> list[dict[str, object]]:
    path = Path(locate_datasets()) / f"instruments_{category}.json"
    items: list[dict[str, object]] = json.loads(path.read_text())["list"]
    return items


def test_linear_pages_follow_next_page_cursor(frozen: BybitSimulator) -> None:
    symbols: list[str] = []
    pages = 0
    cursor = ""
    while True:
        params = {"category": "linear", **({"cursor": cursor} if cursor else {})}
        page = result(frozen, "/v5/market/instruments-info", **params)
        pages += 1
        symbols += [item["symbol"] for item in page["list"]]
        cursor = page["nextPageCursor"]
        if not cursor:
            break
    trading = [str(i["symbol"]) for i in _dataset("linear") if i["status"] == "Trading"]
    assert pages == 2 and len(trading) > 500
    assert symbols == sorted(trading)


def test_instrument_filters(frozen: BybitSimulator) -> None:
    spot = result(frozen, "/v5/market/instruments-info", category="spot", limit=1)
    assert "nextPageCursor" not in spot and len(spot["list"]) > 1  # spot ignores limit
    pre = result(frozen, "/v5/market/instruments-info", category="linear", status="PreLaunch")
    assert pre["list"] and all(i["status"] == "PreLaunch" for i in pre["list"])
    btc = result(frozen, "/v5/market/instruments-info", category="linear", baseCoin="BTC")
    names = {i["symbol"] for i in btc["list"]}
    assert {"BTCUSDT", "BTCPERP", "BTC-25DEC26", "BTCUSDT-25DEC26"} <= names
    options = result(frozen, "/v5/market/instruments-info", category="option", limit=1000)
    assert {i["baseCoin"] for i in options["list"]} == {"BTC"}  # option defaults to BTC
    eth = result(frozen, "/v5/market/instruments-info", category="option", baseCoin="ETH")
    assert eth["list"] and {i["baseCoin"] for i in eth["list"]} == {"ETH"}


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/v5/market/instruments-info", {}, "Illegal category"),
        ("/v5/market/tickers", {"category": "futures"}, "Illegal category"),
        ("/v5/market/kline", {"category": "option", "symbol": "BTCUSDT", "interval": "1"},
         "params error: Category is invalid"),
        ("/v5/market/orderbook", {"category": "linear", "symbol": "NOPE"},
         "params error: symbol invalid"),
        ("/v5/market/recent-trade", {"category": "spot", "symbol": "BTCUSDT", "limit": "61"},
         "params error: limit invalid"),
        ("/v5/market/kline", {"symbol": "BTCUSDT", "interval": "2"},
         "params error: interval invalid"),
    ],
)  # fmt: skip
def test_business_errors_are_http_200_with_10001(
    frozen: BybitSimulator, path: str, params: dict[str, str], message: str
) -> None:
    body = rest(frozen, path, **params)
    assert (body["retCode"], body["retMsg"], body["result"]) == (10001, message, {})


def test_unknown_route_is_404(frozen: BybitSimulator) -> None:
    assert httpx.get(f"{frozen.rest_url}/v5/market/nothing").status_code == 404


def test_recent_trades_are_the_newest_of_the_ground_truth(frozen: BybitSimulator) -> None:
    got = result(frozen, "/v5/market/recent-trade", category="linear", symbol="BTCUSDT", limit=1000)
    truth = (
        frozen.ground_truth("trades")
        .filter(pl.col("category") == "linear", pl.col("symbol") == "BTCUSDT")
        .sort("time_ms", "seq", descending=True)
    )
    ids = [t["execId"] for t in got["list"]]
    assert len(ids) == len(set(ids)) == min(1000, truth.height)
    assert ids == truth["exec_id"].head(len(ids)).to_list()
    spot = result(frozen, "/v5/market/recent-trade", category="spot", symbol="BTCUSDT")
    assert len(spot["list"]) == 60 and all(t["execId"].isdigit() for t in spot["list"])


def test_klines_aggregate_the_trades(frozen: BybitSimulator) -> None:
    now = frozen.now_ms()
    got = result(frozen, "/v5/market/kline", category="linear", symbol="BTCUSDT", interval="1",
                 start=now - 540_000, end=now, limit=5)["list"]  # fmt: skip
    assert len(got) == 5 and all(len(c) == 7 and all(isinstance(x, str) for x in c) for c in got)
    starts = [int(c[0]) for c in got]
    assert starts == sorted(starts, reverse=True) and starts[0] - starts[1] == 60_000
    trades = frozen.ground_truth("trades").filter(
        pl.col("category") == "linear", pl.col("symbol") == "BTCUSDT"
    )
    for candle in got[1:]:  # whole minutes inside the trade history
        t0 = int(candle[0])
        inside = trades.filter(pl.col("time_ms") >= t0, pl.col("time_ms") < t0 + 60_000)
        inside = inside.sort("time_ms", "seq")
        assert float(candle[1]) == inside["price"][0]
        assert float(candle[2]) == inside["price"].max()
        assert float(candle[3]) == inside["price"].min()
        assert float(candle[4]) == inside["price"][-1]
        assert float(candle[5]) == pytest.approx(inside["size"].sum())
    truth = frozen.ground_truth("klines").filter(pl.col("interval") == "1")
    assert set(truth["start_ms"].to_list()) >= set(starts)


def test_kline_start_selects_the_first_candles_from_start(frozen: BybitSimulator) -> None:
    start = START - 5 * 86_400_000 + 1_391_000  # mid-hour: the first candle is the next hour
    got = result(frozen, "/v5/market/kline", symbol="BTCUSDT", interval="60", start=start,
                 limit=3)["list"]  # fmt: skip
    first = (start // 3_600_000 + 1) * 3_600_000
    assert [int(c[0]) for c in got] == [first + 2 * 3_600_000, first + 3_600_000, first]
    end_only = result(frozen, "/v5/market/kline", symbol="BTCUSDT", interval="D", end=start,
                      limit=2)["list"]  # fmt: skip
    assert int(end_only[0][0]) == start // 86_400_000 * 86_400_000
    monthly = result(frozen, "/v5/market/kline", symbol="BTCUSDT", interval="M", limit=3)["list"]
    assert len(monthly) == 3 and int(monthly[0][0]) > int(monthly[1][0]) > int(monthly[2][0])
    for candle in monthly:
        o, h, lo, c = map(float, candle[1:5])
        assert lo <= min(o, c) <= max(o, c) <= h


def test_ticker_last_price_is_the_last_trade(frozen: BybitSimulator) -> None:
    for category, symbol in (("linear", "BTCUSDT"), ("spot", "BTCUSDT"), ("inverse", "BTCUSD")):
        ticker = result(frozen, "/v5/market/tickers", category=category, symbol=symbol)["list"][0]
        last = result(frozen, "/v5/market/recent-trade", category=category, symbol=symbol,
                      limit=1)["list"][0]  # fmt: skip
        assert ticker["lastPrice"] == last["price"]
    every = result(frozen, "/v5/market/tickers", category="linear")["list"]
    assert len(every) > 500


def test_orderbook_levels_are_sorted_and_uncrossed(frozen: BybitSimulator) -> None:
    book = result(frozen, "/v5/market/orderbook", category="linear", symbol="BTCUSDT", limit=200)
    bids = [float(p) for p, _ in book["b"]]
    asks = [float(p) for p, _ in book["a"]]
    assert len(bids) == len(asks) == 200
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert isinstance(book["u"], int) and isinstance(book["seq"], int)
    option = rest(frozen, "/v5/market/orderbook", category="option",
                  symbol="BTC-04DEC26-90000-C-USDT", limit=26)  # fmt: skip
    assert option["retCode"] == 10001  # option books stop at 25 levels


def test_same_seed_same_trades() -> None:
    frames = []
    for seed in (11, 11, 12):
        with BybitSimulator(seed=seed, start_time_ms=START, time_scale=1e-9) as sim:
            frames.append(sim.ground_truth("trades").drop("time"))
    assert frames[0].equals(frames[1])
    assert not frames[0].equals(frames[2])


def test_http_keep_alive_for_httpx_and_requests(frozen: BybitSimulator) -> None:
    before = frozen.tcp_connections_total
    with httpx.Client(base_url=frozen.rest_url) as client:
        for _ in range(5):
            assert client.get("/v5/market/time").status_code == 200
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(f"{frozen.rest_url}/v5/market/time").status_code == 200
    assert frozen.tcp_connections_total - before == 2


def test_requests_are_counted_per_route(frozen: BybitSimulator) -> None:
    before = frozen.requests.get("/v5/market/time", 0)
    rest(frozen, "/v5/market/time")
    assert frozen.requests["/v5/market/time"] == before + 1
    assert frozen.request_log[-1] == ("/v5/market/time", {})
