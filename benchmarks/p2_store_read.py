"""P2: read N stored trades into Polars, hubkit vs raw ADBC in one process.

Usage: ``python benchmarks/p2_store_read.py [--rows N] [--repeat R]`` (default 1,000,000
rows, 3 repeats).

The trades are written once with hubkit (not timed). Then, alternating, R times each:

- baseline: ``cursor.execute("SELECT * FROM trade")``, ``fetch_arrow_table()`` and
  ``pl.from_arrow`` on an open ADBC connection (booleans stay integers, times stay
  integers: no dtype work);
- hubkit: ``TableStore.read_all()``, which returns the entity schema (Boolean, UTC
  ``Datetime``, enum values as text) checked against ``spec.schema``.

Best-of-R times are compared. The last line is hubkit's rows/s over the baseline's; the
target is >= 0.8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl
from _data import Trade, trade_frame

import hubkit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n: int = args.rows

    frame = trade_frame(n)
    with tempfile.TemporaryDirectory(prefix="hubkit-p2-") as tmp:
        path = Path(tmp) / "hubkit.db"
        spec = hubkit.reflect(Trade, key="id")
        with hubkit.Store(path) as store:
            table = store.table(spec)
            table.upsert(frame)
            print(f"data: {table.count():,} trades stored")

            import adbc_driver_sqlite.dbapi as adbc

            conn = adbc.connect(str(path))
            cursor = conn.cursor()

            def baseline() -> pl.DataFrame:
                cursor.execute(f"SELECT * FROM {spec.table}")
                out = pl.from_arrow(cursor.fetch_arrow_table())
                assert isinstance(out, pl.DataFrame)
                return out

            best = {"adbc": float("inf"), "hubkit": float("inf")}
            for _ in range(args.repeat):
                for label, read in (("adbc", baseline), ("hubkit", table.read_all)):
                    t0 = time.perf_counter()
                    got = read()
                    best[label] = min(best[label], time.perf_counter() - t0)
                    assert got.height == n
                    if label == "hubkit":
                        assert got.schema == spec.schema
            cursor.close()
            conn.close()
            check = table.read_all().sort("id")
            assert check.equals(frame.sort("id")), "hubkit read back different rows"

    b, h = best["adbc"], best["hubkit"]
    print(f"raw ADBC fetch_arrow_table + pl.from_arrow: {n / b:>10,.0f} rows/s ({b:.3f} s)")
    print(f"hubkit TableStore.read_all:                 {n / h:>10,.0f} rows/s ({h:.3f} s)")
    print(f"P2 ratio hubkit/raw ADBC read: {b / h:.2f}x")


if __name__ == "__main__":
    main()
