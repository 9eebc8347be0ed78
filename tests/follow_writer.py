"""A writer process for the follower tests: commits trades to a store, as a collector would.

    python follow_writer.py DB store|sink upsert FIRST COUNT BATCH
    python follow_writer.py DB store|sink delete FIRST COUNT BATCH

``store`` writes through a plain ``Store``/``TableStore``, ``sink`` through a sink's DAO
(no connection, no policy). ``upsert`` writes trades FIRST .. FIRST+COUNT-1 in batches of
BATCH (each batch after the first also rewrites the price of the previous batch's first
trade, a row committed before); ``delete`` deletes them in batches. Prints ``done`` when finished.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import hubkit
from hubkit.store import Store


@dataclass
class Trade:
    exec_id: str
    symbol: str
    price: Decimal
    size: float
    time: datetime


def trade(i: int, *, version: int = 0) -> Trade:
    return Trade(
        exec_id=f"t{i:06d}",
        symbol="BTCUSDT",
        price=Decimal(f"{60000 + i}.{version}"),
        size=0.001 * (i % 7 + 1),
        time=datetime.now(UTC),
    )


def main(argv: list[str]) -> None:
    db, how, op, first, count, batch = argv[0], argv[1], argv[2], *map(int, argv[3:6])
    ids = list(range(first, first + count))
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    writes = [
        [*map(trade, chunk), *([trade(chunk[0] - batch, version=1)] if n else [])]
        for n, chunk in enumerate(batches)
    ]
    deletes = [[f"t{i:06d}" for i in chunk] for chunk in batches]
    if how == "sink":
        sink = hubkit.open_sink(Trade, "exec_id", store=db)
        try:
            for rows, keys in zip(writes, deletes, strict=True):
                sink.dao.upsert(rows) if op == "upsert" else sink.dao.delete(keys)
        finally:
            sink.close()
    else:
        with Store(db) as store:
            table = store.table(hubkit.reflect(Trade, "exec_id"))
            for rows, keys in zip(writes, deletes, strict=True):
                table.upsert(rows) if op == "upsert" else table.delete(keys)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
