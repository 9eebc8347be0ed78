"""Every change that touches rows and sync bookkeeping commits in one store transaction.

Each test makes the store fail at the statement that used to run as a second, separate
write, then shows that nothing of the change is visible (store, cache, events) and that
doing the change again completes it exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import polars as pl
import pytest

from hubkit.bridge import get_bridge
from hubkit.errors import Rejected, StoreError
from hubkit.sink import Sink, open_sink
from hubkit.testing.faults import deletes_from, fail_store_writes, touches
from hubkit.testing.memory import InMemoryConnection
from hubkit.types import Change, Op, OutboxEntry, Source, SyncContext

T = TypeVar("T")
TIMEOUT = 10.0


@dataclass
class Item:
    id: str
    name: str
    price: float


@dataclass(frozen=True)
class Hold:
    """A policy that does nothing by itself and hands its context to the test."""

    contexts: list[SyncContext] = field(default_factory=list, compare=False)
    pushes_local_writes: ClassVar[bool] = True

    async def start(self, ctx: SyncContext) -> None:
        self.contexts.append(ctx)

    async def run(self, ctx: SyncContext) -> None:
        await asyncio.Event().wait()

    async def sync_once(self, ctx: SyncContext) -> None:
        return None


class Changes:
    """The changes a sink emitted, collected on hubkit's loop thread."""

    def __init__(self) -> None:
        self.items: list[Change] = []
        self._cond = threading.Condition()

    def __call__(self, change: Change) -> None:
        with self._cond:
            self.items.append(change)
            self._cond.notify_all()

    def settle(self) -> list[Change]:
        """The changes so far, after the loop delivered everything already queued."""
        get_bridge().run(asyncio.sleep(0))
        with self._cond:
            return list(self.items)


def drain() -> None:
    """Let hubkit's loop deliver the changes already queued (before subscribing a recorder)."""
    get_bridge().run(asyncio.sleep(0))


def on_loop(coro: Coroutine[Any, Any, T]) -> T:
    return get_bridge().run(coro, TIMEOUT)


def ids(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["id"].to_list())


@pytest.fixture
def held(store_url: str) -> Any:
    policy = Hold()
    conn = InMemoryConnection(key="id")
    sink = open_sink(Item, "id", store=store_url, connection=conn, policy=policy)
    try:
        yield sink, policy.contexts[0], conn
    finally:
        sink.close()


def _outbox(sink: Sink) -> list[OutboxEntry]:
    return sink.table.outbox_pending()


def test_remote_delete_and_its_cursor_commit_together(held: Any) -> None:
    sink, ctx, _ = held
    on_loop(
        ctx.apply_remote(pl.DataFrame({"id": ["a", "b"], "name": ["A", "B"], "price": [1.0, 2.0]}))
    )
    drain()
    changes = Changes()
    sink.subscribe(changes)
    gone = sink.spec.to_frame([Item("a", "A", 1.0)])
    with (
        fail_store_writes(sink.store, when=touches("hubkit_sync_state")) as fault,
        pytest.raises(StoreError),
    ):
        on_loop(ctx.apply_remote(gone, op=Op.DELETE, cursor="c-1"))
    assert fault.fired == 1
    assert ids(sink.table.read_all()) == ["a", "b"]
    assert sink.table.state().cursor is None
    assert ids(sink.frame()) == ["a", "b"]
    assert changes.settle() == []
    on_loop(ctx.apply_remote(gone, op=Op.DELETE, cursor="c-1"))
    assert ids(sink.table.read_all()) == ["b"]
    assert sink.table.state().cursor == "c-1"
    assert ids(sink.frame()) == ["b"]
    deletes = [c for c in changes.settle() if c.op is Op.DELETE]
    assert [ids(c.frame) for c in deletes] == [["a"]]


def _conflict(sink: Sink, ctx: SyncContext) -> tuple[list[OutboxEntry], pl.DataFrame]:
    sink.dao.upsert([Item("k", "local", 1.0)])
    sink.dao.upsert([Item("k", "local again", 2.0)])
    entries = _outbox(sink)
    assert len(entries) == 2
    return entries, sink.spec.to_frame([Item("k", "resolved", 3.0)])


def test_a_superseded_write_that_the_remote_won_commits_at_once(held: Any) -> None:
    sink, ctx, _ = held
    entries, remote = _conflict(sink, ctx)
    drain()
    changes = Changes()
    sink.subscribe(changes)
    # the row is stored after the outbox entries are settled: fail the row write
    with (
        fail_store_writes(sink.store, when=lambda call: call.method == "upsert") as fault,
        pytest.raises(StoreError),
    ):
        on_loop(ctx.supersede(entries, remote, push=False, reason="remote won"))
    assert fault.fired == 1
    assert [e.id for e in _outbox(sink)] == [e.id for e in entries]
    assert sink.dao.get("k") == Item("k", "local again", 2.0)
    assert sink.table.get("k") == Item("k", "local again", 2.0)
    assert changes.settle() == []
    assert on_loop(ctx.supersede(entries, remote, push=False, reason="remote won"))
    assert _outbox(sink) == []
    assert sink.table.get("k") == Item("k", "resolved", 3.0)
    assert sink.dao.get("k") == Item("k", "resolved", 3.0)
    assert sink.status().pending_pushes == 0
    rejected = [c for c in changes.settle() if c.op is Op.REJECTED]
    assert len(rejected) == 1


def test_a_superseded_write_that_was_merged_commits_at_once(held: Any) -> None:
    sink, ctx, _ = held
    entries, merged = _conflict(sink, ctx)
    drain()
    changes = Changes()
    sink.subscribe(changes)
    # the old entries are removed after the merged row and its entry are stored
    with (
        fail_store_writes(sink.store, when=deletes_from("hubkit_outbox")) as fault,
        pytest.raises(StoreError),
    ):
        on_loop(ctx.supersede(entries, merged, push=True, reason="merged"))
    assert fault.fired == 1
    assert [e.id for e in _outbox(sink)] == [e.id for e in entries]
    assert sink.table.get("k") == Item("k", "local again", 2.0)
    assert sink.dao.get("k") == Item("k", "local again", 2.0)
    assert changes.settle() == []
    assert on_loop(ctx.supersede(entries, merged, push=True, reason="merged"))
    pending = _outbox(sink)
    assert len(pending) == 1 and pending[0].payload is not None
    assert pending[0].payload["name"] == "resolved"
    assert sink.table.get("k") == Item("k", "resolved", 3.0)
    assert sink.status().pending_pushes == 1
    assert len([c for c in changes.settle() if c.op is Op.UPSERT]) == 1


def test_an_acknowledged_push_and_its_echo_commit_together(held: Any) -> None:
    sink, ctx, _ = held
    sink.dao.upsert([Item("e", "sent", 1.0)])
    (entry,) = _outbox(sink)
    echo = {"id": "e", "name": "as the remote keeps it", "price": 1.0}
    drain()
    changes = Changes()
    sink.subscribe(changes)
    with (
        fail_store_writes(sink.store, when=lambda call: call.method == "upsert") as fault,
        pytest.raises(StoreError),
    ):
        on_loop(ctx.acknowledge(entry, echo))
    assert fault.fired == 1
    assert [e.id for e in _outbox(sink)] == [entry.id]
    assert sink.table.get("e") == Item("e", "sent", 1.0)
    assert sink.dao.get("e") == Item("e", "sent", 1.0)
    assert changes.settle() == []
    on_loop(ctx.acknowledge(entry, echo))
    assert _outbox(sink) == []
    assert sink.table.get("e") == Item("e", "as the remote keeps it", 1.0)
    assert sink.dao.get("e") == Item("e", "as the remote keeps it", 1.0)
    assert sink.status().pending_pushes == 0
    assert [c.op for c in changes.settle()] == [Op.UPSERT]


def test_a_rejection_cascade_commits_at_once(held: Any) -> None:
    sink, ctx, _ = held
    sink.dao.upsert([Item("r", "stored", 1.0)])
    on_loop(ctx.acknowledge(_outbox(sink)[0], None))
    sink.dao.upsert([Item("r", "first", 2.0)])
    sink.dao.upsert([Item("r", "second", 3.0)])
    first, second = _outbox(sink)
    drain()
    changes = Changes()
    sink.subscribe(changes)
    # the oldest entry is removed last: fail the statement that removes it
    when = deletes_from("hubkit_outbox")
    with (
        fail_store_writes(
            sink.store, when=lambda call: when(call) and first.id in call.binds()
        ) as fault,
        pytest.raises(StoreError),
    ):
        on_loop(ctx.reject(first, Rejected("no")))
    assert fault.fired == 1
    assert [e.id for e in _outbox(sink)] == [first.id, second.id]
    assert sink.table.get("r") == Item("r", "second", 3.0)
    assert sink.dao.get("r") == Item("r", "second", 3.0)
    assert changes.settle() == []
    on_loop(ctx.reject(first, Rejected("no")))
    assert _outbox(sink) == []
    assert sink.table.get("r") == Item("r", "stored", 1.0)
    assert sink.dao.get("r") == Item("r", "stored", 1.0)
    assert sink.status().pending_pushes == 0
    assert [c.op for c in changes.settle()] == [Op.REJECTED, Op.REJECTED]


def test_the_store_applies_a_snapshot_with_the_deletes_of_vanished_keys(store_url: str) -> None:
    from hubkit.policies import PeriodicSync

    conn = InMemoryConnection(
        [{"id": "a", "name": "A", "price": 1.0}, {"id": "b", "name": "B", "price": 2.0}], key="id"
    )
    policy = PeriodicSync(interval=3600, snapshot=True)
    with open_sink(Item, "id", store=store_url, connection=conn, policy=policy) as sink:
        assert ids(sink.frame()) == ["a", "b"]
        drain()
        changes = Changes()
        sink.subscribe(changes)
        conn.delete("a")
        conn.put([{"id": "c", "name": "C", "price": 3.0}])
        with (
            fail_store_writes(sink.store, when=deletes_from("item")) as fault,
            pytest.raises(StoreError),
        ):
            sink.force_sync()
        assert fault.fired == 1
        assert ids(sink.table.read_all()) == ["a", "b"]
        assert ids(sink.frame()) == ["a", "b"]
        assert changes.settle() == []
        sink.force_sync()
        assert ids(sink.table.read_all()) == ["b", "c"]
        assert ids(sink.frame()) == ["b", "c"]
        seen = [(c.source, c.op, ids(c.frame)) for c in changes.settle()]
        assert seen == [
            (Source.REMOTE, Op.UPSERT, ["b", "c"]),
            (Source.REMOTE, Op.DELETE, ["a"]),
        ]
