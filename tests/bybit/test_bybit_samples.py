"""Every real ByBit sample in tests/samples/bybit parses into the provider's entities."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hubkit.bybit import entities as e
from hubkit.bybit.streams import ticker_extractor, ws_trade_spec
from hubkit.entity import EntitySpec, reflect

Sample = Callable[[str], Any]


def spec_of(cls: type) -> EntitySpec:
    keys = {
        e.Instrument: e.INSTRUMENT_KEY,
        e.PublicTrade: e.PUBLIC_TRADE_KEY,
        e.Ticker: e.TICKER_KEY,
        e.Kline: e.KLINE_KEY,
    }
    return reflect(cls, keys[cls])


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


# -- instruments ----------------------------------------------------------------------------


def decode_instruments(body: Mapping[str, Any]) -> pl.DataFrame:
    result = body["result"]
    items = [e.normalize_instrument(item, result["category"]) for item in result["list"]]
    return spec_of(e.Instrument).from_wire(items)


def test_linear_instrument(sample: Sample) -> None:
    df = decode_instruments(sample("rest_instruments_linear.json"))
    row = df.row(0, named=True)
    assert row["category"] == "linear"
    assert row["symbol"] == "BTCUSDT"
    assert row["symbol_id"] == 5
    assert row["contract_type"] == "LinearPerpetual"
    assert row["tick_size"] == pytest.approx(0.1)
    assert row["max_price"] == pytest.approx(1999999.8)
    assert row["max_leverage"] == pytest.approx(100.0)
    assert row["qty_step"] == pytest.approx(0.001)
    assert row["max_mkt_order_qty"] == pytest.approx(500.0)
    assert row["min_notional_value"] == pytest.approx(5.0)
    assert row["funding_interval"] == 480
    assert row["unified_margin_trade"] is True
    assert row["is_pre_listing"] is False
    assert row["price_limit_ratio_y"] == pytest.approx(0.02)
    assert row["launch_time"] == ms(1585526400000)
    assert row["delivery_time"] is None  # "0" for a perpetual
    assert row["delivery_fee_rate"] is None  # ""
    assert row["cur_auction_phase"] is None  # preListingInfo: null
    assert row["base_precision"] is None  # a spot-only field


def test_prelisting_instrument(sample: Sample) -> None:
    row = decode_instruments(sample("rest_instruments_linear_prelisting.json")).row(0, named=True)
    assert (row["symbol"], row["status"]) == ("BIOUSDT", "PreLaunch")
    assert row["is_pre_listing"] is True
    assert row["cur_auction_phase"] == "ContinuousTrading"
    assert row["tick_size"] == pytest.approx(0.0001)


def test_option_instrument(sample: Sample) -> None:
    row = decode_instruments(sample("rest_instruments_option.json")).row(0, named=True)
    assert row["category"] == "option"
    assert row["symbol"] == "BTC-27MAR26-70000-P-USDT"
    assert row["options_type"] == "Put"
    assert row["delivery_time"] == ms(1774598400000)
    assert row["tick_size"] == pytest.approx(5.0)
    assert row["contract_type"] is None
    assert row["max_leverage"] is None


def test_spot_instrument(sample: Sample) -> None:
    row = decode_instruments(sample("rest_instruments_spot.json")).row(0, named=True)
    assert row["category"] == "spot"
    assert row["symbol_id"] == 9
    assert row["margin_trading"] == "utaOnly"
    assert row["st_tag"] == "0"
    assert row["base_precision"] == pytest.approx(0.000001)
    assert row["post_only_max_limit_order_size"] == pytest.approx(60000.0)
    assert row["max_market_order_qty"] == pytest.approx(41.5)
    assert row["tick_size"] == pytest.approx(0.1)
    assert row["settle_coin"] is None


def _ccxt_category(ccxt_symbol: str) -> str:
    if ":" not in ccxt_symbol:
        return "spot"
    if ccxt_symbol.endswith(("-P", "-C")):
        return "option"
    base_quote, settle = ccxt_symbol.split(":")
    return "inverse" if base_quote.split("/")[0] == settle else "linear"


def test_ccxt_market_items_of_every_category(sample: Sample) -> None:
    markets = sample("rest_instruments_items_ccxt_markets.json")
    items = [e.normalize_instrument(item, _ccxt_category(k)) for k, item in markets.items()]
    df = spec_of(e.Instrument).from_wire(items)
    assert df.height == 5
    assert sorted(set(df["category"])) == ["inverse", "linear", "option", "spot"]
    inverse = df.filter(pl.col("symbol") == "BTCUSD").row(0, named=True)
    assert inverse["contract_type"] == "InversePerpetual"
    assert inverse["settle_coin"] == "BTC"
    assert inverse["min_notional_value"] is None  # "" on inverse
    assert inverse["funding_interval"] == 480  # stringified by ccxt, still an int


def test_instruments_of_all_categories_share_one_table(sample: Sample) -> None:
    frames = [
        decode_instruments(sample(name))
        for name in (
            "rest_instruments_linear.json",
            "rest_instruments_linear_prelisting.json",
            "rest_instruments_option.json",
            "rest_instruments_spot.json",
        )
    ]
    df = pl.concat(frames)
    assert df.schema == spec_of(e.Instrument).schema
    assert df.select(e.INSTRUMENT_KEY).is_duplicated().sum() == 0  # BTCUSDT spot != linear


# -- trades ---------------------------------------------------------------------------------


def test_rest_recent_trades(sample: Sample) -> None:
    spec = spec_of(e.PublicTrade)
    spot = spec.from_wire(sample("rest_recent_trade_spot.json")["result"]["list"])
    row = spot.row(0, named=True)
    assert row["exec_id"] == "2100000000007764263"
    assert row["price"] == pytest.approx(16618.49)
    assert row["size"] == pytest.approx(0.00012)
    assert row["side"] == "Buy"
    assert row["time"] == ms(1672052955758)
    assert row["is_block_trade"] is False
    assert row["seq"] == 123456
    linear = spec.from_wire(sample("rest_recent_trade_linear_ccxt.json")["result"]["list"])
    row = linear.row(0, named=True)
    assert row["exec_id"] == "9afd1288-b444-53f8-8e40-c2f99368ad22"
    assert row["seq"] is None  # older capture without seq


@pytest.mark.parametrize("name", ["ws_publicTrade.json", "ws_publicTrade_linear_capture.json"])
def test_ws_public_trades(sample: Sample, name: str) -> None:
    message = sample(name)
    df = ws_trade_spec().from_wire(message["data"])
    assert df.height == len(message["data"])
    first = message["data"][0]
    row = df.row(0, named=True)
    assert row["exec_id"] == first["i"]
    assert row["symbol"] == first["s"] == message["topic"].split(".")[1]
    assert row["price"] == pytest.approx(float(first["p"]))
    assert row["size"] == pytest.approx(float(first["v"]))
    assert row["side"] == first["S"]
    assert row["time"] == ms(first["T"])
    assert row["is_block_trade"] is first["BT"]


def test_rest_and_ws_trades_decode_to_one_schema(sample: Sample) -> None:
    spec = spec_of(e.PublicTrade)
    rest = spec.from_wire(sample("rest_recent_trade_spot.json")["result"]["list"])
    ws = ws_trade_spec(spec).from_wire(sample("ws_publicTrade.json")["data"])
    assert rest.schema == ws.schema == spec.schema


# -- tickers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rest_tickers_inverse.json",
        "rest_tickers_linear_ccxt.json",
        "rest_tickers_option.json",
        "rest_tickers_option_ccxt_raw.json",
        "rest_tickers_spot.json",
    ],
)
def test_rest_tickers(sample: Sample, name: str) -> None:
    body = sample(name)
    result = body["result"]
    items = [e.normalize_ticker(t, result["category"], body["time"]) for t in result["list"]]
    df = spec_of(e.Ticker).from_wire(items)
    assert df.height == len(result["list"])
    first = result["list"][0]
    row = df.row(0, named=True)
    assert row["category"] == result["category"]
    assert row["symbol"] == first["symbol"]
    assert row["last_price"] == pytest.approx(float(first["lastPrice"]))
    assert row["ts"] == ms(int(body["time"]))
    if "bid1Iv" in first:
        assert row["bid1_iv"] == pytest.approx(float(first["bid1Iv"]))
        assert row["mark_iv"] == pytest.approx(float(first["markIv"]))
    if "fundingRate" in first:
        assert row["funding_rate"] == pytest.approx(float(first["fundingRate"]))
        assert row["next_funding_time"] == ms(int(first["nextFundingTime"]))
        assert row["delivery_time"] is None  # "0" on perpetuals
        assert row["basis"] is None  # ""


def _ws_ticker(message: Mapping[str, Any], category: str) -> pl.DataFrame:
    merger = e.TickerMerger()
    data = merger.merge(message)
    assert data is not None
    return spec_of(e.Ticker).from_wire([e.normalize_ticker(data, category, message["ts"])])


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("ws_tickers_linear_perpetual_snapshot.json", "linear"),
        ("ws_tickers_linear_futures_snapshot.json", "linear"),
        ("ws_tickers_linear_snapshot_2023_docs.json", "linear"),
        ("ws_tickers_spot_snapshot.json", "spot"),
        ("ws_tickers_option_snapshot.json", "option"),
    ],
)
def test_ws_ticker_snapshots(sample: Sample, name: str, category: str) -> None:
    message = sample(name)
    row = _ws_ticker(message, category).row(0, named=True)
    assert row["symbol"] == message["data"]["symbol"]
    assert row["last_price"] == pytest.approx(float(message["data"]["lastPrice"]))
    assert row["ts"] == ms(message["ts"])


def test_ws_option_ticker_keys_map_to_rest_columns(sample: Sample) -> None:
    row = _ws_ticker(sample("ws_tickers_option_snapshot.json"), "option").row(0, named=True)
    assert row["ask1_price"] == pytest.approx(10.0)
    assert row["ask1_iv"] == pytest.approx(0.514)
    assert row["mark_iv"] == pytest.approx(0.4896)
    assert row["delta"] == pytest.approx(0.047831)


def test_ws_futures_ticker_iso_delivery_time(sample: Sample) -> None:
    row = _ws_ticker(sample("ws_tickers_linear_futures_snapshot.json"), "linear").row(0, named=True)
    assert row["delivery_time"] == datetime(2025, 12, 26, 8, tzinfo=UTC)
    assert row["funding_rate"] is None  # "" on futures


def test_ws_linear_ticker_delta_merges_into_snapshot(sample: Sample) -> None:
    snapshot = sample("ws_tickers_linear_perpetual_snapshot.json")
    delta = sample("ws_tickers_linear_delta_UNVERIFIED.json")
    merger = e.TickerMerger()
    assert merger.merge(delta) is None  # a delta before any snapshot cannot be stored
    merger.merge(snapshot)
    merged = merger.merge(delta)
    assert merged is not None
    df = spec_of(e.Ticker).from_wire([e.normalize_ticker(merged, "linear", delta["ts"])])
    row = df.row(0, named=True)
    assert row["bid1_price"] == pytest.approx(79114.5)  # from the delta
    assert row["bid1_size"] == pytest.approx(1.496)
    assert row["last_price"] == pytest.approx(66666.6)  # unchanged, from the snapshot
    assert row["ts"] == ms(delta["ts"])
    merger.reset()
    assert merger.merge(delta) is None


def test_ticker_extractor_merges_per_symbol(sample: Sample) -> None:
    extract = ticker_extractor("linear")
    snapshot = sample("ws_tickers_linear_perpetual_snapshot.json")["data"]
    delta = sample("ws_tickers_linear_delta_UNVERIFIED.json")["data"]
    assert len(extract(snapshot)) == 1
    (merged,) = extract(delta)
    assert merged["category"] == "linear"
    assert merged["lastPrice"] == snapshot["lastPrice"]
    assert merged["bid1Price"] == delta["bid1Price"]
    row = spec_of(e.Ticker).from_wire([merged]).row(0, named=True)
    assert row["last_price"] == pytest.approx(66666.6)
    assert row["bid1_price"] == pytest.approx(79114.5)


# -- klines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rest_kline_inverse.json", "rest_kline_linear_ccxt.json"])
def test_rest_klines(sample: Sample, name: str) -> None:
    result = sample(name)["result"]
    rows = [
        e.kline_row(r, category=result["category"], symbol=result["symbol"], interval="60")
        for r in result["list"]
    ]
    df = spec_of(e.Kline).from_wire(rows)
    assert df.height == 3
    first = result["list"][0]
    row = df.row(0, named=True)
    assert row["start"] == ms(int(first[0]))
    assert (row["open"], row["high"], row["low"], row["close"]) == pytest.approx(
        tuple(float(v) for v in first[1:5])
    )
    assert row["volume"] == pytest.approx(float(first[5]))
    assert row["turnover"] == pytest.approx(float(first[6]))
    assert row["confirm"] is None
    # newest first on the wire, one hour apart
    starts = df["start"].to_list()
    assert starts == sorted(starts, reverse=True)


def test_ws_kline(sample: Sample) -> None:
    message = sample("ws_kline.json")
    _, interval, symbol = message["topic"].split(".")
    assert interval == message["data"][0]["interval"]
    rows = [{**k, "category": "linear", "symbol": symbol} for k in message["data"]]
    row = spec_of(e.Kline).from_wire(rows).row(0, named=True)
    assert (row["symbol"], row["interval"]) == ("BTCUSDT", "5")
    assert row["start"] == ms(1672324800000)
    assert row["close"] == pytest.approx(16677.0)
    assert row["confirm"] is False


def test_kline_row_refuses_short_arrays() -> None:
    with pytest.raises(ValueError, match="expected 7"):
        e.kline_row(["1", "2"], category="linear", symbol="X", interval="1")


# -- every sample is accounted for ----------------------------------------------------------

ENTITY_SAMPLES = {
    "rest_instruments_items_ccxt_markets.json",
    "rest_instruments_linear.json",
    "rest_instruments_linear_prelisting.json",
    "rest_instruments_option.json",
    "rest_instruments_spot.json",
    "rest_kline_inverse.json",
    "rest_kline_linear_ccxt.json",
    "rest_recent_trade_linear_ccxt.json",
    "rest_recent_trade_spot.json",
    "rest_tickers_inverse.json",
    "rest_tickers_linear_ccxt.json",
    "rest_tickers_option.json",
    "rest_tickers_option_ccxt_raw.json",
    "rest_tickers_spot.json",
    "ws_kline.json",
    "ws_publicTrade.json",
    "ws_publicTrade_linear_capture.json",
    "ws_tickers_linear_delta_UNVERIFIED.json",
    "ws_tickers_linear_futures_snapshot.json",
    "ws_tickers_linear_perpetual_snapshot.json",
    "ws_tickers_linear_snapshot_2023_docs.json",
    "ws_tickers_option_snapshot.json",
    "ws_tickers_spot_snapshot.json",
}

# Samples that carry no rows of the provider's entities: envelopes, control frames, auth, and
# market data the provider has no entity for (order books, open interest, server time).
NOT_ENTITY_SAMPLES = {
    "SOURCES.md",
    "rest_common_envelope.json",
    "rest_error_10001_symbol_invalid_capture.json",
    "rest_open_interest_inverse_ccxt_raw.json",
    "rest_open_interest_linear_ccxt_raw.json",
    "rest_orderbook_linear_ccxt.json",
    "rest_orderbook_spot.json",
    "rest_orderbook_spot_ccxt.json",
    "rest_server_time.json",
    "ws_auth_request.json",
    "ws_auth_success.json",
    "ws_orderbook_1_linear_stream_capture.jsonl",
    "ws_orderbook_50_delta.json",
    "ws_orderbook_50_snapshot_docs.json.txt",
    "ws_ping_request.json",
    "ws_pong_linear.json",
    "ws_pong_linear_capture.json",
    "ws_pong_option.json",
    "ws_pong_private.json",
    "ws_pong_spot.json",
    "ws_subscribe_ack_linear.json",
    "ws_subscribe_ack_option.json",
    "ws_subscribe_ack_private.json",
    "ws_subscribe_ack_spot.json",
    "ws_subscribe_error_bad_topic_capture.json",
    "ws_subscribe_request.json",
    "ws_subscribe_request_multi.json",
    "ws_unsubscribe_ack_ccxt.json",
    "ws_unsubscribe_request.json",
}


def test_every_sample_is_accounted_for(samples_dir: Path) -> None:
    present = {p.name for p in samples_dir.iterdir()}
    unknown = present - ENTITY_SAMPLES - NOT_ENTITY_SAMPLES
    assert not unknown, f"new samples need a parsing test: {sorted(unknown)}"
    assert not (ENTITY_SAMPLES - present), "entity samples went missing"
