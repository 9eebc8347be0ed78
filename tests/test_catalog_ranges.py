"""Range parameters of a user-built dataset: outside the freshness key; covered ranges read
the store without syncing (no network involved)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.store import TableStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Sample:
    id: int
    time: datetime
    value: float


class Remote:
    """Each sync brings ten more samples, one a minute, after those already stored."""

    def __init__(self) -> None:
        self.syncs = 0

    async def sync(self, request: SyncRequest) -> None:
        first = self.syncs * 10
        self.syncs += 1
        rows = [Sample(i, T0 + timedelta(minutes=i), float(i)) for i in range(first, first + 10)]
        await request.upsert(rows)


def read(table: TableStore, params: Mapping[str, Any]) -> pl.DataFrame:
    return table.query(start=params.get("start"), end=params.get("end"), order_by="id")


def covered(params: Mapping[str, Any], last_sync: datetime) -> bool:
    return params.get("end") is not None and params["end"] <= T0 + timedelta(minutes=10)


def catalog(remote: Remote, stale_after: timedelta, **options: Any) -> Catalog:
    dataset = Dataset(
        "samples", Sample, "id", remote.sync, stale_after=stale_after, read=read, **options
    )
    return Catalog([dataset])


def test_range_parameters_do_not_make_a_fresh_dataset_stale(tmp_path: Path) -> None:
    remote = Remote()
    cat = catalog(remote, timedelta(hours=1), range_params=("start", "end"))
    db = tmp_path / "s.db"
    assert cat.load("samples", store=db).height == 10
    part = cat.load(
        "samples", store=db, start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=5)
    )
    assert part.get_column("id").to_list() == [2, 3, 4]
    assert remote.syncs == 1
    cat.close()

    # Without range_params each range is a parameter set of its own, synced on first use.
    remote = Remote()
    cat = catalog(remote, timedelta(hours=1))
    cat.load("samples", store=tmp_path / "t.db")
    cat.load("samples", store=tmp_path / "t.db", start=T0)
    assert remote.syncs == 2
    cat.close()


def test_a_covered_range_is_read_without_syncing_even_when_stale(tmp_path: Path) -> None:
    remote = Remote()
    cat = catalog(remote, timedelta(0), range_params=("start", "end"), covered=covered)
    db = tmp_path / "s.db"
    cat.load("samples", store=db)
    early = cat.load("samples", store=db, end=T0 + timedelta(minutes=3))
    assert early.get_column("id").to_list() == [0, 1, 2]
    assert remote.syncs == 1
    later = cat.load("samples", store=db, start=T0 + timedelta(minutes=8))
    assert later.get_column("id").to_list() == list(range(8, 20))  # synced: ten more
    assert remote.syncs == 2
    cat.close()
