"""The cost of the checks a store makes when it opens an existing SQLite file.

Run: ``python benchmarks/store_open_checks.py [--runs 30]``. Times ``Store(path)`` plus its
first ``table(spec)`` (the moment hubkit checks the path, reads the file through a plain
connection before changing it, and adopts or refuses the table) on an existing file, and the
same with the pre-change read skipped (the baseline: what opening cost before the read was
added; the path checks are a few ``stat`` calls and stay in both). The two alternate in one
process; medians are printed, the last line is the ratio (checked / baseline).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hubkit


@dataclass
class Row:
    id: int
    name: str


def open_once(path: Path, *, probe: bool) -> float:
    spec = hubkit.reflect(Row, key="id")
    start = time.perf_counter()
    store = hubkit.Store(path)
    if not probe:
        store._probed = True  # the baseline: skip the read before the first change
    store.table(spec)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.db"
        with hubkit.Store(path) as store:
            store.table(hubkit.reflect(Row, key="id")).upsert([Row(i, "x") for i in range(1000)])
        open_once(path, probe=True)  # warm imports and the file cache
        checked: list[float] = []
        baseline: list[float] = []
        for _ in range(args.runs):
            checked.append(open_once(path, probe=True))
            baseline.append(open_once(path, probe=False))
    c, b = statistics.median(checked), statistics.median(baseline)
    print(f"open + first table, checked:  {c * 1000:.2f} ms (median of {args.runs})")
    print(f"open + first table, baseline: {b * 1000:.2f} ms (median of {args.runs})")
    print(f"ratio checked/baseline: {c / b:.2f}")


if __name__ == "__main__":
    main()
