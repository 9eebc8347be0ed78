"""The sink: lifecycle, DAO writes and reads, change events, errors, statuses, async use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import pytest

import hubkit
from hubkit.errors import BridgeError, ClosedError, SchemaError, SyncError
from hubkit.policies import PushAfterWrite, QueryOnInit
from hubkit.sink import Sink, aopen_sink, open_sink
from hubkit.testing.memory import InMemoryConnection
from hubkit.types import Change, Op, ScheduleStatus, Source, SyncContext, SyncStatus

TIMEOUT = 10.0


@dataclass
class Item:
    id: str
    name: str
    price: float
    updated: datetime | None = None


def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (polling a condition, bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


class Recorder:
    """Collects changes (or errors) from hubkit's loop thread; waits for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"expected {count} items, got {self.items!r}")
            return list(self.items)


def _items(*names: str, price: float = 1.0) -> list[Item]:
    return [Item(n, f"name {n}", price) for n in names]


@pytest.fixture
def db(store_url: str) -> str:
    """A new store, once on SQLite and once on PostgreSQL."""
    return store_url


# -- lifecycle -------------------------------------------------------------------------------


def test_open_creates_the_table_and_warms_the_cache_from_the_store(db: str) -> None:
    with open_sink(Item, "id", store=db) as first:
        first.dao.upsert(_items("a", "b", "c"))
    with open_sink(Item, "id", store=db) as sink:
        assert sink.cache is not None
        assert len(sink.cache) == 3  # warmed before open returned
        assert sorted(sink.frame()["id"].to_list()) == ["a", "b", "c"]
        assert sink.dao.count() == 3
        assert sink.status().rows == 3


def test_closed_sink_stops_its_tasks_and_refuses_use(db: str) -> None:
    conn = InMemoryConnection(key="id")
    sink = open_sink(Item, "id", store=db, connection=conn, policy=PushAfterWrite())
    task = sink._core.task
    assert task is not None and not task.done()
    assert conn.is_connected
    sink.close()
    assert task.done()
    assert not conn.is_connected
    assert sink.closed and sink.status().closed
    sink.close()  # idempotent
    with pytest.raises(ClosedError):
        sink.dao.upsert(_items("a"))
    with pytest.raises(ClosedError):
        sink.frame()
    with pytest.raises(ClosedError):
        sink.force_sync()
    with pytest.raises(ClosedError):
        sink.subscribe(print)
    assert "closed" in repr(sink)


def test_close_delivers_queued_changes_and_two_closes_agree(db: str) -> None:
    sink = open_sink(Item, "id", store=db)
    changes = Recorder()
    sink.subscribe(changes)
    sink.dao.upsert(_items("a"))
    closers = [threading.Thread(target=sink.close) for _ in range(2)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(TIMEOUT)
    assert sink.closed
    assert [c.op for c in changes.items] == [Op.UPSERT]  # delivered before the close ended
    with open_sink(Item, "id", store=db) as reopened:
        assert reopened.dao.count() == 1


def test_a_bad_entity_fails_at_open(db: str) -> None:
    class NotADataclass:
        id: str

    with pytest.raises(SchemaError):
        open_sink(NotADataclass, "id", store=db)
    with pytest.raises(SchemaError):
        open_sink(Item, "nope", store=db)


def test_open_failure_closes_what_was_opened(db: str) -> None:
    store = hubkit_store(db)
    try:
        conn = InMemoryConnection(key="id")
        conn.fail_connect(1)
        with pytest.raises(hubkit.TransportError):
            open_sink(Item, "id", store=store, connection=conn, policy=QueryOnInit())
        assert not conn.is_connected
        # a shared store stays open for its owner
        assert store.table(reflect_item()).count() == 0
    finally:
        store.close()


def hubkit_store(path: str) -> Any:
    from hubkit.store import Store

    return Store(path)


def reflect_item() -> Any:
    from hubkit.entity import reflect

    return reflect(Item, "id")


def test_a_shared_store_is_not_closed_by_the_sink(db: str) -> None:
    store = hubkit_store(db)
    try:
        with open_sink(Item, "id", store=store) as sink:
            sink.dao.upsert(_items("a"))
        assert store.table(reflect_item()).count() == 1
    finally:
        store.close()


# -- DAO -------------------------------------------------------------------------------------


def test_upsert_replaces_and_never_duplicates(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        sink.dao.upsert(_items("a", "b", price=1.0))
        sink.dao.upsert(_items("a", price=2.0))
        sink.dao.upsert(pl.DataFrame({"id": ["b"], "name": ["x"], "price": [3.0]}))
        assert sink.dao.count() == 2
        frame = sink.frame().sort("id")
        assert frame["id"].to_list() == ["a", "b"]
        assert frame["price"].to_list() == [2.0, 3.0]
        got = sink.dao.get("a")
        assert isinstance(got, Item) and got.price == 2.0
        stored = sink.dao.query({"id": "b"})
        assert stored["name"].to_list() == ["x"]


def test_a_single_entity_and_dicts_are_accepted(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        sink.dao.upsert(Item("a", "one", 1.0))
        sink.dao.upsert({"id": "b", "name": "two", "price": 2.0})
        assert sorted(sink.frame()["id"].to_list()) == ["a", "b"]


def test_delete_removes_from_store_and_cache(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        sink.dao.upsert(_items("a", "b", "c"))
        result = sink.dao.delete("a")
        assert result.frame["id"].to_list() == ["a"]
        sink.dao.delete(["b", "missing"])
        assert sink.dao.count() == 1
        assert sink.frame()["id"].to_list() == ["c"]
        assert sink.dao.get("a") is None
        assert sink.cache is not None and sink.cache.get("b") is None


def test_without_a_cache_reads_go_to_the_store(db: str) -> None:
    with open_sink(Item, "id", store=db, cache=None) as sink:
        assert sink.cache is None
        sink.dao.upsert(_items("a", "b"))
        assert sorted(sink.frame()["id"].to_list()) == ["a", "b"]
        assert sink.lazy().filter(pl.col("id") == "a").collect().height == 1
        assert sink.dao.get("b") == Item("b", "name b", 1.0)
        assert sink.status().rows == 2


def test_a_stale_cache_is_refilled_from_the_store(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        sink.dao.upsert(_items("a"))
        # another writer (a scheduled job) adds a row behind the sink's back
        sink.table.upsert(_items("z"))
        assert sink.cache is not None
        sink.cache.invalidate()
        assert sorted(sink.frame()["id"].to_list()) == ["a", "z"]


def test_a_bad_value_stores_nothing(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        with pytest.raises(hubkit.ValidationError):
            sink.dao.upsert([{"id": "a", "name": "ok", "price": 1.0}, {"id": "b", "price": 2.0}])
        assert sink.dao.count() == 0
        assert sink.frame().height == 0


# -- change events ---------------------------------------------------------------------------


def test_local_change_events_for_upsert_and_delete(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        changes = Recorder()
        sink.subscribe(changes)
        sink.dao.upsert(_items("a", "b"))
        sink.dao.delete("a")
        first, second = changes.wait_for(2)
        assert isinstance(first, Change) and isinstance(second, Change)
        assert (first.source, first.op) == (Source.LOCAL, Op.UPSERT)
        assert sorted(first.frame["id"].to_list()) == ["a", "b"]
        assert first.frame.columns == ["id", "name", "price", "updated"]
        assert (second.source, second.op) == (Source.LOCAL, Op.DELETE)
        assert second.frame["id"].to_list() == ["a"]
        assert changes.threads == {"hubkit-loop"}


def test_deleting_nothing_emits_nothing(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        changes = Recorder()
        sink.subscribe(changes)
        sink.dao.delete("missing")
        sink.dao.upsert(_items("a"))
        (only,) = changes.wait_for(1)
        assert only.op is Op.UPSERT


def test_a_failing_handler_goes_to_the_error_handler_and_the_sink_keeps_running(
    db: str,
) -> None:
    with open_sink(Item, "id", store=db) as sink:
        errors = Recorder()
        sink.set_error_handler(errors)

        def broken(change: Change) -> None:
            raise ValueError("boom")

        changes = Recorder()
        sink.subscribe(broken)
        sink.subscribe(changes)
        sink.dao.upsert(_items("a"))
        sink.dao.upsert(_items("b"))
        (error, _) = errors.wait_for(2)
        assert isinstance(error, SyncError)
        assert isinstance(error.__cause__, ValueError)
        assert "boom" in str(error)
        assert len(changes.wait_for(2)) == 2  # the other handler got both
        assert sink.status().last_error is not None and "boom" in sink.status().last_error


def test_the_default_error_handler_logs_a_warning(db: str) -> None:
    records = Recorder()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records(record)

    # a handler on the sink's own logger: immune to how other code configured its parents
    logger = logging.getLogger("hubkit.sink")
    capture = Capture(logging.WARNING)
    level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.WARNING)
    try:
        with open_sink(Item, "id", store=db) as sink:

            def broken(change: Change) -> None:
                raise ValueError("logged")

            sink.subscribe(broken)
            sink.dao.upsert(_items("a"))
            (record,) = records.wait_for(1)
        assert record.levelno == logging.WARNING and "logged" in record.getMessage()
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


def test_an_async_handler_runs_on_the_loop(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        seen = Recorder()

        async def handler(change: Change) -> None:
            await asyncio.sleep(0)
            seen(change.op)

        sink.subscribe(handler)
        sink.dao.upsert(_items("a"))
        assert seen.wait_for(1) == [Op.UPSERT]


def test_closing_a_subscription_stops_its_events(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        stopped, running = Recorder(), Recorder()
        with sink.subscribe(stopped) as subscription:
            sink.subscribe(running)
            sink.dao.upsert(_items("a"))
            running.wait_for(1)
        assert subscription.closed
        subscription.close()  # harmless twice
        sink.dao.upsert(_items("b"))
        running.wait_for(2)
        assert len(stopped.items) == 1


# -- statuses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """A policy whose sync_once waits for a test's signal (no inheritance needed)."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def run(self, ctx: SyncContext) -> None:
        await asyncio.Event().wait()

    async def sync_once(self, ctx: SyncContext) -> None:
        self.entered.set()
        await asyncio.to_thread(self.release.wait, TIMEOUT)
        ctx.set_status(SyncStatus.FULL_SYNC)


def test_schedule_sync_is_scheduled_until_the_sync_ran(db: str) -> None:
    gate = Gate()
    with open_sink(Item, "id", store=db, connection=InMemoryConnection(), policy=gate) as sink:
        assert sink.sync_status is SyncStatus.OUT_OF_SYNC
        assert sink.schedule_status is ScheduleStatus.NOT_SCHEDULED
        sink.schedule_sync()
        assert sink.schedule_status is ScheduleStatus.SCHEDULED
        assert gate.entered.wait(TIMEOUT)
        assert sink.status().schedule_status is ScheduleStatus.SCHEDULED
        gate.release.set()
        eventually(lambda: sink.schedule_status is ScheduleStatus.NOT_SCHEDULED)
        assert sink.sync_status is SyncStatus.FULL_SYNC
        assert sink.status().last_sync is not None


def test_force_sync_raises_the_policy_error_as_a_hubkit_error(db: str) -> None:
    @dataclass(frozen=True)
    class Failing:
        async def run(self, ctx: SyncContext) -> None:
            return None

        async def sync_once(self, ctx: SyncContext) -> None:
            raise KeyError("no such thing")

    with open_sink(Item, "id", store=db, policy=Failing()) as sink:
        with pytest.raises(SyncError) as caught:
            sink.force_sync()
        assert isinstance(caught.value.__cause__, KeyError)
        errors = Recorder()
        sink.set_error_handler(errors)
        sink.schedule_sync()  # the same failure, reported instead of raised
        (error,) = errors.wait_for(1)
        assert isinstance(error, SyncError)


def test_a_close_ends_a_policy_that_goes_on_after_its_cancellation(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    stepped = threading.Event()

    @dataclass(frozen=True)
    class GoesOn:
        """Loses one cancellation, as a loop around asyncio.wait_for can on Python 3.11,
        then waits for the sync lock that the closing sink holds."""

        async def run(self, ctx: SyncContext) -> None:
            while True:
                async with ctx.exclusive():
                    stepped.set()
                with contextlib.suppress(asyncio.CancelledError):  # lost
                    await asyncio.sleep(3600)

        async def sync_once(self, ctx: SyncContext) -> None:
            return None

    sink = open_sink(Item, "id", store=db, policy=GoesOn())
    assert stepped.wait(TIMEOUT)
    closer = threading.Thread(target=sink.close, daemon=True)
    closer.start()
    closer.join(TIMEOUT)
    assert not closer.is_alive(), "close() hung waiting for the policy"
    assert sink.closed
    assert "went on after being cancelled" in caplog.text


def test_force_sync_without_a_policy_fetches_everything(db: str) -> None:
    conn = InMemoryConnection([{"id": "r", "name": "remote", "price": 5.0}], key="id")
    with open_sink(Item, "id", store=db, connection=conn) as sink:
        assert sink.frame().height == 0
        sink.force_sync()
        assert sink.frame()["id"].to_list() == ["r"]
        assert sink.sync_status is SyncStatus.FULL_SYNC


def test_reconnect_is_counted_and_restarts_the_policy(db: str) -> None:
    conn = InMemoryConnection([{"id": "r", "name": "remote", "price": 5.0}], key="id")
    with open_sink(Item, "id", store=db, connection=conn, policy=QueryOnInit()) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        assert conn.count("fetch") == 1
        sink.reconnect()
        assert sink.status().reconnects == 1
        assert conn.connects == 2 and conn.disconnects == 1
        eventually(lambda: conn.count("fetch") == 2)  # QueryOnInit ran again
        assert sink.status().connected


def test_status_snapshot_and_reprs(db: str) -> None:
    with open_sink(Item, "id", store=db, name="items") as sink:
        sink.dao.upsert(_items("a"))
        status = sink.status()
        assert status.name == "items"
        assert status.rows == 1 and status.pending_pushes == 0
        assert not status.connected and not status.closed
        assert "items" in repr(sink)
        assert "items" in sink._repr_html_()


def test_blocking_calls_from_a_handler_raise_bridge_error(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        errors = Recorder()
        sink.set_error_handler(errors)
        sink.subscribe(lambda change: sink.force_sync())
        sink.dao.upsert(_items("a"))
        (error,) = errors.wait_for(1)
        assert isinstance(error, BridgeError)


def test_panel_shows_the_sink(db: str) -> None:
    with open_sink(Item, "id", store=db, name="items") as sink:
        sink.dao.upsert(_items("a"))
        panel = sink.panel(widget=False)
        try:
            assert [s.name for s in panel.statuses] == ["items"]
            assert "items" in repr(panel)
        finally:
            panel.close()


# -- write results ---------------------------------------------------------------------------


def test_a_local_only_write_is_settled_at_once(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        result = sink.dao.upsert(_items("a"))
        assert result.done() and result.pushed and result.pushes == 0
        result.wait(0)
        assert "pushed" in repr(result)


# -- async use -------------------------------------------------------------------------------


def test_async_with_and_async_twins(db: str) -> None:
    async def main() -> list[str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        async with aopen_sink(Item, "id", store=db) as sink:
            assert isinstance(sink, Sink)
            changes = Recorder()
            sink.subscribe(changes)
            result = await sink.dao.aupsert(_items("a", "b"))
            await result
            await sink.dao.adelete("b")
            assert await sink.dao.acount() == 1
            assert await sink.dao.aget("a") == Item("a", "name a", 1.0)
            assert (await sink.dao.aquery(limit=1)).height == 1
            await sink.aforce_sync()
            await sink.areconnect()
            await asyncio.to_thread(changes.wait_for, 2)
        assert sink.closed
        beat.cancel()
        assert ticks > 0  # the caller's loop kept running
        return [c.op.value for c in changes.items]

    assert asyncio.run(main()) == ["upsert", "delete"]


def test_a_sink_opened_blocking_works_with_async_with(db: str) -> None:
    async def main() -> int:
        sink = await aopen_sink(Item, "id", store=db)
        async with sink:
            await sink.dao.aupsert(_items("a"))
            return sink.frame().height

    assert asyncio.run(main()) == 1


def test_concurrent_writers_from_threads(db: str) -> None:
    with open_sink(Item, "id", store=db) as sink:
        changes = Recorder()
        sink.subscribe(changes)

        def write(prefix: str) -> None:
            for i in range(20):
                sink.dao.upsert([Item(f"{prefix}{i}", prefix, float(i))])

        threads = [threading.Thread(target=write, args=(p,)) for p in "xyz"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        changes.wait_for(60)
        assert sink.dao.count() == 60
        assert sink.frame().height == 60
