"""Idempotency keys on pushes: stable per outbox entry, across retries and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hubkit.entity import EntitySpec
from hubkit.errors import TransportError
from hubkit.policies import PushAfterWrite
from hubkit.sink import Sink, open_sink
from hubkit.testing import InMemoryConnection
from hubkit.types import OutboxEntry
from hubkit.writes import idempotency_key, takes_idempotency_key

TIMEOUT = 10.0
FAST = timedelta(milliseconds=10)


@dataclass
class Item:
    id: str
    name: str


def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (polling a condition, bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


def _entry(id_: int, created: datetime) -> OutboxEntry:
    return OutboxEntry(id=id_, op="create", key=("a",), payload={}, before=None, created_at=created)


def test_the_key_names_the_sink_the_entry_and_its_creation_time() -> None:
    created = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert idempotency_key("items", _entry(7, created)) == "items:7:1704164645678901"
    # the same entry read again gives the same key; another id or time another key
    assert idempotency_key("items", _entry(7, created)) == idempotency_key(
        "items", _entry(7, created)
    )
    assert idempotency_key("items", _entry(8, created)) != idempotency_key(
        "items", _entry(7, created)
    )
    later = created + timedelta(microseconds=1)
    assert idempotency_key("items", _entry(7, later)) != idempotency_key(
        "items", _entry(7, created)
    )
    assert idempotency_key("other", _entry(7, created)) != idempotency_key(
        "items", _entry(7, created)
    )


def test_which_verbs_take_the_key() -> None:
    async def keyword(spec: Any, row: Any, *, idempotency_key: str | None = None) -> None: ...

    async def positional(spec: Any, row: Any, idempotency_key: str | None = None) -> None: ...

    async def anything(spec: Any, row: Any, **options: Any) -> None: ...

    async def legacy(spec: Any, row: Any) -> None: ...

    assert takes_idempotency_key(keyword)
    assert takes_idempotency_key(positional)
    assert takes_idempotency_key(anything)
    assert not takes_idempotency_key(legacy)
    assert not takes_idempotency_key(print)  # a builtin with no readable signature


class Recording:
    """A connection that records every push try with its idempotency key, failing on demand."""

    def __init__(self, fail: int = 0) -> None:
        self.tries: list[tuple[str, tuple[Any, ...], str | None]] = []
        self.fail = fail
        self.connected = False

    async def connect(self) -> None:
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        return spec.to_frame([])

    def _try(self, op: str, key: tuple[Any, ...], idempotency_key: str | None) -> None:
        self.tries.append((op, key, idempotency_key))
        if self.fail:
            self.fail -= 1
            raise TransportError("the answer was lost")

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        self._try("create", (row["id"],), idempotency_key)
        return None

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        self._try("update", (row["id"],), idempotency_key)
        return None

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        self._try("remove", (key["id"],), idempotency_key)


class Legacy:
    """A user connection written before ``idempotency_key`` existed."""

    def __init__(self) -> None:
        self.rows: dict[str, Mapping[str, Any]] = {}
        self.connected = False

    async def connect(self) -> None:
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        return spec.to_frame(list(self.rows.values()))

    async def create(self, spec: EntitySpec, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        self.rows[row["id"]] = dict(row)
        return None

    async def update(self, spec: EntitySpec, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        self.rows[row["id"]] = dict(row)
        return None

    async def remove(self, spec: EntitySpec, key: Mapping[str, Any]) -> None:
        self.rows.pop(key["id"], None)


def _sink(db: Path, connection: Any, **policy: Any) -> Sink:
    policy.setdefault("retry_interval", FAST)
    return open_sink(
        Item, "id", store=db, name="items", connection=connection, policy=PushAfterWrite(**policy)
    )


def test_every_try_of_a_write_carries_its_own_key(tmp_path: Path) -> None:
    conn = Recording(fail=2)
    with _sink(tmp_path / "h.db", conn) as sink:
        sink.dao.upsert([Item("a", "one")]).wait(TIMEOUT)
        sink.dao.upsert([Item("a", "two")]).wait(TIMEOUT)
        sink.dao.delete("a").wait(TIMEOUT)
        sink.dao.upsert([Item("b", "one")]).wait(TIMEOUT)
    creates_a = [t for t in conn.tries if t[:2] == ("create", ("a",))]
    assert len(creates_a) == 3  # two lost answers, then the success: three tries, one key
    assert len({t[2] for t in creates_a}) == 1
    keys = [t[2] for t in conn.tries]
    assert all(k is not None and k.startswith("items:") for k in keys)
    assert len(set(keys)) == 4  # create a, update a, remove a, create b: four writes


def test_the_key_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    down = Recording(fail=10_000)
    with _sink(db, down, retry_interval=timedelta(hours=1)) as sink:
        sink.dao.upsert([Item("a", "one"), Item("b", "one")])
        eventually(lambda: len(down.tries) >= 1)
    first = down.tries[0]
    up = Recording()
    with _sink(db, up) as sink:
        eventually(lambda: sink.status().pending_pushes == 0 and len(up.tries) == 2)
    assert up.tries[0] == first  # the same write, pushed again after the restart, same key
    assert up.tries[1][2] != first[2]


def test_a_lost_answer_is_applied_once_by_a_remote_that_honours_keys(tmp_path: Path) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(1, ops=("create",), applied=True)  # applied remotely, the answer lost
    conn.fail_next(1, ops=("update",), applied=True)
    with _sink(tmp_path / "h.db", conn) as sink:
        sink.dao.upsert([Item("a", "one")]).wait(TIMEOUT)
        sink.dao.upsert([Item("a", "two")]).wait(TIMEOUT)
        assert sink.status().pending_pushes == 0
    assert conn.count("create") == 2 and conn.count("update") == 2  # each sent twice ...
    assert conn.pushes("a") == 2  # ... and applied once each
    assert conn.replays == 2
    assert conn.rows[("a",)] == {"id": "a", "name": "two"}


def test_a_connection_without_the_keyword_still_gets_every_write(tmp_path: Path) -> None:
    conn = Legacy()
    with _sink(tmp_path / "h.db", conn) as sink:
        sink.dao.upsert([Item("a", "one"), Item("b", "one")]).wait(TIMEOUT)
        sink.dao.delete("b").wait(TIMEOUT)
    assert conn.rows == {"a": {"id": "a", "name": "one"}}


def test_in_memory_keys_dedupe_only_repeats(tmp_path: Path) -> None:
    import asyncio

    from hubkit.entity import reflect

    spec = reflect(Item, "id")
    conn = InMemoryConnection(key="id")

    async def main() -> None:
        await conn.connect()
        await conn.create(spec, {"id": "a", "name": "one"}, idempotency_key="k1")
        again = await conn.create(spec, {"id": "a", "name": "changed"}, idempotency_key="k1")
        assert again == {"id": "a", "name": "one"}  # the first answer; nothing applied
        await conn.update(spec, {"id": "a", "name": "two"}, idempotency_key="k2")
        await conn.remove(spec, {"id": "a"}, idempotency_key="k3")
        await conn.remove(spec, {"id": "a"}, idempotency_key="k3")
        await conn.create(spec, {"id": "b", "name": "one"})  # no key: applied each time
        await conn.create(spec, {"id": "b", "name": "one"})

    asyncio.run(main())
    assert conn.calls == [
        ("create", ("a",)),
        ("update", ("a",)),
        ("remove", ("a",)),
        ("create", ("b",)),
        ("create", ("b",)),
    ]
    assert conn.replays == 2
    assert ("a",) not in conn.rows


def test_fail_next_applied_only_applies_writes(tmp_path: Path) -> None:
    import asyncio

    from hubkit.entity import reflect

    spec = reflect(Item, "id")
    conn = InMemoryConnection(key="id")

    async def main() -> None:
        await conn.connect()
        conn.fail_next(1, ops=("fetch",), applied=True)
        with pytest.raises(TransportError):
            await conn.fetch(spec)
        conn.fail_next(1, ops=("create",), applied=True)
        with pytest.raises(TransportError):
            await conn.create(spec, {"id": "a", "name": "one"})

    asyncio.run(main())
    assert conn.rows == {("a",): {"id": "a", "name": "one"}}
