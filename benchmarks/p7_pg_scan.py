"""P7 on PostgreSQL: a time-range point query and a whole-table aggregation through scans.

Usage: ``python benchmarks/p7_pg_scan.py [--rows N] [--repeat R]`` (default 2,000,000
trades, 200 point queries).

One process starts an embedded PostgreSQL server (``hubkit.testing.postgres``) and writes
``N`` trades (16 symbols, one every 3 ms) through ``hubkit.Store`` with an index on
(symbol, time) (not timed). Then:

- one symbol over one second (a different second each repeat, the same for every method;
  medians, methods in rotating order): the hand-written SQL on an ADBC cursor (the
  baseline: ``execute`` + ``fetch_arrow_table`` + ``pl.from_arrow``),
  ``TableStore.query({"symbol": s}, start=t0, end=t1)`` and
  ``TableStore.scan().filter(symbol == s & time.is_between(t0, t1)).collect()``;
- per-symbol VWAP over the whole table, each method in a fresh child process for its peak
  RSS: ``scan()`` with ``collect(engine="streaming")`` vs ``read_all()`` then the same
  group-by.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl
from _data import Trade, trade_frame
from p7_big_tables import VWAP, peak_rss_mib, rotating_medians

import hubkit
from hubkit import pgbulk
from hubkit.testing.postgres import EmbeddedPostgres

SPEC = hubkit.reflect(Trade, key="id")


def child(method: str, uri: str) -> None:
    """Run one VWAP method and print its seconds and peak RSS (MiB) as JSON."""
    import adbc_driver_postgresql.dbapi  # noqa: F401  (imported before the baseline RSS)

    with hubkit.Store(uri) as store:
        table = store.table(SPEC)
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        if method == "scan":
            out = table.scan().group_by("symbol").agg(VWAP).collect(engine="streaming")
        else:
            out = table.read_all().group_by("symbol").agg(VWAP)
        seconds = time.perf_counter() - started
    result = {"seconds": seconds, "rss_before": rss_before, "peak": peak_rss_mib()}
    print(json.dumps({**result, "vwap": out.sort("symbol").rows()}))


def vwap_in_child(method: str, uri: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, "--uri", uri],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def point_queries(pg: EmbeddedPostgres, frame: pl.DataFrame, repeat: int) -> dict[str, float]:
    first, last = frame.get_column("time").min(), frame.get_column("time").max()
    assert first is not None and last is not None
    span = int((last - first).total_seconds()) - 1  # type: ignore[operator]
    rng = random.Random(7)
    windows = []
    for _ in range(repeat):
        t0 = first + timedelta(seconds=rng.randrange(max(span, 1)))  # type: ignore[operator]
        windows.append((t0, t0 + timedelta(seconds=1)))
    symbol = "BTCUSDT"
    conn = pgbulk.connect(pg.url)
    cur = conn.cursor()
    with hubkit.Store(pg.uri) as store:
        table = store.table(SPEC)
        lazy = table.scan()
        sql_text = f"SELECT * FROM {SPEC.table} WHERE symbol = $1 AND time >= $2 AND time < $3"

        def sql(w: tuple[object, object]) -> pl.DataFrame:
            cur.execute(sql_text, (symbol, w[0], w[1]))
            out = pl.from_arrow(cur.fetch_arrow_table())
            assert isinstance(out, pl.DataFrame)
            return out

        def query(w: tuple[object, object]) -> pl.DataFrame:
            return table.query({"symbol": symbol}, start=w[0], end=w[1])

        def scan(w: tuple[object, object]) -> pl.DataFrame:
            return lazy.filter(
                (pl.col("symbol") == symbol) & pl.col("time").is_between(w[0], w[1], "left")
            ).collect()

        methods = {"sql": sql, "query": query, "scan": scan}
        answers = {name: f(windows[0]).height for name, f in methods.items()}
        assert len(set(answers.values())) == 1, answers
        figures = rotating_medians(methods, windows)
        figures["rows"] = statistics.mean(sql(w).height for w in windows)
    cur.close()
    conn.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--child", choices=["scan", "read_all"])
    parser.add_argument("--uri")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.uri)
        return
    frame = trade_frame(args.rows)
    with EmbeddedPostgres() as pg:
        with hubkit.Store(pg.uri) as store:
            store.table(SPEC, indexes=[("symbol", "time")]).upsert(frame)
        print(f"{args.rows:,} trades on PostgreSQL ({pg.uri})")
        p = point_queries(pg, frame, args.repeat)
        print(
            f"one symbol, one second ({p['rows']:,.0f} rows): SQL {p['sql']:.2f} ms, "
            f"query {p['query']:.2f} ms ({p['query'] / p['sql']:.2f}x), "
            f"scan {p['scan']:.2f} ms ({p['scan'] / p['sql']:.2f}x)"
        )
        runs = {m: vwap_in_child(m, pg.uri) for m in ("scan", "read_all")}
        same = all(
            a[0] == b[0] and abs(a[1] - b[1]) <= 1e-9 * abs(b[1])
            for a, b in zip(runs["scan"]["vwap"], runs["read_all"]["vwap"], strict=True)  # type: ignore[call-overload]
        )
        for method, r in runs.items():
            print(
                f"VWAP via {method}: {r['seconds']:.2f} s, peak RSS {r['peak']:,.0f} MiB "
                f"(+{r['peak'] - r['rss_before']:,.0f})"  # type: ignore[operator]
            )
        print(f"same VWAP: {same}")


if __name__ == "__main__":
    main()
