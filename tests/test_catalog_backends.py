"""``Catalog.load`` and the store inventory on both store backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.store import Store, TableStore, store_inventory


@dataclass
class Fill:
    id: str
    at: datetime
    day: date
    price: Decimal
    maker: bool


class Fills:
    """A dataset whose syncs and store reads are counted."""

    def __init__(self) -> None:
        self.syncs = 0
        self.reads = 0
        self.dataset = Dataset(
            "fills", Fill, "id", self.sync, stale_after=timedelta(hours=1), read=self.read
        )

    async def sync(self, request: SyncRequest) -> None:
        self.syncs += 1
        at = datetime(2024, 3, 1, 12, tzinfo=UTC)
        await request.upsert([Fill("f1", at, at.date(), Decimal("0.10"), True)])

    def read(self, table: TableStore, params: Any) -> pl.DataFrame:
        self.reads += 1
        return table.query(order_by="id")


def test_load_syncs_once_and_reads_what_others_wrote(store_url: str) -> None:
    fills = Fills()
    catalog = Catalog([fills.dataset])
    first = catalog.load("fills", store=store_url)
    assert fills.syncs == 1
    assert first.to_dicts() == [
        {
            "id": "f1",
            "at": datetime(2024, 3, 1, 12, tzinfo=UTC),
            "day": date(2024, 3, 1),
            "price": "0.1",
            "maker": True,
        }
    ]
    # another writer of the same store (a collector, another notebook)
    with Store(store_url) as other:
        at = datetime(2024, 3, 2, tzinfo=UTC)
        other.table(fills.dataset.spec()).upsert([Fill("f2", at, at.date(), Decimal(5), False)])
    again = catalog.load("fills", store=store_url)
    assert fills.syncs == 1  # still fresh: read from the store, not synced
    assert again["id"].to_list() == ["f1", "f2"]
    assert again.schema == first.schema
    assert again.row(1, named=True)["price"] == "5"
    found = store_inventory(store_url)
    assert [(t.name, t.rows) for t in found] == [("fill", 2)]
    assert found.table("fill").last_sync is not None
