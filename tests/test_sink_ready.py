"""A sink is ready when it is returned: opening waits (bounded) for the first sync of a policy
that syncs at start; an unreachable remote opens from the stored rows with a warning, or
raises when asked for a strict open. A live stream that has data does not say "out of sync"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hubkit.entity import EntitySpec
from hubkit.errors import StaleDataWarning, TransportError
from hubkit.policies import Bidirectional, PeriodicSync, QueryOnInit, WebSocketSubscription
from hubkit.sink import aopen_sink, open_sink
from hubkit.testing.memory import InMemoryConnection
from hubkit.types import SyncPolicy, SyncStatus

TIMEOUT = 10.0


@dataclass
class Item:
    id: str
    name: str


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"name {i}"} for i in ids]


def ids(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["id"].to_list())


def eventually(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


@pytest.mark.parametrize(
    "policy",
    [QueryOnInit(), PeriodicSync(interval=timedelta(hours=1)), Bidirectional(interval=3600)],
    ids=["QueryOnInit", "PeriodicSync", "Bidirectional"],
)
def test_open_returns_after_the_first_sync(policy: SyncPolicy, tmp_path: Path) -> None:
    conn = InMemoryConnection(rows("a", "b"), key="id")
    with open_sink(Item, "id", store=tmp_path / "r.db", connection=conn, policy=policy) as sink:
        assert ids(sink.frame()) == ["a", "b"]
        assert sink.sync_status is SyncStatus.FULL_SYNC
        assert sink.status().last_error is None
        assert "out_of_sync" not in repr(sink)


def test_awaited_open_returns_after_the_first_sync(tmp_path: Path) -> None:
    conn = InMemoryConnection(rows("a"), key="id")

    async def main() -> list[str]:
        async with aopen_sink(
            Item, "id", store=tmp_path / "r.db", connection=conn, policy=QueryOnInit()
        ) as sink:
            return ids(sink.frame())

    assert asyncio.run(main()) == ["a"]


def _stored(path: Path, *names: str) -> None:
    with open_sink(Item, "id", store=path) as sink:
        sink.dao.upsert(rows(*names))


def test_an_unreachable_remote_opens_from_the_stored_rows_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _stored(path, "kept")
    conn = InMemoryConnection(rows("remote"), key="id")
    conn.fail_next(1, ops=("fetch",))
    with pytest.warns(StaleDataWarning, match="1 stored rows.*injected transport failure"):
        sink = open_sink(Item, "id", store=path, connection=conn, policy=QueryOnInit())
    with sink:
        assert ids(sink.frame()) in (["kept"], ["kept", "remote"])  # the retry may have run
        assert "TransportError" in (sink.status().last_error or "")
        eventually(lambda: ids(sink.frame()) == ["kept", "remote"])  # it keeps retrying


def test_a_strict_open_raises_when_the_remote_cannot_be_reached(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _stored(path, "kept")
    conn = InMemoryConnection(rows("remote"), key="id")
    conn.fail_next(1, ops=("fetch",))
    with pytest.raises(TransportError, match="injected"):
        open_sink(Item, "id", store=path, connection=conn, policy=QueryOnInit(), strict=True)
    assert not conn.is_connected
    with open_sink(Item, "id", store=path) as again:  # nothing was lost
        assert ids(again.frame()) == ["kept"]


class Hanging(InMemoryConnection):
    """A remote that never answers a fetch."""

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_first_sync_that_takes_too_long_opens_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _stored(path, "kept")
    conn = Hanging(key="id")
    with pytest.warns(StaleDataWarning, match="did not finish within 0.1 s"):
        sink = open_sink(
            Item, "id", store=path, connection=conn, policy=QueryOnInit(), first_sync_timeout=0.1
        )
    assert ids(sink.frame()) == ["kept"]
    assert sink.sync_status is SyncStatus.OUT_OF_SYNC
    sink.close(timeout=0.1)


@dataclass
class Tick:
    id: str
    time: datetime


def ticks(*ids: str) -> list[dict[str, Any]]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    return [{"id": i, "time": base + timedelta(seconds=n)} for n, i in enumerate(ids)]


def test_a_live_stream_that_has_checked_the_remote_is_not_out_of_sync(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    conn = InMemoryConnection(key="id")
    policy = WebSocketSubscription(topics=["ticks"])
    with open_sink(Tick, "id", store=path, connection=conn, policy=policy) as sink:
        eventually(lambda: "ticks" in conn.subscriptions)
        conn.push_stream("ticks", ticks("a", "b"))
        eventually(lambda: ids(sink.frame()) == ["a", "b"])
        # the policy sets the status after the rows are committed (and cached): wait for it
        eventually(lambda: "out_of_sync" not in repr(sink))
    # reopened: the backfill at start finds nothing new, and the stream is live
    conn = InMemoryConnection(ticks("a", "b"), key="id")
    with open_sink(Tick, "id", store=path, connection=conn, policy=policy) as sink:
        eventually(lambda: conn.count("fetch") >= 1)
        eventually(lambda: sink.sync_status is SyncStatus.REMOTE_DATA_RECEIVED)
        assert "out_of_sync" not in repr(sink)
        assert "out of sync" not in str(sink.status())


def test_an_awaited_open_warns_or_raises_as_the_blocking_one(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    _stored(path, "kept")

    async def main(strict: bool) -> list[str]:
        conn = InMemoryConnection(rows("remote"), key="id")
        conn.fail_next(1, ops=("fetch",))
        async with aopen_sink(
            Item, "id", store=path, connection=conn, policy=QueryOnInit(), strict=strict
        ) as sink:
            return ids(sink.frame())

    with pytest.warns(StaleDataWarning, match="first sync failed"):
        assert "kept" in asyncio.run(main(strict=False))
    with pytest.raises(TransportError):
        asyncio.run(main(strict=True))
