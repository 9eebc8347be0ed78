"""P1: upsert N ByBit-like trades into SQLite, hubkit vs stdlib ``sqlite3`` in one process.

Usage: ``python benchmarks/p1_store_upsert.py [--rows N]`` (default 1,000,000).

Both sides write the same rows into the same table definition (hubkit creates its table; the
baseline copies its DDL into a second file), with WAL and ``synchronous=NORMAL``, in one
``BEGIN IMMEDIATE`` transaction per pass:

- baseline: ``sqlite3.executemany`` of an ``INSERT ... ON CONFLICT DO UPDATE`` over
  prebuilt row tuples (building the tuples is not timed);
- hubkit: ``TableStore.upsert(frame)`` on a Polars frame, validation and conversion included.

Pass 1 inserts N new keys into an empty table, pass 2 upserts the same N keys again (every
row replaced). The last line is the ratio of hubkit's rows/s to the baseline's over both
passes; the target is >= 1.5.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import Trade, trade_frame, trade_tuples

import hubkit


def _baseline_pass(conn: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> float:
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n: int = args.rows

    t0 = time.perf_counter()
    frame = trade_frame(n)
    rows = trade_tuples(frame)
    print(f"data: {n:,} trades generated in {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory(prefix="hubkit-p1-") as tmp:
        spec = hubkit.reflect(Trade, key="id")
        with hubkit.Store(Path(tmp) / "hubkit.db") as store:
            table = store.table(spec)  # creates the table; imports the ADBC driver
            ddl = (
                sqlite3.connect(Path(tmp) / "hubkit.db")
                .execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (spec.table,)
                )
                .fetchone()[0]
            )

            base = sqlite3.connect(Path(tmp) / "baseline.db", isolation_level=None)
            base.execute("PRAGMA journal_mode = WAL")
            base.execute("PRAGMA synchronous = NORMAL")
            base.execute(ddl)
            names = list(spec.names)
            others = [c for c in names if c not in spec.key]
            upsert = (
                f"INSERT INTO {spec.table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in others)
            )

            times: dict[str, list[float]] = {"stdlib": [], "hubkit": []}
            for label in ("insert new keys", "replace existing keys"):
                b = _baseline_pass(base, upsert, rows)
                t1 = time.perf_counter()
                table.upsert(frame)
                h = time.perf_counter() - t1
                times["stdlib"].append(b)
                times["hubkit"].append(h)
                print(
                    f"{label:>22}: stdlib executemany {n / b:>10,.0f} rows/s ({b:.2f} s)   "
                    f"hubkit upsert {n / h:>10,.0f} rows/s ({h:.2f} s)"
                )
            base.close()
            assert table.count() == n, "hubkit stored a different number of rows"

    total_b, total_h = sum(times["stdlib"]), sum(times["hubkit"])
    print(
        f"{'both passes':>22}: stdlib {2 * n / total_b:,.0f} rows/s   "
        f"hubkit {2 * n / total_h:,.0f} rows/s"
    )
    print(f"P1 ratio hubkit/stdlib sqlite3 executemany upsert: {total_b / total_h:.2f}x")


if __name__ == "__main__":
    main()
