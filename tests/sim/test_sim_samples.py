"""Every real sample in tests/samples/bybit has the same keys and JSON types as the simulator's
corresponding response or frame.

Allowances, each from the samples' own caveats (samples/SOURCES.md, PROTOCOL.md):
- ``STRINGIFIED``: ccxt multi-line fixtures store numbers as strings (caveat 1).
- ``extra``: fields ByBit added after a sample was captured, which the simulator serves because
  PROTOCOL.md lists them as current (e.g. ``isRPITrade``/``seq`` on trades, ``cts`` on books).
- The docs' order-book snapshot is not valid JSON (``...`` placeholders); it is repaired by
  dropping the placeholders before comparing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from simclient import recv_until, rest, result, send, topic_is, ws
from simshape import shape_diff

from hubkit.testing import BybitSimulator

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "bybit"

STRINGIFIED = frozenset({"retCode", "time", "ts", "u", "seq", "fundingInterval"})
INSTRUMENT_NEW = frozenset(
    {"symbolId", "symbolType", "displayName", "forbidUplWithdrawal", "xstockMultiplier"}
)
SPOT_LOT_NEW = frozenset({"maxLimitOrderQty", "maxMarketOrderQty", "postOnlyMaxLimitOrderSize"})
TICKER_NEW = frozenset(
    {
        "preOpenPrice",
        "preQty",
        "curPreListingPhase",
        "fundingIntervalHour",
        "basisRateYear",
        "fundingCap",
    }
)


@pytest.fixture(scope="module")
def sim() -> Iterator[BybitSimulator]:
    with BybitSimulator(seed=3, trades_per_second=50) as s:
        yield s


Getter = Callable[[BybitSimulator], Any]


@dataclass(frozen=True)
class Case:
    get: Getter
    extra: frozenset[str] = frozenset()


def _instrument(category: str, symbol: str) -> Getter:
    def get(sim: BybitSimulator) -> Any:
        items = result(sim, "/v5/market/instruments-info", category=category, symbol=symbol)
        assert len(items["list"]) == 1
        return items["list"][0]

    return get


def _ccxt_instruments(sim: BybitSimulator) -> Any:
    return {
        "BTC/USDT": _instrument("spot", "BTCUSDT")(sim),
        "BTC/USDT:USDT": _instrument("linear", "BTCUSDT")(sim),
        "BTC/USD:BTC": _instrument("inverse", "BTCUSD")(sim),
        "LTC/USD:LTC": _instrument("inverse", "LTCUSD")(sim),
        "SOL/USDT:USDT-250530-90-P": _instrument("option", "SOL-30MAY25-90-P-USDT")(sim),
    }


def _ws_reply(category: str, *requests: dict[str, Any], want: Callable[[Any], bool]) -> Getter:
    def get(sim: BybitSimulator) -> Any:
        with ws(sim, category) as conn:
            for request in requests:
                send(conn, request)
            return recv_until(conn, want)

    return get


def _ws_data(category: str, topic: str, kind: str | None = None) -> Getter:
    return _ws_reply(
        category,
        {"op": "subscribe", "args": [topic]},
        want=topic_is(topic, kind),
    )


def _sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def _op(op: str) -> Callable[[Any], bool]:
    return lambda m: m.get("op") == op or m.get("type") == "COMMAND_RESP"


CASES: dict[str, Case] = {
    "rest_common_envelope.json": Case(lambda s: rest(s, "/v5/market/time")),
    "rest_error_10001_symbol_invalid_capture.json": Case(
        lambda s: rest(s, "/v5/market/orderbook", category="linear", symbol="SOLUSDTs")
    ),
    "rest_instruments_items_ccxt_markets.json": Case(
        _ccxt_instruments, INSTRUMENT_NEW | SPOT_LOT_NEW
    ),
    "rest_instruments_linear.json": Case(
        lambda s: rest(s, "/v5/market/instruments-info", category="linear", symbol="BTCUSDT"),
        INSTRUMENT_NEW,
    ),
    "rest_instruments_linear_prelisting.json": Case(
        lambda s: rest(
            s, "/v5/market/instruments-info", category="linear", status="PreLaunch", limit=1
        ),
        INSTRUMENT_NEW | {"skipCallAuction"},
    ),
    "rest_instruments_option.json": Case(
        lambda s: rest(s, "/v5/market/instruments-info", category="option", limit=5),
        INSTRUMENT_NEW,
    ),
    "rest_instruments_spot.json": Case(
        lambda s: rest(s, "/v5/market/instruments-info", category="spot", symbol="BTCUSDT"),
        INSTRUMENT_NEW,
    ),
    "rest_kline_inverse.json": Case(
        lambda s: rest(
            s, "/v5/market/kline", category="inverse", symbol="BTCUSD", interval=60, limit=3
        )
    ),
    "rest_kline_linear_ccxt.json": Case(
        lambda s: rest(
            s,
            "/v5/market/kline",
            category="linear",
            symbol="BTCUSDT",
            interval=60,
            start=1706628191000,
            limit=3,
        )
    ),
    "rest_open_interest_inverse_ccxt_raw.json": Case(
        lambda s: rest(
            s,
            "/v5/market/open-interest",
            category="inverse",
            symbol="BTCUSD",
            intervalTime="5min",
            limit=1,
        )
    ),
    "rest_open_interest_linear_ccxt_raw.json": Case(
        lambda s: rest(
            s,
            "/v5/market/open-interest",
            category="linear",
            symbol="BTCUSDT",
            intervalTime="5min",
            limit=1,
        )
    ),
    "rest_orderbook_linear_ccxt.json": Case(
        lambda s: rest(s, "/v5/market/orderbook", category="linear", symbol="BTCUSDT", limit=2),
        frozenset({"cts"}),
    ),
    "rest_orderbook_spot.json": Case(
        lambda s: rest(s, "/v5/market/orderbook", category="spot", symbol="BTCUSDT")
    ),
    "rest_orderbook_spot_ccxt.json": Case(
        lambda s: rest(s, "/v5/market/orderbook", category="spot", symbol="BTCUSDT", limit=2),
        frozenset({"seq", "cts"}),
    ),
    "rest_recent_trade_linear_ccxt.json": Case(
        lambda s: rest(s, "/v5/market/recent-trade", category="linear", symbol="BTCUSDT", limit=5),
        frozenset({"isRPITrade", "seq"}),
    ),
    "rest_recent_trade_spot.json": Case(
        lambda s: rest(s, "/v5/market/recent-trade", category="spot", symbol="BTCUSDT", limit=5)
    ),
    "rest_server_time.json": Case(lambda s: rest(s, "/v5/market/time")),
    "rest_tickers_inverse.json": Case(
        lambda s: rest(s, "/v5/market/tickers", category="inverse", symbol="BTCUSD")
    ),
    "rest_tickers_linear_ccxt.json": Case(
        lambda s: rest(s, "/v5/market/tickers", category="linear", symbol="BTCUSDT"), TICKER_NEW
    ),
    "rest_tickers_option.json": Case(
        lambda s: rest(s, "/v5/market/tickers", category="option", baseCoin="BTC")
    ),
    "rest_tickers_option_ccxt_raw.json": Case(
        lambda s: rest(s, "/v5/market/tickers", category="option", baseCoin="BTC")
    ),
    "rest_tickers_spot.json": Case(
        lambda s: rest(s, "/v5/market/tickers", category="spot", symbol="BTCUSDT")
    ),
    # the auth request is what the private endpoint accepts; its answer is ws_auth_success
    "ws_auth_request.json": Case(
        _ws_reply("private", _sample("ws_auth_request.json"), want=_op("auth"))
    ),
    "ws_auth_success.json": Case(
        _ws_reply("private", _sample("ws_auth_request.json"), want=_op("auth"))
    ),
    "ws_kline.json": Case(_ws_data("linear", "kline.5.BTCUSDT")),
    "ws_orderbook_50_delta.json": Case(_ws_data("linear", "orderbook.50.BTCUSDT", "delta")),
    "ws_orderbook_50_snapshot_docs.json.txt": Case(
        _ws_data("linear", "orderbook.50.BTCUSDT", "snapshot")
    ),
    "ws_orderbook_1_linear_stream_capture.jsonl": Case(
        _ws_data("linear", "orderbook.1.BTCUSDT"), frozenset({"cts"})
    ),
    "ws_ping_request.json": Case(
        _ws_reply("linear", _sample("ws_ping_request.json"), want=_op("ping"))
    ),
    "ws_pong_linear.json": Case(
        _ws_reply("linear", _sample("ws_ping_request.json"), want=_op("ping"))
    ),
    "ws_pong_linear_capture.json": Case(
        _ws_reply("linear", {"op": "ping", "req_id": "x"}, want=_op("ping"))
    ),
    "ws_pong_option.json": Case(_ws_reply("option", {"op": "ping"}, want=_op("pong"))),
    "ws_pong_private.json": Case(
        _ws_reply("private", {"op": "ping", "req_id": "test"}, want=_op("pong"))
    ),
    "ws_pong_spot.json": Case(_ws_reply("spot", {"op": "ping"}, want=_op("ping"))),
    "ws_publicTrade.json": Case(_ws_data("linear", "publicTrade.BTCUSDT"), frozenset({"RPI"})),
    "ws_publicTrade_linear_capture.json": Case(
        _ws_data("linear", "publicTrade.BTCUSDT"), frozenset({"RPI", "seq"})
    ),
    "ws_subscribe_ack_linear.json": Case(
        _ws_reply(
            "linear", {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}, want=_op("subscribe")
        )
    ),
    "ws_subscribe_ack_option.json": Case(
        _ws_reply("option", {"op": "subscribe", "args": ["publicTrade.BTC"]}, want=_op("subscribe"))
    ),
    "ws_subscribe_ack_private.json": Case(
        _ws_reply(
            "private",
            _sample("ws_auth_request.json"),
            {"op": "subscribe", "args": ["order"]},
            want=_op("subscribe"),
        )
    ),
    "ws_subscribe_ack_spot.json": Case(
        _ws_reply(
            "spot",
            {"op": "subscribe", "req_id": "1", "args": ["publicTrade.BTCUSDT"]},
            want=_op("subscribe"),
        )
    ),
    "ws_subscribe_error_bad_topic_capture.json": Case(
        _ws_reply(
            "linear",
            {"op": "subscribe", "req_id": "e", "args": ["getOrderBook.1.BTCUSDT"]},
            want=_op("subscribe"),
        )
    ),
    "ws_subscribe_request.json": Case(
        _ws_reply("linear", _sample("ws_subscribe_request.json"), want=_op("subscribe"))
    ),
    "ws_subscribe_request_multi.json": Case(
        _ws_reply("linear", _sample("ws_subscribe_request_multi.json"), want=_op("subscribe"))
    ),
    "ws_tickers_linear_delta_UNVERIFIED.json": Case(_ws_data("linear", "tickers.BTCUSDT", "delta")),
    "ws_tickers_linear_futures_snapshot.json": Case(
        _ws_data("linear", "tickers.BTC-25DEC26", "snapshot")
    ),
    "ws_tickers_linear_perpetual_snapshot.json": Case(
        _ws_data("linear", "tickers.BTCUSDT", "snapshot")
    ),
    "ws_tickers_linear_snapshot_2023_docs.json": Case(
        _ws_data("linear", "tickers.BTCUSDT", "snapshot"), TICKER_NEW
    ),
    "ws_tickers_option_snapshot.json": Case(_ws_data("option", "tickers.BTC-04DEC26-90000-C-USDT")),
    "ws_tickers_spot_snapshot.json": Case(_ws_data("spot", "tickers.BTCUSDT")),
    "ws_unsubscribe_ack_ccxt.json": Case(
        _ws_reply(
            "linear",
            {"op": "unsubscribe", "req_id": "3", "args": ["publicTrade.BTCUSDT"]},
            want=_op("unsubscribe"),
        )
    ),
    "ws_unsubscribe_request.json": Case(
        _ws_reply("inverse", _sample("ws_unsubscribe_request.json"), want=_op("unsubscribe"))
    ),
}
# requests are compared with the reply they produce: map them to that reply's sample
REPLY_OF = {
    "ws_auth_request.json": "ws_auth_success.json",
    "ws_ping_request.json": "ws_pong_linear.json",
    "ws_subscribe_request.json": "ws_subscribe_ack_linear.json",
    "ws_subscribe_request_multi.json": "ws_subscribe_ack_linear.json",
    "ws_unsubscribe_request.json": "ws_unsubscribe_ack_ccxt.json",
}


def _load_sample(name: str) -> list[Any]:
    text = (SAMPLES / name).read_text()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if name.endswith(".json.txt"):  # docs placeholders "...," are not JSON
        text = re.sub(r"\.\.\.,?", "", text)
        text = re.sub(r",(\s*[\]}])", r"\1", text)
    return [json.loads(text)]


def test_every_sample_has_a_case() -> None:
    files = {p.name for p in SAMPLES.iterdir() if p.name != "SOURCES.md"}
    assert files == set(CASES), f"unmapped: {files - set(CASES)}; stale: {set(CASES) - files}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_shape(sim: BybitSimulator, name: str) -> None:
    case = CASES[name]
    actual = case.get(sim)
    for sample in _load_sample(REPLY_OF.get(name, name)):
        if name == "ws_orderbook_1_linear_stream_capture.jsonl" and sample["type"] == "delta":
            actual_item = _ws_data("linear", "orderbook.1.BTCUSDT", "delta")(sim)
        else:
            actual_item = actual
        if sample.get("type") == "delta" and "tickers" in str(sample.get("topic")):
            # a ticker delta carries only changed fields: compare those the sample shows
            assert "symbol" in actual_item["data"]
            sample = dict(sample, data={k: v for k, v in sample["data"].items()
                                        if k in actual_item["data"]})  # fmt: skip
            actual_item = dict(actual_item, data={k: v for k, v in actual_item["data"].items()
                                                  if k in sample["data"]})  # fmt: skip
        diff = shape_diff(sample, actual_item, extra_ok=case.extra, stringified=STRINGIFIED)
        assert diff == [], f"{name}: {diff}"
