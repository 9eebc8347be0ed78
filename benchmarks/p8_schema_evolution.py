"""P8: what reopening a store after the dataclass changed costs, by kind of change.

Run: ``python benchmarks/p8_schema_evolution.py [--rows 200000 1000000]``. For each size, a
fresh SQLite file gets a trades table of that many rows (``_data.trade_frame``), then, in
one process, each step is timed on its own copy of the file:

- reopen with the same dataclass (the baseline);
- reopen with a new Optional field and a new defaulted field (``ALTER TABLE ADD COLUMN``:
  should cost about the baseline whatever the size);
- reopen with a field made Optional (NOT NULL dropped: SQLite copies the table), against
  the same copy written by hand with ``sqlite3`` (``CREATE TABLE`` + ``INSERT ... SELECT``,
  drop, rename) as its baseline;
- ``Store.migrate`` to ``price: Decimal`` (every row converted and rewritten).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import Side, Trade, trade_frame

import hubkit
from hubkit.store import Store


@dataclass
class TradeAdded:
    id: str
    symbol: str
    price: float
    size: float
    side: Side
    time: datetime
    block_trade: bool
    venue: str | None = None
    lots: int = 1


@dataclass
class TradeOptional:
    id: str
    symbol: str | None
    price: float
    size: float
    side: Side
    time: datetime
    block_trade: bool


@dataclass
class TradeDecimal:
    id: str
    symbol: str
    price: Decimal
    size: float
    side: Side
    time: datetime
    block_trade: bool


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def reopen(path: Path, cls: type) -> Callable[[], object]:
    def run() -> object:
        with Store(path) as s, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return s.table(hubkit.reflect(cls, "id", table="trade")).count()

    return run


def by_hand(path: Path) -> Callable[[], object]:
    """The NOT NULL removal written by hand: the copy SQLite requires, nothing else."""

    def run() -> object:
        with sqlite3.connect(path, isolation_level=None) as conn:
            names = [r[1] for r in conn.execute("PRAGMA table_info(trade)")]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE trade_new (id TEXT NOT NULL, symbol TEXT, price DOUBLE NOT NULL, "
                "size DOUBLE NOT NULL, side TEXT NOT NULL, time BIGINT NOT NULL, "
                "block_trade BOOLEAN NOT NULL, PRIMARY KEY (id))"
            )
            cols = ", ".join(names)
            conn.execute(f"INSERT INTO trade_new ({cols}) SELECT {cols} FROM trade")
            conn.execute("DROP TABLE trade")
            conn.execute("ALTER TABLE trade_new RENAME TO trade")
            conn.execute("COMMIT")
        return None

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'rows':>9} {'step':<34} {'seconds':>8} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            seed = Path(tmp) / f"seed_{n}.db"
            with Store(seed) as s:
                s.table(hubkit.reflect(Trade, "id", table="trade")).upsert(trade_frame(n))

            def fresh(label: str, seed: Path = seed) -> Path:
                path = Path(tmp) / f"{label}_{seed.stem}.db"
                shutil.copy(seed, path)
                return path

            base = timed(reopen(fresh("same"), Trade))
            added = timed(reopen(fresh("added"), TradeAdded))
            hand = timed(by_hand(fresh("hand")))
            relaxed = timed(reopen(fresh("optional"), TradeOptional))
            target = fresh("migrate")

            def migrate(path: Path = target) -> object:
                with Store(path) as s:
                    return s.migrate(hubkit.reflect(TradeDecimal, "id", table="trade"))

            migrated = timed(migrate)
            for step, seconds, against in (
                ("reopen, same dataclass", base, base),
                ("reopen, 2 fields added", added, base),
                ("NOT NULL dropped by hand (sqlite3)", hand, hand),
                ("reopen, a field made Optional", relaxed, hand),
                ("migrate float -> Decimal", migrated, hand),
            ):
                print(f"{n:>9} {step:<34} {seconds:>8.3f} {seconds / against:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
