"""P3: FrameCache upserts and snapshot reads on a 1M-row trade table.

Run: ``python benchmarks/p3_cache.py`` (about a minute on 2 cores; ``--rows``/``--batches`` to
shrink it). Prints put throughput, per-batch p50/p99, the deduplicated snapshot read time with
pending chunks present and after compaction, and, as the last line, the throughput ratio of
FrameCache to the baseline strategy ``filter(~is_in(keys)) + concat`` measured in this same
process (machines are noisy between processes; compare ratios, see shared/BASELINES.md).
Goals: >= 100,000 rows/s and a deduplicated snapshot read <= 50 ms at 1M rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import polars as pl

from hubkit.cache import FrameCache

SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "symbol": pl.String,
        "price": pl.Float64,
        "size": pl.Float64,
        "side": pl.String,
        "time": pl.Int64,
        "block": pl.Boolean,
    }
)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]


def trade_ids(rng: random.Random, n: int) -> pl.Series:
    """``n`` random 36-character UUID-shaped text keys."""
    raw = rng.randbytes(16 * n)
    hexed = pl.Series([raw[i : i + 16] for i in range(0, 16 * n, 16)], dtype=pl.Binary)
    s = hexed.bin.encode("hex")
    return pl.select(
        pl.concat_str(
            [
                s.str.slice(0, 8),
                s.str.slice(8, 4),
                s.str.slice(12, 4),
                s.str.slice(16, 4),
                s.str.slice(20, 12),
            ],
            separator="-",
        ).alias("id")
    ).to_series()


def trades(rng: random.Random, ids: pl.Series, t0: int) -> pl.DataFrame:
    n = ids.len()
    return pl.DataFrame(
        {
            "id": ids,
            "symbol": rng.choices(SYMBOLS, k=n),
            "price": [rng.uniform(1, 100_000) for _ in range(n)],
            "size": [rng.uniform(0.001, 10) for _ in range(n)],
            "side": rng.choices(["Buy", "Sell"], k=n),
            "time": list(range(t0, t0 + n)),
            "block": [rng.random() < 0.05 for _ in range(n)],
        },
        schema=SCHEMA,
    )


def make_batches(
    rng: random.Random, known: list[str], count: int, size: int, t0: int
) -> list[pl.DataFrame]:
    """``count`` batches of ``size`` rows: half new keys, half updates of known keys."""
    batches = []
    new = size // 2
    for b in range(count):
        fresh = trade_ids(rng, new)
        ids = pl.Series("id", fresh.to_list() + rng.sample(known, size - new))
        batches.append(trades(rng, ids, t0 + b * size))
        known.extend(fresh.to_list())
    return batches


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--baseline-batches", type=int, default=50)
    parser.add_argument("--reads", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(20261127)

    table = trades(rng, trade_ids(rng, args.rows), 0)
    known = table.get_column("id").to_list()
    batches = make_batches(rng, known, args.batches, args.batch_size, args.rows)
    # Worst case for a read: pending rows just below the compaction threshold (1/64 of the
    # table), so the read itself has to fold them in.
    per_read = max(1, (args.rows // 64 - 1) // args.batch_size)
    read_batches = make_batches(rng, known, per_read * args.reads, args.batch_size, args.rows * 2)
    baseline_batches = batches[: args.baseline_batches]

    print(
        f"P3 FrameCache: {args.rows:,}-row trade table, {args.batches:,} batches x "
        f"{args.batch_size} rows (half new keys)"
    )
    cache = FrameCache(max_rows=None)  # the whole table: this measures a 1M-row cache
    cache.bind(("id",), SCHEMA)
    print(f"load: {timed(lambda: cache.load(table)) * 1e3:.1f} ms")

    costs = []
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        cache.put(batch)
        costs.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    written = args.batches * args.batch_size
    ours = written / elapsed
    print(f"put throughput: {ours:,.0f} rows/s (goal >= 100,000)")
    print(
        f"per-batch put: p50 {pct(costs, 0.5) * 1e3:.3f} ms, p99 {pct(costs, 0.99) * 1e3:.2f} ms,"
        f" max {max(costs) * 1e3:.1f} ms"
    )

    pending_now = cache.pending_rows
    first = timed(cache.frame)
    print(f"snapshot read after the put loop ({pending_now:,} pending rows): {first * 1e3:.1f} ms")
    reads, pendings = [], []
    for r in range(args.reads):
        for batch in read_batches[r * per_read : (r + 1) * per_read]:
            cache.put(batch)
        pendings.append(cache.pending_rows)
        reads.append(timed(cache.frame))
    snapshot = cache.frame()
    assert snapshot.height == len(cache) and snapshot.get_column("id").n_unique() == len(cache)
    print(
        f"deduplicated snapshot read, {min(pendings):,}-{max(pendings):,} pending rows, "
        f"{snapshot.height:,} rows: median {statistics.median(reads) * 1e3:.1f} ms, "
        f"max {max(reads) * 1e3:.1f} ms over {args.reads} (goal <= 50 ms)"
    )
    clones = [timed(cache.frame) for _ in range(100)]
    print(f"snapshot read after compaction: median {statistics.median(clones) * 1e6:.0f} us")

    probe = known[len(known) // 3]
    cache.put(batches[-1])
    pending_key = batches[-1].get_column("id")[0]
    pending_get = statistics.median(timed(lambda: cache.get(pending_key)) for _ in range(200))
    base_get = statistics.median(timed(lambda: cache.get(probe)) for _ in range(200))
    print(
        f"get(): pending key {pending_get * 1e6:.0f} us, base key {base_get * 1e6:.0f} us "
        "(after the lazy hash index is built)"
    )

    df = table
    base_costs = []
    start = time.perf_counter()
    for batch in baseline_batches:
        t = time.perf_counter()
        keys = batch.get_column("id").implode()
        df = pl.concat([df.filter(~pl.col("id").is_in(keys)), batch])
        base_costs.append(time.perf_counter() - t)
    base_elapsed = time.perf_counter() - start
    baseline = len(baseline_batches) * args.batch_size / base_elapsed
    print(
        f"baseline filter(~is_in)+concat every batch ({len(baseline_batches)} batches): "
        f"p50 {pct(base_costs, 0.5) * 1e3:.1f} ms, {baseline:,.0f} rows/s"
    )
    print(f"ratio FrameCache/baseline throughput: {ours / baseline:.1f}x")


if __name__ == "__main__":
    main()
