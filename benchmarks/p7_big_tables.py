"""P7: big trades tables: point queries and whole-table aggregations, lazy scan vs SQL.

Usage::

    python benchmarks/p7_big_tables.py [--sizes 1000000,10000000] [--dir DIR]
        [--repeat 200] [--spacing-ms 10]

For each size a trades table (5 symbols, one trade every ``--spacing-ms`` in time order,
36-character text keys) is built in ``DIR/trades_<rows>.db`` unless a complete one is
there already: the table is created by ``hubkit.Store`` (the real schema), then filled by
ADBC ingest of Arrow chunks generated with Polars, then indexed on (symbol, time) as a
declared index would be (``hubkit.indexes``) and on time as the default cache's window is
(``hubkit.store.window``). Building 100M rows takes about 15 minutes and 17 GB of disk.

Then, per size:

- opening a sink with default options (``open_sink(Trade, "id", store=path)``, the default
  cache included), in a fresh child process: time and RSS growth;
- one symbol, one minute (a different minute each repeat, the same minutes for every
  method; medians), in this process: the hand-written SQL on an open ADBC connection
  (``execute`` + ``fetch_arrow_table`` + ``pl.from_arrow``, raw stored values: the
  baseline), ``sink.dao.query({"symbol": s}, start=t0, end=t1)`` and
  ``sink.scan().filter(...).collect()`` through the public API (a sink opened with
  ``cache=None`` and ``indexes=[("symbol", "time")]``; both decode to the entity's types),
  the scan timed twice: with its filter built inside the timing, and built beforehand;
- per-symbol VWAP over the whole table, each method in a fresh child process for its peak
  RSS: ``sink.scan()`` with ``collect(engine="streaming")`` vs ``pl.read_database_uri`` of
  the whole table (``SELECT *``, ADBC) then the same group-by. The latter is skipped when
  it would not fit in ``--memory-mib`` (default: 80% of the memory available), as at 100M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
BASE = datetime(2025, 1, 1, tzinfo=UTC)
CHUNK = 1_000_000
VWAP = ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap")


# -- building -------------------------------------------------------------------------------


def trades_chunk(start: int, n: int, spacing_us: int) -> pl.DataFrame:
    """Rows ``start .. start+n`` as stored: time in µs, side as text, the flag as 0/1."""
    seq = pl.int_range(start, start + n, eager=True, dtype=pl.Int64).alias("seq")
    base_us = int(BASE.timestamp()) * 1_000_000
    return pl.DataFrame(seq).select(
        # In key order (fast appends), 36 characters like ByBit's trade ids.
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
        (base_us + pl.col("seq") * spacing_us).alias("time"),
        (pl.col("seq").hash(6) % 50 == 0).cast(pl.Int64).alias("block_trade"),
    )


def rows_in(path: Path, table: str) -> int:
    import adbc_driver_sqlite.dbapi as dbapi

    if not path.exists():
        return -1
    with dbapi.connect(str(path)) as conn, conn.cursor() as cur:
        try:
            cur.execute(f"SELECT max(rowid) FROM {table}")
            (n,) = cur.fetchone()
        except dbapi.Error:
            return -1
    return int(n or 0)


def build(path: Path, rows: int, spacing_us: int) -> float:
    """Create and fill ``path`` with ``rows`` trades unless it holds them; seconds spent."""
    import adbc_driver_sqlite.dbapi as dbapi
    from _data import Trade
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex

    import hubkit
    from hubkit.indexes import missing_indexes, table_indexes

    spec = hubkit.reflect(Trade, key="id")
    if rows_in(path, spec.table) == rows:
        return 0.0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    with hubkit.Store(path) as store:
        table = store.table(spec).table
    with dbapi.connect(str(path), autocommit=True) as conn, conn.cursor() as cur:
        for pragma in ("synchronous = OFF", "cache_size = -1000000"):
            cur.execute(f"PRAGMA {pragma}")
            cur.fetchall()
        cur.execute("BEGIN")
        for start in range(0, rows, CHUNK):
            chunk = trades_chunk(start, min(CHUNK, rows - start), spacing_us)
            cur.adbc_ingest(spec.table, chunk.to_arrow(), mode="append")
            print(f"  {start + chunk.height:,} rows", end="\r", flush=True)
        cur.execute("COMMIT")
        for ix in missing_indexes(table_indexes(table, [("symbol", "time")], key=spec.key), []):
            cur.execute(str(CreateIndex(ix).compile(dialect=sqlite_dialect.dialect())))
    window_index(path)
    return time.perf_counter() - started


def window_index(path: Path) -> float:
    """Give the table the index on ``time`` that a sink's first open with the default cache
    gives a table it creates (``hubkit.store.window``); seconds spent (0 when present).

    A table filled by an older hubkit gets it on its first such open, once: measured here
    apart from the open, whose figure is then every later open's."""
    from _data import Trade

    import hubkit
    from hubkit.store.window import ensure_window_index

    spec = hubkit.reflect(Trade, key="id")
    started = time.perf_counter()
    with hubkit.Store(path) as store:
        made = ensure_window_index(store.table(spec), "time")
    return time.perf_counter() - started if made else 0.0


# -- point queries ----------------------------------------------------------------------------


def rotating_medians(
    methods: dict[str, Callable[[Any], object]], inputs: list[Any]
) -> dict[str, float]:
    """Median milliseconds of each method over ``inputs``. Every input runs every method,
    in a rotating order, so bursts of load on a shared machine hit all methods alike."""
    times: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for i, value in enumerate(inputs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            started = time.perf_counter()
            methods[name](value)
            times[name].append((time.perf_counter() - started) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


@dataclass
class PointFigures:
    rows_answered: float
    sql_ms: float
    dao_ms: float
    scan_ms: float
    scan_ready_ms: float


def point_queries(path: Path, rows: int, spacing_us: int, repeat: int) -> PointFigures:
    """Medians of one symbol over one minute: hand-written SQL, ``dao.query``, ``scan()``."""
    import random

    import adbc_driver_sqlite.dbapi as dbapi
    from _data import Trade

    import hubkit

    span_minutes = rows * spacing_us // 60_000_000
    rng = random.Random(7)
    windows = []
    for _ in range(repeat):
        t0 = BASE + timedelta(minutes=rng.randrange(max(span_minutes - 1, 1)))
        windows.append((t0, t0 + timedelta(minutes=1)))
    symbol = "BTCUSDT"
    table_name = hubkit.reflect(Trade, key="id").table

    conn = dbapi.connect(str(path))
    cur = conn.cursor()
    # The public API; the sink's cache plays no part in dao.query or scan().
    sink = hubkit.open_sink(Trade, "id", store=path, cache=None, indexes=[("symbol", "time")])
    try:

        def sql(window: tuple[datetime, datetime]) -> pl.DataFrame:
            lo, hi = (int(t.timestamp()) * 1_000_000 for t in window)
            cur.execute(
                f"SELECT * FROM {table_name} WHERE symbol = ? AND time >= ? AND time < ?",
                (symbol, lo, hi),
            )
            out = pl.from_arrow(cur.fetch_arrow_table())
            assert isinstance(out, pl.DataFrame)
            return out

        def dao(window: tuple[datetime, datetime]) -> pl.DataFrame:
            return sink.dao.query({"symbol": symbol}, start=window[0], end=window[1])

        lazy = sink.scan()

        def scan(window: tuple[datetime, datetime]) -> pl.DataFrame:
            return lazy.filter(
                (pl.col("symbol") == symbol) & pl.col("time").is_between(*window, "left")
            ).collect()

        # The same scan with its filter built before the clock starts: building an
        # expression with datetime literals is Polars' own cost (about 0.25 ms here), paid
        # before any source sees the query.
        ready = {
            w: (pl.col("symbol") == symbol) & pl.col("time").is_between(*w, "left") for w in windows
        }

        def scan_ready(window: tuple[datetime, datetime]) -> pl.DataFrame:
            return lazy.filter(ready[window]).collect()

        # Same answers (and warm caches and imports) before timing.
        answers = [f(windows[0]).height for f in (sql, dao, scan, scan_ready)]
        assert len(set(answers)) == 1, answers
        methods = {"sql": sql, "dao": dao, "scan": scan, "scan_ready": scan_ready}
        figures = rotating_medians(methods, windows)
        answered = statistics.mean(sql(w).height for w in windows)
        return PointFigures(
            answered, figures["sql"], figures["dao"], figures["scan"], figures["scan_ready"]
        )
    finally:
        cur.close()
        conn.close()
        sink.close()


# -- whole-table aggregation, one child process per method -----------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB) since it started its program."""
    # ru_maxrss carries the parent's peak across fork+exec on Linux; VmHWM does not.
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, path: Path) -> None:
    """Run one VWAP method and print its seconds and RSS (MiB) as JSON."""
    from _data import Trade

    import hubkit

    spec = hubkit.reflect(Trade, key="id")
    import adbc_driver_sqlite.dbapi  # noqa: F401  (imported before the baseline RSS)

    rss_before = peak_rss_mib()
    started = time.perf_counter()
    if method == "open":
        # Opening a sink with default options (the default cache included).
        with hubkit.open_sink(Trade, "id", store=path) as sink:
            seconds = time.perf_counter() - started
            peak = peak_rss_mib()
            print(json.dumps({"seconds": seconds, "rss_before": rss_before, "peak": peak}))
        return
    if method == "scan":
        with hubkit.open_sink(Trade, "id", store=path, cache=None) as sink:
            out = sink.scan().group_by("symbol").agg(VWAP).collect(engine="streaming")
    else:
        whole = pl.read_database_uri(
            f"SELECT * FROM {spec.table}", f"sqlite:///{path}", engine="adbc"
        )
        out = whole.group_by("symbol").agg(VWAP)
    seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_before": rss_before,
                "peak": peak,
                "vwap": out.sort("symbol").rows(),
            }
        )
    )


def vwap_in_child(method: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, "--db", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _available_mib() -> float:
    with suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 * 0.8
    return float("inf")


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "hubkit-p7")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--spacing-ms", type=float, default=10.0)
    parser.add_argument(
        "--memory-mib",
        type=float,
        default=_available_mib(),
        help="skip the whole-table read when it would need more (default: available now)",
    )
    parser.add_argument("--child", choices=["open", "scan", "read_database_uri"])
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.db)
        return
    spacing_us = int(args.spacing_ms * 1000)
    args.dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for rows in (int(s) for s in args.sizes.split(",")):
        path = args.dir / f"trades_{rows}.db"
        print(f"== {rows:,} rows: {path}")
        built = build(path, rows, spacing_us)
        mib = path.stat().st_size / 2**20
        print(
            f"  built in {built:.1f} s ({mib:,.0f} MiB)" if built else f"  reused ({mib:,.0f} MiB)"
        )
        indexed = window_index(path)
        if indexed:
            print(f"  index on time for the cache window, built once: {indexed:.1f} s")
        opened = vwap_in_child("open", path)
        open_cell = f"{opened['seconds']:.2f} s / +{opened['peak'] - opened['rss_before']:,.0f} MiB"
        print(f"  open_sink, default options: {open_cell} (time / RSS growth)")
        p = point_queries(path, rows, spacing_us, args.repeat)
        print(
            f"  one symbol, one minute ({p.rows_answered:,.0f} rows): SQL {p.sql_ms:.2f} ms, "
            f"dao.query {p.dao_ms:.2f} ms ({p.dao_ms / p.sql_ms:.2f}x), "
            f"sink.scan() {p.scan_ms:.2f} ms ({p.scan_ms / p.sql_ms:.2f}x); "
            f"with the filter built beforehand {p.scan_ready_ms:.2f} ms "
            f"({p.scan_ready_ms / p.sql_ms:.2f}x)"
        )
        scan = vwap_in_child("scan", path)
        scan_cell = f"{scan['seconds']:.2f} s / {scan['peak']:,.0f} MiB"
        print(
            f"  VWAP, whole table: scan+streaming {scan['seconds']:.2f} s, peak RSS "
            f"{scan['peak']:,.0f} MiB (+{scan['peak'] - scan['rss_before']:,.0f})"
        )
        # Reading the whole table takes ~1.9x the file's size in memory (2.9 GB at 10M).
        need_mib = 1.9 * mib
        if need_mib > args.memory_mib:
            full_cell = f"skipped (needs ~{need_mib / 1024:,.1f} GiB)"
            print(f"  read_database_uri+group_by: {full_cell}")
        else:
            full = vwap_in_child("read_database_uri", path)
            same = all(
                a[0] == b[0] and abs(a[1] - b[1]) <= 1e-9 * abs(b[1])
                for a, b in zip(scan["vwap"], full["vwap"], strict=True)
            )
            full_cell = f"{full['seconds']:.2f} s / {full['peak']:,.0f} MiB"
            print(
                f"  read_database_uri+group_by {full['seconds']:.2f} s, peak RSS "
                f"{full['peak']:,.0f} MiB (+{full['peak'] - full['rss_before']:,.0f}); "
                f"same result as the scan: {same}"
            )
        lines.append(
            f"| {rows:,} | {mib:,.0f} | {open_cell} | {p.rows_answered:,.0f} | {p.sql_ms:.2f} | "
            f"{p.dao_ms:.2f} ({p.dao_ms / p.sql_ms:.2f}x) | "
            f"{p.scan_ms:.2f} ({p.scan_ms / p.sql_ms:.2f}x) | "
            f"{p.scan_ready_ms:.2f} ({p.scan_ready_ms / p.sql_ms:.2f}x) | "
            f"{scan_cell} | {full_cell} |"
        )
    print()
    print(
        "| rows | file MiB | open_sink default (time / RSS growth) | 1 symbol 1 min rows | "
        "SQL ms | dao.query ms | sink.scan() ms | sink.scan(), filter built beforehand ms | "
        "VWAP sink.scan() streaming (time / peak RSS) "
        "| VWAP read_database_uri (time / peak RSS) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
