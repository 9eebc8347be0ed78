"""The catalogue's freshness rule with a user-built dataset (no network involved)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import hubkit.catalog as catalog_module
from hubkit._api import aload, load
from hubkit.bybit.datasets import default_catalog
from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.errors import OfflineError, ProtocolError, StaleDataWarning, TransportError


@dataclass
class Reading:
    station: str
    value: float


class FakeRemote:
    """Counts syncs; fails with ``error`` when set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self.value = 1.0

    async def sync(self, request: SyncRequest) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        station = request.params.get("station", "a")
        await request.upsert([Reading(station, self.value)])


def make_catalog(remote: FakeRemote, stale_after: timedelta = timedelta(hours=1)) -> Catalog:
    return Catalog(
        [
            Dataset(
                "readings",
                Reading,
                "station",
                remote.sync,
                stale_after=stale_after,
                offline_hint="Start the fake remote.",
            )
        ]
    )


def test_fresh_data_comes_from_the_store(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote)
    db = tmp_path / "h.db"
    first = load("readings", catalog=cat, store=db, station="a")
    assert first.to_dicts() == [{"station": "a", "value": 1.0}]
    remote.value = 2.0
    second = cat.load("readings", store=db, station="a")
    assert remote.calls == 1
    assert second.to_dicts() == first.to_dicts()


def test_freshness_is_per_parameter_set(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote)
    db = tmp_path / "h.db"
    load("readings", catalog=cat, store=db, station="a")
    df = load("readings", catalog=cat, store=db, station="b")
    assert remote.calls == 2
    assert df["station"].to_list() == ["b"]


def test_stale_data_is_synced_again(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote, stale_after=timedelta(0))
    db = tmp_path / "h.db"
    load("readings", catalog=cat, store=db, station="a")
    remote.value = 3.0
    df = load("readings", catalog=cat, store=db, station="a")
    assert remote.calls == 2
    assert df["value"].to_list() == [3.0]


def test_freshness_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "h.db"
    load("readings", catalog=make_catalog(FakeRemote()), store=db, station="a")
    fresh_remote = FakeRemote()  # a new process would build a new catalog
    load("readings", catalog=make_catalog(fresh_remote), store=db, station="a")
    assert fresh_remote.calls == 0


def test_offline_with_data_warns_with_age(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote, stale_after=timedelta(0))
    db = tmp_path / "h.db"
    load("readings", catalog=cat, store=db, station="a")
    remote.error = TransportError("connection refused")
    with pytest.warns(StaleDataWarning, match=r"could not be synced.*1 stored rows, \d+ s old"):
        df = load("readings", catalog=cat, store=db, station="a")
    assert df.height == 1


def test_offline_without_data_raises(tmp_path: Path) -> None:
    remote = FakeRemote()
    remote.error = TransportError("connection refused")
    with pytest.raises(OfflineError, match="Start the fake remote") as info:
        load("readings", catalog=make_catalog(remote), store=tmp_path / "h.db")
    assert isinstance(info.value.__cause__, TransportError)


def test_permanent_errors_are_not_hidden(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote, stale_after=timedelta(0))
    db = tmp_path / "h.db"
    load("readings", catalog=cat, store=db)
    remote.error = ProtocolError("params error", code=10001, temporary=False)
    with pytest.raises(ProtocolError, match="params error"):
        load("readings", catalog=cat, store=db)


def test_default_store_is_under_hubkit_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    load("readings", catalog=make_catalog(FakeRemote()))
    assert (tmp_path / "hubkit.db").exists()


def test_aload_awaits_without_blocking_the_caller_loop(tmp_path: Path) -> None:
    remote = FakeRemote()
    cat = make_catalog(remote)

    async def main() -> pl.DataFrame:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        df = await aload("readings", catalog=cat, store=tmp_path / "h.db", station="z")
        task.cancel()
        assert ticks > 0
        return df

    df = asyncio.run(main())
    assert df["station"].to_list() == ["z"]


def test_catalog_is_a_user_collection() -> None:
    remote = FakeRemote()
    cat = make_catalog(remote)
    assert "readings" in cat
    assert list(cat) == ["readings"]
    with pytest.raises(ValueError, match="already"):
        cat.add(cat["readings"])
    with pytest.raises(KeyError, match="known: readings"):
        cat["nope"]
    one, two = default_catalog(), default_catalog()
    assert one is not two
    assert one.names() == ["instruments", "klines", "tickers", "trades"]
    one.remove("klines")
    assert "klines" in two  # no shared registry


def test_params_key_is_stable() -> None:
    key = catalog_module._params_key
    assert key({"b": 1, "a": "x"}) == key({"a": "x", "b": 1})
