"""Soak: a live trades sink under WebSocket drops and malformed frames, checked against the
simulator's ground truth, with the sink's memory over time.

    python benchmarks/stream_soak.py [--seconds 180] [--tps 2000] [--drop-every 15]
                                     [--malformed-every 300] [--cache-rows 200000]

The ByBit simulator runs in a child process (so the RSS figures are the sink's process
alone) making ``--tps`` trades/s in total over 3 linear symbols; it drops every WebSocket
connection ``--drop-every`` seconds after it opened and replaces every ``--malformed-every``-th
data message of a connection by a malformed one (the three kinds in turn). The sink is
``open_trades`` with a frame cache bounded to ``--cache-rows`` rows. After ``--seconds`` the
faults stop; the script waits (at most 60 s) until the trades made up to that moment are
stored and compares the store with the ground truth: lost, duplicated, unknown trades and
trades whose fields differ; it also prints the GAP changes, the DecodeErrors reported, the
faults that fired and the RSS sampled every 10 s (growth after the first minute).

Exit status 0 when nothing was lost, duplicated or different and no GAP was emitted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import polars as pl

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def _simulate(
    conn: Connection, tps: float, drop_every: float, malformed_every: int, folder: str
) -> None:
    """The child process: a simulator with faults on, answering the parent's commands."""
    from hubkit.testing.bybit import BybitSimulator

    with BybitSimulator(
        symbols={"linear": SYMBOLS},
        trades_per_second={"*": tps / len(SYMBOLS)},
        history_seconds=5.0,
    ) as sim:
        sim.faults.drop_ws_every_seconds = drop_every
        sim.faults.malformed_every_n_messages = malformed_every
        conn.send((sim.rest_url, sim.ws_url))
        while True:
            command = conn.recv()
            if command == "calm":  # stop the faults; the trades made so far are the truth
                sim.faults.reset()
                conn.send(sim.now_ms())
            elif command == "truth":
                path = os.path.join(folder, "truth.parquet")
                sim.ground_truth("trades").write_parquet(path)
                conn.send((path, sim.fault_counts, sim.messages_sent))
            else:
                return


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--tps", type=float, default=2000.0, help="trades/s over all symbols")
    parser.add_argument("--drop-every", type=float, default=15.0, help="seconds")
    parser.add_argument("--malformed-every", type=int, default=300, help="data messages")
    parser.add_argument("--cache-rows", type=int, default=200_000)
    args = parser.parse_args()

    from hubkit.bybit.provider import open_trades
    from hubkit.cache import FrameCache
    from hubkit.errors import DecodeError, HubkitError
    from hubkit.testing.bybit.tradecheck import TradeCheck, compare_trades
    from hubkit.types import Change, Op

    with tempfile.TemporaryDirectory() as folder:
        parent, child = mp.get_context("spawn").Pipe()
        sim = mp.get_context("spawn").Process(
            target=_simulate,
            args=(child, args.tps, args.drop_every, args.malformed_every, folder),
            daemon=True,
        )
        sim.start()
        rest_url, ws_url = parent.recv()
        gaps: list[Change] = []
        errors: list[HubkitError] = []
        samples: list[tuple[float, float, int]] = []
        with open_trades(
            SYMBOLS,
            store=Path(folder) / "trades.db",
            rest_url=rest_url,
            ws_url=ws_url,
            cache=FrameCache(max_rows=args.cache_rows),
        ) as sink:
            sink.set_error_handler(errors.append)
            sink.subscribe(lambda change: gaps.append(change) if change.op is Op.GAP else None)
            started = time.monotonic()
            print(f"{'t (s)':>6} {'RSS (MB)':>9} {'reconnects':>10}")
            while (elapsed := time.monotonic() - started) < args.seconds:
                reconnects = sink.status().reconnects
                samples.append((elapsed, _rss_mb(), reconnects))
                print(f"{elapsed:6.0f} {samples[-1][1]:9.1f} {reconnects:10d}", flush=True)
                time.sleep(min(10.0, max(0.0, args.seconds - elapsed)))
            parent.send("calm")
            cut = parent.recv()
            deadline = time.monotonic() + 60.0
            while True:
                stored = sink.dao.query()  # before the truth: every stored trade is in it
                parent.send("truth")
                path, faults, sent = parent.recv()
                check: TradeCheck = compare_trades(
                    stored, pl.read_parquet(path), symbols=SYMBOLS, until_ms=cut
                )
                if check.lost == 0 or time.monotonic() > deadline:
                    break
                time.sleep(2.0)
            status = sink.status()
        parent.send("stop")
        sim.join(timeout=30)

    decode_errors = sum(isinstance(e, DecodeError) for e in errors)
    other_errors = [e for e in errors if not isinstance(e, DecodeError)]
    malformed = sum(n for name, n in faults.items() if name.startswith("malformed_"))
    drops = faults.get("ws_drop_timer", 0)
    print()
    print(f"run: {args.seconds:.0f} s at {args.tps:,.0f} trades/s over {len(SYMBOLS)} symbols")
    print(f"faults: {drops} WebSocket drops, {malformed} malformed frames, {sent:,} messages")
    print(f"trades: {check}")
    print(f"GAP changes: {len(gaps)}   DecodeErrors reported: {decode_errors}")
    print(f"other errors: {len(other_errors)} {other_errors[:3]}")
    print(f"status: {status.sync_status.value}, last_error={status.last_error!r}")
    after_minute = [rss for t, rss, _ in samples if t >= 60.0]
    if after_minute:
        growth = after_minute[-1] - after_minute[0]
        print(
            f"RSS: {samples[0][1]:.0f} MB at start, {after_minute[0]:.0f} MB at 1 min, "
            f"{after_minute[-1]:.0f} MB at the end ({growth:+.0f} MB after the first minute)"
        )
    for gap in gaps[:5]:
        print(f"  gap: {gap.gap}")
    clean = check.clean and not gaps
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
