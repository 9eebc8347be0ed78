"""A repeated load of a fresh dataset answers from memory, and only while nothing changed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import hubkit.catalog as catalog_module
from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.loadcache import LoadCache, file_token
from hubkit.store import Store, TableStore

pytestmark = pytest.mark.sqlite_only  # answers from memory while the SQLite file is unchanged


@dataclass
class Reading:
    station: str
    value: float


class Counted:
    """A dataset whose syncs and store reads are counted."""

    def __init__(self, stale_after: timedelta = timedelta(hours=1)) -> None:
        self.syncs = 0
        self.reads = 0
        self.value = 1.0
        self.dataset = Dataset(
            "readings",
            Reading,
            "station",
            self.sync,
            stale_after=stale_after,
            read=self.read,
        )

    async def sync(self, request: SyncRequest) -> None:
        self.syncs += 1
        await request.upsert([Reading("a", self.value)])

    def read(self, table: TableStore, params: Any) -> pl.DataFrame:
        self.reads += 1
        return table.query(order_by="station")


def test_a_repeated_load_reads_nothing_and_returns_a_copy(tmp_path: Path) -> None:
    counted = Counted()
    catalog = Catalog([counted.dataset])
    db = tmp_path / "h.db"
    first = catalog.load("readings", store=db)
    assert (counted.syncs, counted.reads) == (1, 1)
    second = catalog.load("readings", store=db)
    assert (counted.syncs, counted.reads) == (1, 1)  # no store read at all
    assert second.equals(first)
    second.insert_column(0, pl.Series("extra", [0]))  # the caller's copy is theirs
    third = catalog.load("readings", store=str(db))  # the same file, named as text
    assert third.columns == ["station", "value"] and counted.reads == 1


def test_a_write_to_the_file_since_is_seen(tmp_path: Path) -> None:
    counted = Counted()
    catalog = Catalog([counted.dataset])
    db = tmp_path / "h.db"
    catalog.load("readings", store=db)
    with Store(db) as other:  # another connection writes to the same table
        other.table(counted.dataset.spec()).upsert([Reading("b", 5.0)])
    again = catalog.load("readings", store=db)
    assert counted.syncs == 1 and counted.reads == 2
    assert again.to_dicts() == [
        {"station": "a", "value": 1.0},
        {"station": "b", "value": 5.0},
    ]


def test_a_dataset_past_its_freshness_is_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(stale_after=timedelta(minutes=5))
    catalog = Catalog([counted.dataset])
    db = tmp_path / "h.db"
    catalog.load("readings", store=db)
    later = catalog_module._utcnow() + timedelta(minutes=6)
    monkeypatch.setattr(catalog_module, "_utcnow", lambda: later)
    counted.value = 2.0
    df = catalog.load("readings", store=db)
    assert counted.syncs == 2
    assert df["value"].to_list() == [2.0]


def test_aload_shares_the_frames_of_load(tmp_path: Path) -> None:
    counted = Counted()
    catalog = Catalog([counted.dataset])
    db = tmp_path / "h.db"
    first = catalog.load("readings", store=db)
    second = asyncio.run(catalog.aload("readings", store=db))
    assert second.equals(first) and counted.reads == 1


def test_the_cache_keeps_the_newest_frames_and_checks_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    Path(path).write_bytes(b"one")
    cache = LoadCache(frames=2)
    now = catalog_module._utcnow()
    until = now + timedelta(days=1)
    for name in ("a", "b", "c"):
        cache.keep((name,), pl.DataFrame({"n": [name]}), until, file_token(path))
    assert cache.frames == 2 and cache.frame(("a",), path, now) is None
    kept = cache.frame(("c",), path, now)
    assert kept is not None and kept["n"].to_list() == ["c"]
    assert cache.frame(("c",), path, until) is None  # no longer fresh
    Path(path).write_bytes(b"three")  # the file changed: what was read from it is not kept
    assert cache.frame(("b",), path, now) is None


def test_the_store_of_a_file_stays_open_until_the_file_is_replaced(tmp_path: Path) -> None:
    counted = Counted()
    catalog = Catalog([counted.dataset])
    db = tmp_path / "h.db"
    catalog.load("readings", store=db)
    path = str(db.resolve())
    store = catalog.cache.store(path)
    assert catalog.cache.stores == 1 and catalog.cache.store(path) is store
    catalog.close()
    assert catalog.cache.stores == 0 and "closed" in repr(store)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)  # a new file at the same path
    df = catalog.load("readings", store=db)
    assert counted.syncs == 2 and df.height == 1
    assert catalog.cache.store(path) is not store


def test_only_plain_sqlite_files_are_kept(tmp_path: Path) -> None:
    store_file = catalog_module._store_file
    assert store_file(tmp_path / "a.db") == str((tmp_path / "a.db").resolve())
    assert store_file(f"sqlite:///{tmp_path}/a.db") == f"{tmp_path}/a.db"
    assert store_file(f"sqlite:///{tmp_path}/a.db?mode=ro") is None  # options a kept store lacks
    assert store_file("sqlite:///:memory:") is None
    assert store_file("postgresql://user@host/db") is None
