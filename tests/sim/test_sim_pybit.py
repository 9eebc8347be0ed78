"""pybit, an independent ByBit client, works against the simulator unchanged (only its URLs are
pointed at the simulator: ``HTTP.endpoint`` and the ``PUBLIC_WSS`` template)."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from hubkit.testing import BybitSimulator

unified_trading = pytest.importorskip("pybit.unified_trading")
websocket_stream = pytest.importorskip("pybit._websocket_stream")


def test_pybit_rest_loads_every_public_dataset(bybit_sim: BybitSimulator) -> None:
    session = unified_trading.HTTP(testnet=False)
    session.endpoint = bybit_sim.rest_url  # the only change: where to send requests

    assert int(session.get_server_time()["result"]["timeSecond"]) > 0
    loaded: dict[str, int] = {}
    for category in ("spot", "linear", "inverse", "option"):
        symbols: list[str] = []
        cursor = ""
        while True:
            kwargs: dict[str, Any] = {"category": category}
            if cursor:
                kwargs["cursor"] = cursor
            page = session.get_instruments_info(**kwargs)["result"]
            symbols += [item["symbol"] for item in page["list"]]
            cursor = page.get("nextPageCursor", "")
            if not cursor:
                break
        assert len(symbols) == len(set(symbols))
        loaded[category] = len(symbols)
    assert loaded["linear"] > 500

    trades = session.get_public_trade_history(category="linear", symbol="BTCUSDT", limit=100)
    assert len(trades["result"]["list"]) == 100
    ticker = session.get_tickers(category="linear", symbol="BTCUSDT")["result"]["list"][0]
    assert float(ticker["lastPrice"]) > 0
    klines = session.get_kline(category="linear", symbol="BTCUSDT", interval="1", limit=5)
    assert len(klines["result"]["list"]) == 5
    book = session.get_orderbook(category="linear", symbol="BTCUSDT", limit=50)["result"]
    assert len(book["b"]) == 50 and len(book["a"]) == 50


def test_pybit_retries_after_10006_using_the_reset_header(bybit_sim: BybitSimulator) -> None:
    session = unified_trading.HTTP(testnet=False)
    session.endpoint = bybit_sim.rest_url
    bybit_sim.faults.rate_limit_reset_ms = 100
    bybit_sim.faults.rate_limit_next = 1
    assert session.get_server_time()["retCode"] == 0
    assert bybit_sim.fault_counts["http_10006"] == 1
    assert bybit_sim.requests["/v5/market/time"] == 2


def test_pybit_websocket_receives_public_trades(
    bybit_sim: BybitSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = bybit_sim.ws_url + "/{CHANNEL_TYPE}"
    monkeypatch.setattr(unified_trading, "PUBLIC_WSS", template)
    received: list[dict[str, Any]] = []
    enough = threading.Event()

    def on_trade(message: dict[str, Any]) -> None:
        received.append(message)
        if len(received) >= 3:
            enough.set()

    # pybit records a subscription's req_id only after sending it; on loopback the ack can
    # come back first, and its reader thread then fails with KeyError and drops the socket.
    # Pin the id and record the subscription beforehand (pybit overwrites it with the same).
    req_id = uuid.UUID(int=1)
    monkeypatch.setattr(websocket_stream, "uuid4", lambda: req_id)
    stream = unified_trading.WebSocket(testnet=False, channel_type="linear")
    stream.subscriptions[str(req_id)] = json.dumps(
        {"op": "subscribe", "req_id": str(req_id), "args": ["publicTrade.BTCUSDT"]}
    )
    try:
        stream.trade_stream(symbol="BTCUSDT", callback=on_trade)
        assert enough.wait(timeout=20), "no trades received"
    finally:
        stream.exit()
    got = list(received)  # pybit's thread may still append newer trades after this point
    truth = bybit_sim.ground_truth("trades")
    ids = set(truth["exec_id"].to_list())
    for message in got:
        assert message["topic"] == "publicTrade.BTCUSDT"
        assert all(item["i"] in ids for item in message["data"])
