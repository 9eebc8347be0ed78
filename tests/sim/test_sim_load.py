"""The simulator under load: exact trade rates, compact history, slices, slow and gone clients,
and stopping on a signal while busy."""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl
import pytest
from simclient import recv_until, send, ws
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubkit.testing import BybitSimulator
from hubkit.testing.bybit.groundtruth import uuid_column
from hubkit.testing.bybit.instruments import load_catalog
from hubkit.testing.bybit.market import Market
from hubkit.testing.bybit.pricing import MINUTE, PricePath, SimClock, uuid_like

START = 1_790_000_000_000  # minute-aligned


def _market(rate: float, *, history_seconds: float = 0.0) -> Market:
    return Market(
        load_catalog(None),
        seed=4,
        clock=SimClock(START, time_scale=1e-9),
        trades_per_second=rate,
        history_seconds=history_seconds,
    )


def _wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize("rate", [5.0, 400.0, 2000.0, 3333.0, 20000.0])
def test_trade_rate_matches_the_setting(rate: float) -> None:
    market = _market(rate)
    stream = market.activate("linear", "BTCUSDT")
    assert stream is not None
    seconds = 50_000 / rate  # about 50k trades
    stream.advance(START + int(seconds * 1000))
    expected = rate * seconds
    # a Poisson count: 5 standard deviations is far beyond chance
    assert abs(stream.count - expected) < 5 * math.sqrt(expected) + 1


def test_trades_are_kept_compactly() -> None:
    market = _market(3000.0)
    linear = market.activate("linear", "BTCUSDT")
    option = market.activate("option", "BTC")
    assert linear is not None and option is not None
    market.advance(START + 20_000)
    assert linear.count > 50_000 and option.count > 50_000
    assert linear.nbytes() / linear.count <= 26  # time, price, size: 8 bytes each; flags: 1
    assert option.nbytes() / option.count <= 64


def test_ground_truth_equals_the_wire_strings() -> None:
    """The ground truth is built column-wise from the stored numbers; it must say exactly what
    the trades sent over the wire say (ids, decimal prices and sizes, seq, flags)."""
    symbols = {"linear": ["BTCUSDT"], "spot": ["BTCUSDT"], "inverse": ["BTCUSD"], "option": ["BTC"]}
    with BybitSimulator(
        seed=8, symbols=symbols, trades_per_second=300, start_time_ms=START, time_scale=1e-9
    ) as sim:
        truth = sim.ground_truth("trades")
        made = sim._call(sim.hub.market.all_trades)
    assert set(truth["category"]) == {"linear", "spot", "inverse", "option"}
    assert truth.height == len(made) > 50_000
    wire = pl.DataFrame(
        {
            "category": [t.category for t in made],
            "symbol": [t.symbol for t in made],
            "exec_id": [t.exec_id for t in made],
            "time_ms": [t.time for t in made],
            "price": [float(t.price) for t in made],
            "size": [float(t.size) for t in made],
            "side": [t.side for t in made],
            "tick_direction": [t.tick_direction for t in made],
            "seq": [t.seq for t in made],
            "is_block_trade": [t.block for t in made],
            "is_rpi_trade": [t.rpi for t in made],
        }
    )
    assert truth.drop("time").equals(wire)
    assert truth["exec_id"].n_unique() == truth.height


def test_uuid_column_equals_uuid_like() -> None:
    rng = random.Random(1)
    for h in (0, 1, (1 << 64) - 1, rng.getrandbits(64)):
        assert uuid_column(h, 3000).to_list() == [uuid_like(h, k) for k in range(3000)]


def test_candles_over_any_range_equal_their_trades() -> None:
    market = _market(50.0, history_seconds=600)
    market.activate("linear", "BTCUSDT")
    market.advance(START)
    st = market.state("linear", "BTCUSDT")
    assert st is not None and st.stream is not None and st.count > 20_000
    prices, sizes = st.stream.prices, st.stream.sizes
    trades = [(st.times[i], prices[i], sizes[i]) for i in range(st.count)]
    rng = random.Random(2)
    lo, hi = st.times[0], st.times[-1] + 1
    ranges = [(lo - MINUTE, hi + MINUTE), (START - 3 * MINUTE, START + 1)]
    for _ in range(40):
        a, b = sorted(rng.sample(range(lo, hi), 2))
        ranges.append((a, b))
    for start, end in ranges:
        inside = [t for t in trades if start <= t[0] < end]
        got = st.aggregate(start, end)
        if not inside:
            assert got is None
            continue
        assert got is not None
        prices = [t[1] for t in inside]
        o, h, low, c, v, turnover = got
        assert (o, h, low, c, v) == (
            prices[0], max(prices), min(prices), prices[-1], sum(t[2] for t in inside),
        )  # fmt: skip
        expected = sum(st.turnover_of(p, s) for _, p, s in inside)
        assert math.isclose(turnover, expected, rel_tol=1e-9)


def test_market_advances_in_bounded_slices() -> None:
    market = _market(2000.0, history_seconds=20)
    for name in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        market.activate("linear", name)
    streams = list(market.streams.values())
    assert not market.advance(START, max_trades=3000)
    made = sum(s.count for s in streams)
    assert 3000 <= made < 3000 + 64 * len(streams)
    assert all(s.count > 0 for s in streams)  # shared between the streams
    assert all(s.history_count is None for s in streams)  # back history not finished
    while not market.advance(START, max_trades=50_000):
        pass
    whole = _market(2000.0, history_seconds=20)
    for name in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        whole.activate("linear", name)
    whole.advance(START)
    for sliced, at_once in zip(streams, whole.streams.values(), strict=True):
        assert sliced.history_count == sliced.count == at_once.count  # same trades either way
        assert sliced.prices == at_once.prices and sliced.times == at_once.times


def test_back_history_is_never_pushed_live() -> None:
    """History made at start, or when a symbol starts mid-run, is in REST and the ground
    truth but not sent to subscribers (the clock is frozen here: nothing new is made)."""
    with (
        BybitSimulator(
            trades_per_second=2000, history_seconds=30, start_time_ms=START, time_scale=1e-9
        ) as sim,
        ws(sim, "linear") as conn,
    ):
        send(conn, {"op": "subscribe", "args": ["publicTrade.BTCUSDT", "publicTrade.XRPUSDT"]})
        recv_until(conn, lambda m: m.get("op") == "subscribe")

        def xrp_history_done() -> bool:
            def run() -> bool:
                sim.hub.tick()  # what the loop does each round, in slices
                stream = sim.hub.market.streams.get(("linear", "XRPUSDT"))
                return stream is not None and stream.history_count is not None

            return sim._call(run)

        _wait_for(xrp_history_done)
        sim._call(sim.hub.tick)
        truth = sim.ground_truth("trades")
        per_symbol = dict(truth.group_by("symbol").len().iter_rows())
        assert per_symbol["BTCUSDT"] > 50_000 and per_symbol["XRPUSDT"] > 50_000
        assert sim.messages_sent == 0
        send(conn, {"op": "ping", "req_id": "after"})
        pong = recv_until(conn, lambda m: m.get("op") == "ping")
        assert pong["req_id"] == "after"  # nothing but the ack came before it


def test_slow_consumer_is_closed_with_1008() -> None:
    with BybitSimulator(
        trades_per_second=20_000, history_seconds=1, ws_max_buffer=64 * 1024
    ) as sim:
        # the client stops reading once a few frames wait in its queue; the kernel buffers
        # fill, then the simulator's own buffer for it passes the limit
        with connect(sim.ws_endpoint("linear"), max_queue=4) as conn:
            send(conn, {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]})
            _wait_for(lambda: sim.slow_consumers_dropped == 1)
            # it left every subscription at once, before its socket closed
            assert sim.subscribers("linear", "publicTrade.BTCUSDT") == 0
            assert sim.fault_counts["ws_slow_consumer"] == 1
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    conn.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert sim.ws_connections == 0


def test_a_connection_whose_transport_closed_is_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer reset closes the transport at once; the reading task notices a loop iteration or
    more later. Rounds published meanwhile must not write (asyncio would log
    "socket.send() raised exception." per write) and the connection leaves its topics."""
    topic = "publicTrade.BTCUSDT"
    with BybitSimulator(trades_per_second=50) as sim, ws(sim, "linear") as conn:
        send(conn, {"op": "subscribe", "args": [topic]})
        recv_until(conn, lambda m: m.get("op") == "subscribe")

        def lose_then_publish() -> int:
            hub = sim.hub
            (gone,) = list(hub.conns)
            gone.transport.abort()  # closed under the connection, its task not yet run
            for _ in range(10):
                hub.publish("linear", topic, {"topic": topic, "data": []})
                hub.tick()
            return len(hub.subs.get(("linear", topic), ()))

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            assert sim._call(lose_then_publish) == 0
            _wait_for(lambda: sim.ws_connections == 0)
    assert not [r for r in caplog.records if "socket.send()" in r.getMessage()]


MODULE = ["-m", "hubkit.testing.bybit", "--history-seconds", "2"]
MODULE += ["--symbols", '{"linear": ["BTCUSDT", "ETHUSDT", "SOLUSDT"]}']
CLI = ["-m", "hubkit", "simulate", "--symbols", "BTCUSDT"]  # with 60 s of back history


@pytest.mark.parametrize("command", [MODULE, CLI], ids=["module", "cli"])
def test_sigterm_stops_a_busy_simulator(command: list[str]) -> None:
    """Busy (10k trades/s per symbol, a subscriber), SIGTERM ends the process with status 0."""
    args = [sys.executable, *command, "--port", "0", "--trades-per-second", "10000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ws_url = next(line for line in proc.stdout if line.startswith("ws_url="))
        url = ws_url.strip().split("=", 1)[1] + "/linear"
        with connect(url, open_timeout=30) as conn:
            send(conn, {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]})
            message: dict[str, Any] = recv_until(conn, lambda m: "topic" in m, timeout=30)
            assert message["data"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_recent_trades_and_json_shape_survive_columns() -> None:
    """REST recent-trade of an option symbol reads that symbol's own trades."""
    with BybitSimulator(symbols={"option": ["BTC"]}, trades_per_second=200, history_seconds=20,
                        start_time_ms=START, time_scale=1e-9) as sim:  # fmt: skip
        stream = sim.hub.market.streams[("option", "BTC")]
        symbol = stream.members[0].inst.symbol
        params = {"category": "option", "symbol": symbol, "limit": 50}
        body = httpx.get(f"{sim.rest_url}/v5/market/recent-trade", params=params).json()
        items = body["result"]["list"]
        assert items and all(i["symbol"] == symbol for i in items)
        times = [int(i["time"]) for i in items]
        assert times == sorted(times, reverse=True)
        truth = sim.ground_truth("trades").filter(pl.col("symbol") == symbol)
        assert [i["execId"] for i in items] == truth["exec_id"].reverse().head(len(items)).to_list()
        assert json.dumps(items)


def test_price_path_cache_changes_no_value() -> None:
    rng = random.Random(3)
    times = [rng.randrange(0, 1 << 41) for _ in range(500)]
    times += sorted(rng.randrange(START, START + 600_000) for _ in range(2000))
    cached = PricePath(12345, 100.0)
    for t in times:
        assert cached.at(t) == PricePath(12345, 100.0).at(t)  # a fresh path has no cache
