"""Trade rate of a live ``open_trades`` sink under WebSocket drops (the soak test's figure).

The soak test (tests/bybit/test_bybit_trades_soak.py) proves that nothing is lost or
duplicated; this measures how many trades per second that run actually carried end to end:
the simulator makes ``--tps`` trades/s for each of three linear symbols, drops the WebSocket
every ``--drop-every`` messages, and after ``--seconds`` the store is compared with the
simulator's ground truth. Prints the rate stored per second of the run, the reconnects, lost
and duplicated counts; exits 1 when the rate is under ``--floor`` (2,000 trades/s) or anything
was lost or duplicated.

    python benchmarks/trades_soak.py [--seconds 30] [--tps 750] [--drop-every 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from hubkit.bybit.provider import open_trades
from hubkit.testing.bybit import BybitSimulator

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tps", type=float, default=750.0, help="trades/s per symbol")
    parser.add_argument("--drop-every", type=int, default=500)
    parser.add_argument("--floor", type=float, default=2000.0, help="trades/s, all symbols")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        BybitSimulator(
            symbols={"linear": SYMBOLS},
            trades_per_second={"*": args.tps},
            history_seconds=5.0,
        ) as sim,
    ):
        sim.faults.drop_ws_every_n_messages = args.drop_every
        with open_trades(
            SYMBOLS,
            store=Path(folder) / "trades.db",
            rest_url=sim.rest_url,
            ws_url=sim.ws_url,
        ) as sink:
            time.sleep(args.seconds)  # the run itself
            close_ms = sim.now_ms()
            sink.force_sync()  # the closing backfill: whatever was in flight at the close
            reconnects = sink.status().reconnects
            stored = sink.dao.query()
        truth = sim.ground_truth("trades").filter(
            (pl.col("category") == "linear") & pl.col("symbol").is_in(SYMBOLS)
        )
    truth = truth.with_columns(
        time=pl.from_epoch("time_ms", time_unit="ms").dt.replace_time_zone("UTC")
    )
    close = datetime.fromtimestamp(close_ms / 1000, tz=UTC)
    rate = 0.0
    lost = 0
    for symbol in SYMBOLS:
        mine = stored.filter(pl.col("symbol") == symbol)
        first = mine["time"].min()
        assert isinstance(first, datetime), f"{symbol}: nothing stored"
        expected = truth.filter(
            (pl.col("symbol") == symbol) & (pl.col("time") > first) & (pl.col("time") <= close)
        )
        got = mine.filter((pl.col("time") > first) & (pl.col("time") <= close))
        lost += len(set(expected["exec_id"]) - set(got["exec_id"]))
        rate += got.height / (close - first).total_seconds()
    duplicated = int(stored.select("exec_id").is_duplicated().sum())
    print(f"trades stored per second of the run: {rate:,.0f} (floor {args.floor:,.0f})")
    print(f"reconnects: {reconnects}   lost: {lost}   duplicated: {duplicated}")
    return 0 if rate >= args.floor and not lost and not duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
