"""P8: opening a sink on a big trades table: the default (bounded) cache vs the whole table.

Usage::

    python benchmarks/p8_open_bounded.py [--sizes 100000,1000000] [--dir DIR] [--repeat 3]

For each size a trades table (``_data.Trade``, 5 symbols, one trade every 10 ms in time
order, 36-character text keys, indexed on (symbol, time)) is built in
``DIR/open_<rows>.db`` unless a complete one is there (the table is created by
``hubkit.Store``, then filled by ADBC ingest of Arrow chunks). Then, in this one process:

- ``open_sink(Trade, "id", store=path)`` with the default cache (a window of the newest
  100,000 rows by ``time``). The first open of a table without an index that starts with
  ``time`` builds one (once; shown on its own line); the following opens read 100,001 rows
  off it;
- ``open_sink(..., cache=FrameCache(max_rows=None))``, the whole-table cache: the baseline.

Per open: the median wall time of ``--repeat`` opens, the RSS the open sink holds (current
RSS with the sink open minus before opening) and the peak RSS growth during the open
(sampled every 2 ms), and the cached rows. All bounded opens run before the whole-table
ones, so that memory a whole-table load leaves to the allocator cannot hide a bounded
open's growth. Ends with the ratios whole-table / bounded per size and largest / smallest.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
BASE_US = 1_735_689_600_000_000  # 2025-01-01 UTC
SPACING_US = 10_000
CHUNK = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def stored_chunk(start: int, n: int) -> pl.DataFrame:
    """Trades ``start .. start+n`` as stored: time in µs, side as text, the flag as 0/1."""
    seq = pl.int_range(start, start + n, eager=True, dtype=pl.Int64).alias("seq")
    return pl.DataFrame(seq).select(
        (
            pl.col("seq").cast(pl.String).str.zfill(20)
            + "-"
            + pl.col("seq").hash(1).cast(pl.String).str.zfill(20).str.slice(0, 15)
        ).alias("id"),
        pl.col("seq")
        .hash(2)
        .mod(len(SYMBOLS))
        .replace_strict(list(range(len(SYMBOLS))), list(SYMBOLS), return_dtype=pl.String)
        .alias("symbol"),
        (10_000 + (pl.col("seq").hash(3) % 5_000_000) / 100).alias("price"),
        ((pl.col("seq").hash(4) % 100_000 + 1) / 1000).alias("size"),
        pl.when(pl.col("seq").hash(5) % 2 == 0)
        .then(pl.lit("Buy"))
        .otherwise(pl.lit("Sell"))
        .alias("side"),
        (BASE_US + pl.col("seq") * SPACING_US).alias("time"),
        (pl.col("seq").hash(6) % 50 == 0).cast(pl.Int64).alias("block_trade"),
    )


def sql(path: Path, statement: str) -> list[tuple[object, ...]]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute(statement).fetchall()


def build(path: Path, rows: int) -> float:
    """Create and fill ``path`` with ``rows`` trades unless it holds them; seconds spent."""
    import adbc_driver_sqlite.dbapi as dbapi
    from _data import Trade

    import hubkit

    spec = hubkit.reflect(Trade, key="id")
    if path.exists():
        try:
            if sql(path, f"SELECT max(rowid) FROM {spec.table}")[0][0] == rows:
                sql(path, f"DROP INDEX IF EXISTS ix_{spec.table}__time")
                return 0.0
        except Exception:
            pass
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    with hubkit.Store(path) as store:
        store.table(spec)
    with dbapi.connect(str(path), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("PRAGMA synchronous = OFF")
        cur.fetchall()
        cur.execute("BEGIN")
        for start in range(0, rows, CHUNK):
            chunk = stored_chunk(start, min(CHUNK, rows - start))
            cur.adbc_ingest(spec.table, chunk.to_arrow(), mode="append")
        cur.execute("COMMIT")
        cur.execute(f"CREATE INDEX ix_{spec.table}__symbol__time ON {spec.table} (symbol, time)")
    return time.perf_counter() - started


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler:
    """The highest RSS seen while it runs (a thread reading /proc every 2 ms)."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


@dataclass
class Opened:
    seconds: float
    held_mib: float
    peak_mib: float
    cached: int
    window: str


def open_figures(path: Path, whole: bool, repeat: int) -> Opened:
    from _data import Trade

    import hubkit

    times, held, peaks = [], [], []
    cached, window = 0, ""
    for _ in range(repeat):
        gc.collect()
        before = rss()
        options = {"cache": hubkit.FrameCache(max_rows=None)} if whole else {}  # else default
        with PeakSampler() as sampler:
            started = time.perf_counter()
            sink = hubkit.open_sink(Trade, "id", store=path, **options)
            times.append(time.perf_counter() - started)
        try:
            held.append((rss() - before) / 2**20)
            peaks.append((sampler.peak - before) / 2**20)
            assert sink.cache is not None
            cached, window = len(sink.cache), sink.cache.window
        finally:
            sink.close()
            del sink
    return Opened(statistics.median(times), max(held), max(peaks), cached, window)


def show(label: str, o: Opened) -> None:
    print(
        f"  {label:<34} open {o.seconds * 1e3:8.0f} ms   holds {o.held_mib:7.0f} MiB   "
        f"peak +{o.peak_mib:7.0f} MiB   cached {o.cached:>11,}  ({o.window})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "hubkit-p8")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for rows in sizes:
        path = args.dir / f"open_{rows}.db"
        built = build(path, rows)
        mib = path.stat().st_size / 2**20
        state = f"built in {built:.1f} s" if built else "reused"
        print(f"{rows:>11,} rows: {path} ({mib:,.0f} MiB, {state})")
        paths[rows] = path

    # One open of a small table first: imports and hubkit's loop start are not the figures.
    open_figures(paths[sizes[0]], True, 1)

    first: dict[int, Opened] = {}
    bounded: dict[int, Opened] = {}
    whole: dict[int, Opened] = {}
    print("default cache (newest 100,000 by time):")
    for rows in sizes:
        print(f" {rows:,} rows")
        first[rows] = open_figures(paths[rows], False, 1)
        show("first open (builds the time index)", first[rows])
        bounded[rows] = open_figures(paths[rows], False, args.repeat)
        show("open", bounded[rows])
    print("whole-table cache, FrameCache(max_rows=None) (baseline):")
    for rows in sizes:
        print(f" {rows:,} rows")
        whole[rows] = open_figures(paths[rows], True, args.repeat)
        show("open", whole[rows])

    print("ratios:")
    for rows in sizes:
        w, b = whole[rows], bounded[rows]
        print(
            f"  {rows:>11,} rows, whole / default: open time {w.seconds / b.seconds:6.1f}x, "
            f"held memory {w.held_mib / max(b.held_mib, 1):6.1f}x"
        )
    small, large = sizes[0], sizes[-1]
    if large != small:
        for label, figures in (("default", bounded), ("whole", whole)):
            a, b = figures[small], figures[large]
            print(
                f"  {label:<7} {large:,} / {small:,} rows: open time "
                f"{b.seconds / a.seconds:5.2f}x, held memory "
                f"{b.held_mib / max(a.held_mib, 1):5.2f}x"
            )


if __name__ == "__main__":
    main()
