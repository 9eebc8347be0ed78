"""Live trades under WebSocket drops: the store ends with exactly the simulator's trades."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from hubkit.bybit.provider import open_trades
from hubkit.errors import HubkitError
from hubkit.testing.bybit import BybitSimulator
from hubkit.types import Change

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
RUN_SECONDS = 30.0
DROP_EVERY = 500


@pytest.mark.soak
@pytest.mark.bybit_sim(
    symbols={"linear": SYMBOLS}, trades_per_second={"*": 750.0}, history_seconds=5.0
)
def test_ws_dropped_every_500_messages_loses_and_duplicates_nothing(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    """30 s of 750 trades/s per symbol over 3 symbols, the WebSocket dropped every 500
    messages: every trade the simulator made up to the close is stored once (0 lost, 0
    duplicated), field for field. The rate reached is measured by benchmarks/trades_soak.py."""
    bybit_sim.faults.drop_ws_every_n_messages = DROP_EVERY
    errors: list[HubkitError] = []
    gaps: list[Change] = []
    stop = threading.Event()
    with open_trades(
        SYMBOLS,
        store=tmp_path / "trades.db",
        rest_url=bybit_sim.rest_url,
        ws_url=bybit_sim.ws_url,
    ) as sink:
        sink.set_error_handler(errors.append)
        sink.subscribe(lambda change: gaps.append(change) if change.gap is not None else None)
        started = time.monotonic()
        # the soak itself: run for RUN_SECONDS, and at least until three drops happened
        while not stop.wait(0.25):
            drops = bybit_sim.fault_counts.get("ws_drop_messages", 0)
            if time.monotonic() - started >= RUN_SECONDS and drops >= 3:
                break
            assert time.monotonic() - started < 4 * RUN_SECONDS, "the drops did not happen"
        close_ms = bybit_sim.now_ms()
        sink.force_sync()  # the closing backfill: whatever was in flight at the close
        reconnects = sink.status().reconnects
        stored = sink.dao.query()
    assert bybit_sim.fault_counts["ws_drop_messages"] >= 3
    assert reconnects >= 3
    assert gaps == [], [g.gap for g in gaps]
    assert errors == [], errors
    assert stored.select("exec_id").is_duplicated().sum() == 0
    truth = (
        bybit_sim.ground_truth("trades")
        .filter((pl.col("category") == "linear") & pl.col("symbol").is_in(SYMBOLS))
        .with_columns(time=pl.from_epoch("time_ms", time_unit="ms").dt.replace_time_zone("UTC"))
    )
    close = datetime.fromtimestamp(close_ms / 1000, tz=UTC)
    for symbol in SYMBOLS:
        mine = stored.filter(pl.col("symbol") == symbol)
        first = mine["time"].min()  # the subscription started here; compare what follows
        assert isinstance(first, datetime)
        expected = truth.filter(
            (pl.col("symbol") == symbol) & (pl.col("time") > first) & (pl.col("time") <= close)
        )
        got = mine.filter((pl.col("time") > first) & (pl.col("time") <= close))
        lost = set(expected["exec_id"]) - set(got["exec_id"])
        extra = set(got["exec_id"]) - set(expected["exec_id"])
        assert expected.height > 0, f"{symbol}: the simulator made no trades to compare"
        assert not lost, f"{symbol}: {len(lost)} of {expected.height} trades lost"
        assert not extra, f"{symbol}: {len(extra)} trades the simulator never made"
        # the stored rows are the simulator's rows, field for field
        columns = ["exec_id", "price", "size", "side", "time", "is_block_trade"]
        joined = got.select(columns).join(
            expected.select(columns), on="exec_id", how="inner", suffix="_truth"
        )
        assert joined.height == got.height
        for column in columns[1:]:
            assert (joined[column] == joined[f"{column}_truth"]).all(), (symbol, column)
