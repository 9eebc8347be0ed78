"""WebSocket behaviour: acks and limits, trades vs ground truth and REST, books, tickers, klines."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from simclient import recv_until, result, send, topic_is, ws

from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.bybit_sim(seed=9, trades_per_second=400, history_seconds=5)


def _is_op(op: str) -> Any:
    return lambda m: m.get("op") == op


def test_spot_allows_ten_args_per_request(bybit_sim: BybitSimulator) -> None:
    with ws(bybit_sim, "spot") as conn:
        send(conn, {"op": "subscribe", "req_id": "x", "args": [f"tickers.S{i}" for i in range(11)]})
        ack = recv_until(conn, _is_op("subscribe"))
        assert ack["success"] is False and ack["ret_msg"] == "error:args size >10"
        assert ack["req_id"] == "x"


def test_bad_topics_fail_and_good_ones_still_subscribe(bybit_sim: BybitSimulator) -> None:
    with ws(bybit_sim, "option") as conn:
        send(conn, {"op": "subscribe", "args": ["publicTrade.BTC", "publicTrade.NOPE"]})
        ack = recv_until(conn, lambda m: m.get("type") == "COMMAND_RESP")
        assert ack["data"] == {
            "failTopics": ["publicTrade.NOPE"],
            "successTopics": ["publicTrade.BTC"],
        }
        assert ack["success"] is False
        assert bybit_sim.subscribers("option", "publicTrade.BTC") == 1


def test_trades_match_ground_truth_and_rest(bybit_sim: BybitSimulator) -> None:
    received: list[dict[str, Any]] = []
    sizes = []
    with ws(bybit_sim, "linear") as conn:
        send(conn, {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]})
        while len(received) < 100:
            message = recv_until(conn, topic_is("publicTrade.BTCUSDT"))
            sizes.append(len(message["data"]))
            received += message["data"]
        send(conn, {"op": "unsubscribe", "args": ["publicTrade.BTCUSDT"]})
        recv_until(conn, _is_op("unsubscribe"))
        assert bybit_sim.subscribers("linear", "publicTrade.BTCUSDT") == 0
    assert max(sizes) > 1  # several trades per message at this rate
    times = [t["T"] for t in received]
    assert times == sorted(times)
    ids = [t["i"] for t in received]
    assert len(set(ids)) == len(ids)
    truth = bybit_sim.ground_truth("trades").filter(pl.col("symbol") == "BTCUSDT")
    by_id = {row["exec_id"]: row for row in truth.iter_rows(named=True)}
    for trade in received:
        row = by_id[trade["i"]]
        assert (float(trade["p"]), float(trade["v"]), trade["S"], trade["T"]) == (
            row["price"], row["size"], row["side"], row["time_ms"],
        )  # fmt: skip
    # gap fill: what the stream sent is in REST recent-trade
    recent = result(bybit_sim, "/v5/market/recent-trade", category="linear", symbol="BTCUSDT",
                    limit=1000)["list"]  # fmt: skip
    assert set(ids) <= {t["execId"] for t in recent}


def test_orderbook_snapshot_then_deltas_apply_cleanly(bybit_sim: BybitSimulator) -> None:
    topic = "orderbook.50.BTCUSDT"
    with ws(bybit_sim, "linear") as conn:
        send(conn, {"op": "subscribe", "args": [topic]})
        snap = recv_until(conn, topic_is(topic))
        assert snap["type"] == "snapshot"
        bids = {p: s for p, s in snap["data"]["b"]}
        asks = {p: s for p, s in snap["data"]["a"]}
        u = snap["data"]["u"]
        for _ in range(10):
            delta = recv_until(conn, topic_is(topic))
            assert delta["type"] == "delta" and delta["data"]["u"] == u + 1
            u = delta["data"]["u"]
            for side, levels in ((bids, delta["data"]["b"]), (asks, delta["data"]["a"])):
                for price, size in levels:
                    if size == "0":
                        assert price in side, "delete of an unknown level"
                        del side[price]
                    else:
                        side[price] = size
            assert len(bids) == len(asks) == 50
            assert max(map(float, bids)) < min(map(float, asks))


def test_tickers_snapshot_then_deltas(bybit_sim: BybitSimulator) -> None:
    with ws(bybit_sim, "linear") as conn:
        send(conn, {"op": "subscribe", "args": ["tickers.BTCUSDT"]})
        state = recv_until(conn, topic_is("tickers.BTCUSDT"))["data"]
        delta = recv_until(conn, topic_is("tickers.BTCUSDT"))
        assert delta["type"] == "delta" and delta["data"]["symbol"] == "BTCUSDT"
        assert set(delta["data"]) < set(state)
        state.update(delta["data"])
    prices = set(bybit_sim.ground_truth("trades").filter(pl.col("symbol") == "BTCUSDT")["price"])
    assert float(state["lastPrice"]) in prices
    assert bybit_sim.ground_truth("tickers").filter(pl.col("symbol") == "BTCUSDT").height > 0
    with ws(bybit_sim, "spot") as conn:
        send(conn, {"op": "subscribe", "args": ["tickers.BTCUSDT"]})
        for _ in range(2):
            assert recv_until(conn, topic_is("tickers.BTCUSDT"))["type"] == "snapshot"


@pytest.mark.bybit_sim(seed=9, trades_per_second=2, time_scale=240, history_seconds=30)
def test_kline_confirm_matches_rest_and_ground_truth(bybit_sim: BybitSimulator) -> None:
    with ws(bybit_sim, "linear") as conn:
        send(conn, {"op": "subscribe", "args": ["kline.1.BTCUSDT"]})
        confirmed = recv_until(
            conn, lambda m: m.get("topic") == "kline.1.BTCUSDT" and m["data"][0]["confirm"]
        )["data"][0]
    assert confirmed["end"] - confirmed["start"] == 59_999
    rows = result(bybit_sim, "/v5/market/kline", symbol="BTCUSDT", interval="1",
                  start=confirmed["start"], end=confirmed["start"])["list"]  # fmt: skip
    assert rows[0] == [
        str(confirmed["start"]), confirmed["open"], confirmed["high"], confirmed["low"],
        confirmed["close"], confirmed["volume"], confirmed["turnover"],
    ]  # fmt: skip
    truth = bybit_sim.ground_truth("klines").filter(pl.col("start_ms") == confirmed["start"])
    assert truth["confirm"].to_list() == [True]


def test_pong_shapes_per_category(bybit_sim: BybitSimulator) -> None:
    for category, expect in (
        ("linear", {"success", "ret_msg", "conn_id", "req_id", "op"}),
        ("spot", {"success", "ret_msg", "conn_id", "op"}),
        ("option", {"args", "op"}),
    ):
        with ws(bybit_sim, category) as conn:
            send(conn, {"op": "ping"})
            pong = json.loads(conn.recv(timeout=10))
            assert set(pong) == expect, category


def test_private_auth_checks_the_signature_when_keys_are_set() -> None:
    import hashlib
    import hmac

    with BybitSimulator(api_keys={"key": "secret"}) as sim:
        expires = str(sim.now_ms() + 10_000)
        good = hmac.new(b"secret", f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        with ws(sim, "private") as conn:
            send(conn, {"op": "subscribe", "args": ["order"]})
            assert recv_until(conn, _is_op("subscribe"))["success"] is False  # not authed yet
            send(conn, {"op": "auth", "args": ["key", expires, "bad"]})
            assert recv_until(conn, _is_op("auth"))["success"] is False
            send(conn, {"op": "auth", "args": ["key", expires, good]})
            assert recv_until(conn, _is_op("auth"))["success"] is True
            send(conn, {"op": "subscribe", "args": ["order", "wallet"]})
            assert recv_until(conn, _is_op("subscribe"))["success"] is True


def test_symbols_given_as_a_list_start_in_every_category() -> None:
    with BybitSimulator(symbols=["BTCUSDT"], history_seconds=1) as sim:
        trades = sim.ground_truth("trades")
        assert set(zip(trades["category"], trades["symbol"], strict=True)) <= {
            ("linear", "BTCUSDT"),
            ("spot", "BTCUSDT"),
        }
        assert sim.hub.market.state("inverse", "BTCUSD") is None
