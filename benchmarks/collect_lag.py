"""Store latency of ``hubkit collect``: how long after its own time a trade can be read from
the store, for a collector process against an in-process ``open_trades`` sink (baseline).

The simulator makes ``--tps`` trades/s for each of two linear symbols. Each phase runs for
``--seconds``: a reader in this process polls the store every ``--poll`` seconds through the
store layer (the way a notebook on another machine would) and notes, for each trade it sees
for the first time, now minus the trade's time. Phase 1 keeps an ``open_trades`` sink in
this process; phase 2 runs ``hubkit collect`` in a subprocess with a collector file. Each
phase writes a fresh SQLite file. Prints p50/p99/max per phase and the ratio of
the collector's p50 and p99 to the in-process sink's.

    python benchmarks/collect_lag.py [--seconds 15] [--tps 1000] [--poll 0.05]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from hubkit.bybit import PublicTrade
from hubkit.bybit.entities import PUBLIC_TRADE_KEY
from hubkit.bybit.provider import open_trades
from hubkit.entity import reflect
from hubkit.store import Store, store_inventory
from hubkit.testing.bybit import BybitSimulator

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
TABLE = "bybit_public_trade_linear"


def _watch(store_url: str, poll: float, stop: threading.Event) -> list[float]:
    """Latencies (seconds) of the trades first seen in the store, until ``stop``."""
    latencies: list[float] = []
    seen: set[str] = set()
    with Store(store_url) as store:
        while TABLE not in store_inventory(store).names():
            if stop.wait(poll):
                return latencies
        table = store.table(reflect(PublicTrade, PUBLIC_TRADE_KEY), name=TABLE)
        column = table.table.c["time"]
        watermark = datetime.now(UTC) - timedelta(seconds=5)
        while not stop.wait(poll):
            frame = table.query(column >= watermark - timedelta(seconds=2))
            now = datetime.now(UTC)
            fresh = frame.filter(~pl.col("exec_id").is_in(list(seen)))
            for exec_id, moment in fresh.select("exec_id", "time").iter_rows():
                seen.add(exec_id)
                latencies.append((now - moment).total_seconds())
            if frame.height:
                watermark = max(watermark, frame["time"].max())  # type: ignore[type-var]
    return latencies


def _phase(run: Callable[[threading.Event], None], store_url: str, poll: float) -> list[float]:
    stop = threading.Event()
    result: list[list[float]] = []
    reader = threading.Thread(target=lambda: result.append(_watch(store_url, poll, stop)))
    reader.start()
    try:
        run(stop)
    finally:
        stop.set()
        reader.join()
    return result[0]


def _figures(name: str, latencies: list[float]) -> tuple[float, float]:
    series = pl.Series(latencies)
    p50 = float(series.quantile(0.5) or 0.0)
    p99 = float(series.quantile(0.99) or 0.0)
    print(
        f"{name:<24} trades {len(latencies):>7,}   p50 {p50 * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms"
    )
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--tps", type=float, default=1000.0, help="trades/s per symbol")
    parser.add_argument("--poll", type=float, default=0.05, help="reader poll interval (s)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        BybitSimulator(
            symbols={"linear": SYMBOLS}, trades_per_second={"*": args.tps}, history_seconds=2.0
        ) as sim,
    ):
        inproc = f"sqlite:///{Path(folder) / 'inprocess.db'}"

        def in_process(stop: threading.Event) -> None:
            with open_trades(SYMBOLS, store=inproc, rest_url=sim.rest_url, ws_url=sim.ws_url):
                stop.wait(args.seconds)

        collected = f"sqlite:///{Path(folder) / 'collector.db'}"
        config = Path(folder) / "collector.toml"
        config.write_text(f'store = "{collected}"\n[trades]\nsymbols = ["BTCUSDT", "ETHUSDT"]\n')
        env = {
            **os.environ,
            "HUBKIT_BYBIT_REST_URL": sim.rest_url,
            "HUBKIT_BYBIT_WS_URL": sim.ws_url,
        }

        def collector(stop: threading.Event) -> None:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hubkit", "collect", str(config)],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            try:
                stop.wait(args.seconds)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)

        print(f"{len(SYMBOLS)} symbols x {args.tps:,.0f} trades/s, {args.seconds:g} s per phase")
        base = _figures("in-process open_trades", _phase(in_process, inproc, args.poll))
        mine = _figures("hubkit collect process", _phase(collector, collected, args.poll))
    print(
        f"ratio collector / in-process: p50 {mine[0] / base[0]:.2f}   p99 {mine[1] / base[1]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
