"""Another process holds the store's SQLite write lock while trades stream in: the sink keeps
what it received, retries, and once the lock is released every trade is stored (none lost
against the simulator's ground truth) and the status is healthy again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from hubkit.bybit.provider import open_trades
from hubkit.store import Store
from hubkit.testing.bybit import BybitSimulator
from hubkit.testing.bybit.tradecheck import TradeCheck, compare_trades
from hubkit.types import Change, Op, SyncStatus

SYMBOLS = ["BTCUSDT", "ETHUSDT"]

# Holds BEGIN IMMEDIATE (the write lock) on the file until a line arrives on stdin or
# ``seconds`` pass, whichever comes first.
HOLDER = """
import sqlite3, sys, threading
path, seconds = sys.argv[1], float(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None, timeout=60)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
done.wait(seconds)
db.execute("ROLLBACK")
db.close()
print("released", flush=True)
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def write_lock(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
        holder.wait(timeout=120)


def _made(sim: BybitSimulator, symbol: str) -> int:
    truth = sim.ground_truth("trades")
    return truth.filter((pl.col("category") == "linear") & (pl.col("symbol") == symbol)).height


def _stream_through_lock(
    sim: BybitSimulator, tmp_path: Path, *, busy_timeout: float, hold: float | None
) -> None:
    """Stream, lock the store from another process while more trades are made than the REST
    backfill reaches back (1000 per symbol), release, and check every trade is stored."""
    path = tmp_path / "t.db"
    gaps: list[Change] = []
    store = Store(path, busy_timeout=busy_timeout)
    with (
        store,
        open_trades(SYMBOLS, store=store, rest_url=sim.rest_url, ws_url=sim.ws_url) as sink,
    ):
        sink.subscribe(lambda change: gaps.append(change) if change.op is Op.GAP else None)
        wait_until(lambda: sink.status().rows > 100, "the first trades")
        with write_lock(path, hold if hold is not None else 600.0) as holder:
            before = {s: _made(sim, s) for s in SYMBOLS}
            wait_until(
                lambda: "locked" in (sink.status().last_error or ""),
                "a write refused by the lock",
                timeout=busy_timeout + 30,
            )
            assert sink.status().sync_status is SyncStatus.OUT_OF_SYNC
            # more trades than the REST backfill could bring back arrive meanwhile
            wait_until(
                lambda: all(_made(sim, s) - before[s] > 1_200 for s in SYMBOLS),
                "1,200 trades per symbol during the lock",
            )
            if hold is not None:
                assert holder.stdout is not None
                assert holder.stdout.readline().strip() == "released"
        cut = sim.now_ms()
        check: list[TradeCheck] = []

        def stored_all() -> bool:
            stored = sink.dao.query()
            truth = sim.ground_truth("trades")
            check[:] = [compare_trades(stored, truth, symbols=SYMBOLS, until_ms=cut)]
            return check[0].lost == 0

        wait_until(stored_all, "every trade up to the release", timeout=60)
        wait_until(lambda: sink.status().last_error is None, "the error to clear")
        status = sink.status()
    assert check[0].clean, check[0]
    assert gaps == [], [g.gap for g in gaps]
    assert status.sync_status is SyncStatus.REMOTE_DATA_RECEIVED
    assert status.connected


@pytest.mark.bybit_sim(symbols={"linear": SYMBOLS}, trades_per_second=500.0, history_seconds=2.0)
def test_a_store_locked_by_another_process_loses_no_trade(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    # writes give up on the lock after 0.3 s, so the lock is held over several failed writes
    _stream_through_lock(bybit_sim, tmp_path, busy_timeout=0.3, hold=None)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.bybit_sim(symbols={"linear": SYMBOLS}, trades_per_second=500.0, history_seconds=2.0)
def test_a_store_locked_for_40_seconds_loses_no_trade(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    # the default 30 s busy timeout: the first write waits 30 s, fails, and is retried
    _stream_through_lock(bybit_sim, tmp_path, busy_timeout=30.0, hold=40.0)
