"""P6: a repeated ``hubkit.load("instruments")`` in one process, against the store read itself.

Run: ``python benchmarks/p6_warm_load.py [--runs 50]``. A simulator on 127.0.0.1 stands in
for ByBit; ``HUBKIT_HOME`` is a temporary folder. The first ``load`` syncs (not timed); then,
while the dataset is fresh, ``--runs`` more ``load`` calls are timed one by one, alternating
with reads of the same rows straight from the store (one ``Store`` kept open, the same query
``load`` answers with). Prints both medians (and the slowest load) and the ratio; the goal is
a warm ``load`` of at most 5 ms median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--goal-ms", type=float, default=5.0)
    args = parser.parse_args()

    import hubkit
    from hubkit.bybit.datasets import default_catalog
    from hubkit.bybit.presets import INSTRUMENT_TABLE
    from hubkit.testing.bybit import BybitSimulator

    with tempfile.TemporaryDirectory() as home, BybitSimulator() as sim:
        os.environ["HUBKIT_HOME"] = home
        os.environ["HUBKIT_BYBIT_REST_URL"] = sim.rest_url
        first = hubkit.load("instruments")  # the sync: not timed
        dataset = default_catalog()["instruments"]
        store = hubkit.Store(Path(home) / "hubkit.db")
        table = store.table(dataset.spec(), name=INSTRUMENT_TABLE)
        loads: list[float] = []
        reads: list[float] = []
        try:
            for _ in range(args.runs):
                started = time.perf_counter()
                frame = hubkit.load("instruments")
                loads.append(time.perf_counter() - started)
                started = time.perf_counter()
                rows = table.query(None, order_by=list(dataset.spec().key))
                reads.append(time.perf_counter() - started)
        finally:
            store.close()
        assert frame.equals(first) and rows.height == first.height, "not the same rows"
    load_ms = statistics.median(loads) * 1000
    read_ms = statistics.median(reads) * 1000
    print(f"rows: {first.height}")
    print(f"warm hubkit.load('instruments'): {load_ms:.2f} ms median, {max(loads) * 1000:.2f} max")
    print(f"the same rows read from the store: {read_ms:.2f} ms median")
    print(f"ratio load / store read: {load_ms / read_ms:.2f} (goal: load <= {args.goal_ms:g} ms)")
    return 0 if load_ms <= args.goal_ms else 1


if __name__ == "__main__":
    sys.exit(main())
