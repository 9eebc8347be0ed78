"""Follower latency: a writer process commits trades at a steady rate into a shared store; a
``Follow()`` sink in this process applies them. How long from the writer's commit call to the
follower's change event, per trade?

Usage: ``python benchmarks/follow_latency.py [--rate 2000] [--seconds 10] [--batch 20]
[--backend sqlite|postgresql|both]`` (PostgreSQL: a server started for the run with
``hubkit.testing.EmbeddedPostgres``).

The writer (a subprocess, ``--writer``) upserts ``batch`` trades at a time through a plain
``hubkit.Store`` table, paced to ``rate`` trades/s; each trade carries ``written_at``, the
writer's clock just before its commit. In this process, at the same time:

- hubkit: ``open_sink(..., policy=Follow(interval=0.05))`` with a change handler noting when
  each trade's REMOTE change arrives (on PostgreSQL it is told of commits by NOTIFY);
- baseline: a thread polling the table every 50 ms for the rows past the last one it saw,
  with stdlib ``sqlite3`` (by ``rowid``) or psycopg (by key, the writer's keys increase): the
  simplest follower of an append-only table; it sees no updates or deletes, keeps no cache.

Latency = arrival time - ``written_at`` (one clock: same machine). Prints p50/p99/max for
both, and their ratio; the goal is p99 <= 1 s for the follower.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

import hubkit
from hubkit.types import Change, Op, Source

POLL = 0.05


@dataclass
class Trade:
    exec_id: str
    symbol: str
    price: float
    size: float
    time: datetime
    written_at: float


def writer(db: str, rate: int, seconds: float, batch: int) -> None:
    with hubkit.Store(db) as store:
        table = store.table(hubkit.reflect(Trade, "exec_id"))
        total = int(rate * seconds)
        start = time.perf_counter()
        for first in range(0, total, batch):
            due = start + first / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # pacing the writer to the wanted rate
            now = time.time()
            rows = [
                Trade(f"t{i:08d}", "BTCUSDT", 60000.0 + i, 0.001, datetime.now(UTC), now)
                for i in range(first, min(first + batch, total))
            ]
            table.upsert(rows)
        print(f"{time.perf_counter() - start:.3f}", flush=True)


class Baseline(threading.Thread):
    """Poll the table for rows past the last one seen (sqlite3 by rowid, psycopg by key)."""

    def __init__(self, url: str, table: str) -> None:
        super().__init__(daemon=True)
        self.url, self.table = url, table
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        if "://" not in self.url:
            self._poll(sqlite3.connect(self.url), "rowid", "?", 0)
            return
        import psycopg

        from hubkit import pgbulk

        conn = psycopg.connect(pgbulk.libpq_uri(self.url), autocommit=True)
        self._poll(conn, "exec_id", "%s", "")

    def _poll(self, conn: Any, column: str, mark: str, last: Any) -> None:
        sql = (
            f'SELECT {column}, written_at FROM "{self.table}" '
            f"WHERE {column} > {mark} ORDER BY {column}"
        )
        while not self.stop.wait(POLL):
            rows = conn.execute(sql, (last,)).fetchall()
            now = time.time()
            if rows:
                last = rows[-1][0]
                self.latencies.extend(now - w for _, w in rows)
        conn.close()


def figures(name: str, latencies: list[float]) -> tuple[float, float]:
    s = pl.Series(latencies) * 1000
    p50, p99 = float(s.quantile(0.5) or 0), float(s.quantile(0.99) or 0)
    print(f"{name:<38} {s.len():>7,} {p50:>9.1f} {p99:>9.1f} {float(s.max() or 0):>9.1f}")
    return p50, p99


def follow(url: str, args: argparse.Namespace, label: str) -> None:
    """One run: the writer process, the follower sink and the baseline on store ``url``."""
    total = int(args.rate * args.seconds)
    spec = hubkit.reflect(Trade, "exec_id")
    with hubkit.Store(url) as store:
        store.table(spec)
    latencies: list[float] = []

    def on_change(change: Change) -> None:
        if change.op is Op.UPSERT and change.source is Source.REMOTE:
            now = time.time()
            latencies.extend(now - w for w in change.frame.get_column("written_at"))

    sink = hubkit.open_sink(Trade, "exec_id", store=url, policy=hubkit.Follow(interval=POLL))
    sink.subscribe(on_change)
    baseline = Baseline(url, spec.table)
    baseline.start()
    cmd = [sys.executable, __file__, "--writer", url, "--rate", str(args.rate)]
    cmd += ["--seconds", str(args.seconds), "--batch", str(args.batch)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wrote = float(done.stdout.split()[-1])
    deadline = time.monotonic() + 30
    while (len(latencies) < total or len(baseline.latencies) < total) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    baseline.stop.set()
    baseline.join()
    status = sink.status()
    sink.close()
    print(
        f"\n{label}: writer {total:,} trades in {wrote:.1f} s ({total / wrote:,.0f}/s), "
        f"{args.batch} per commit; followers poll every {POLL * 1000:.0f} ms"
    )
    print(f"{'follower':<38} {'trades':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    _, p99 = figures("hubkit Follow() sink (cache + events)", latencies)
    _, base99 = figures(
        f"baseline: {'sqlite3 rowid' if label == 'SQLite' else 'psycopg key'} poll",
        baseline.latencies,
    )
    print(f"status: behind writer {status.behind}")
    print(f"{label} p99 ratio hubkit / baseline: {p99 / base99:.2f}")
    print(f"{label} goal p99 <= 1000 ms: {'met' if p99 <= 1000 else 'NOT met'}")


def log_cost(commits: int, batch: int) -> None:
    """What the change log costs a writer: the same commits with and without it (SQLite)."""
    from hubkit.store import changelog, table

    def run(path: Path, start: int) -> float:
        with hubkit.Store(path) as store:
            trades = store.table(hubkit.reflect(Trade, "exec_id"))
            t0 = time.perf_counter()
            for first in range(start, start + commits * batch, batch):
                now = time.time()
                trades.upsert(
                    [
                        Trade(f"t{i:08d}", "BTCUSDT", 1.0, 0.001, datetime.now(UTC), now)
                        for i in range(first, first + batch)
                    ]
                )
            return (time.perf_counter() - t0) / commits * 1000

    record = changelog.record
    logged = unlogged = 0.0
    with tempfile.TemporaryDirectory(prefix="hubkit-follow-") as tmp:
        for round_ in range(2):  # alternate, to spread the machine's noise over both
            logged += run(Path(tmp) / "logged.db", round_ * commits * batch)
            table.changelog.record = lambda *args, **kwargs: None  # type: ignore[assignment]
            try:
                unlogged += run(Path(tmp) / "unlogged.db", round_ * commits * batch)
            finally:
                table.changelog.record = record  # type: ignore[assignment]
    print(
        f"writer cost of the change log, {2 * commits} commits of {batch} trades: "
        f"{logged / 2:.2f} ms per commit logged, {unlogged / 2:.2f} ms unlogged "
        f"(ratio {logged / unlogged:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.writer, args.rate, args.seconds, args.batch)
        return
    if args.backend in ("sqlite", "both"):
        log_cost(500, args.batch)
        with tempfile.TemporaryDirectory(prefix="hubkit-follow-") as tmp:
            follow(str(Path(tmp) / "shared.db"), args, "SQLite")
    if args.backend in ("postgresql", "both"):
        from hubkit.testing.postgres import EmbeddedPostgres

        with EmbeddedPostgres() as server:
            follow(server.create_database("follow_latency"), args, "PostgreSQL")


if __name__ == "__main__":
    main()
