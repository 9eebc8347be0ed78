"""Sync policies: their pure decisions, and each one end to end in a sink with an
InMemoryConnection (real SQLite file, hubkit's loop, no network)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

import hubkit
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import ClosedError, Rejected, StaleDataWarning, TransportError
from hubkit.gapfill import (
    ALL,
    RecentRows,
    StreamPosition,
    plan_gap_fill,
    plan_partitioned_gap_fill,
    positions_from_cursor,
    positions_to_cursor,
    stream_position,
)
from hubkit.policies import (
    Bidirectional,
    PeriodicSync,
    PushAfterWrite,
    QueryOnInit,
    WebSocketSubscription,
    backoff_delay,
    local_wins,
    plan_pull,
    remote_wins,
)
from hubkit.sink import Sink, open_sink
from hubkit.testing.memory import InMemoryConnection
from hubkit.types import Change, Op, OutboxEntry, Source, SyncContext, SyncStatus

TIMEOUT = 10.0
FAST = timedelta(milliseconds=10)


@dataclass
class Item:
    id: str
    name: str
    price: float


@dataclass
class Trade:
    trade_id: str
    price: float
    time: datetime


ITEM: EntitySpec = reflect(Item, "id")
TRADE: EntitySpec = reflect(Trade, "trade_id")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


def trade(n: int, second: int | None = None) -> dict[str, Any]:
    return {"trade_id": f"t{n:03d}", "price": float(n), "time": at(n if second is None else second)}


def trades(*numbers: int) -> pl.DataFrame:
    return TRADE.to_frame([trade(n) for n in numbers])


def item(key: str, name: str = "x", price: float = 1.0) -> dict[str, Any]:
    return {"id": key, "name": name, "price": price}


def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (polling a condition, bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


class Recorder:
    """Collects changes or errors from hubkit's loop thread; waits for conditions on them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, value: Any) -> None:
        with self._cond:
            self.items.append(value)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                raise AssertionError(f"condition not met; have {self.items!r}")
            return list(self.items)

    def ops(self, op: Op) -> list[Change]:
        with self._cond:
            return [c for c in self.items if isinstance(c, Change) and c.op is op]


def ids(frame: pl.DataFrame, column: str = "id") -> list[Any]:
    return sorted(frame[column].to_list())


@pytest.fixture
def db(store_url: str) -> str:
    """A new store, once on SQLite and once on PostgreSQL."""
    return store_url


# -- pure decisions --------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_delay(0) == 0
    assert [backoff_delay(n, base=1, cap=5) for n in (1, 2, 3, 4, 10, 10_000)] == [
        1,
        2,
        4,
        5,
        5,
        5,
    ]


def test_recent_rows_drop_repeats_but_keep_changes() -> None:
    recent = RecentRows(("trade_id",), maxlen=3)
    assert recent.fresh(trades(1, 2)).height == 2
    assert recent.fresh(trades(1, 2)).height == 0  # the same rows again
    changed = TRADE.to_frame([{**trade(1), "price": 99.0}])
    assert recent.fresh(changed).height == 1  # same key, new content
    not_kept = recent.fresh(trades(3), remember=False)
    assert not_kept.height == 1 and recent.fresh(trades(3)).height == 1
    recent.fresh(trades(4, 5))
    assert len(recent) == 3  # bounded: the oldest keys are forgotten
    assert recent.fresh(trades(1)).height == 1
    within = TRADE.to_frame([trade(7), {**trade(7), "price": 1.5}])
    assert recent.fresh(within)["price"].to_list() == [1.5]  # last one per key wins


def test_stream_position_and_cursor_round_trip() -> None:
    position = stream_position(trades(3, 1, 2), key=("trade_id",), time_column="time")
    assert position == StreamPosition(key=("t003",), time=at(3))
    tied = TRADE.to_frame([trade(1, 5), trade(2, 5)])
    assert stream_position(tied, key=("trade_id",), time_column="time") == StreamPosition(
        key=("t002",), time=at(5)
    )
    assert stream_position(trades(), key=("trade_id",), time_column="time") is None
    assert stream_position(trades(4, 5), key=("trade_id",), time_column=None) == StreamPosition(
        key=("t005",), time=None
    )
    assert position is not None
    assert StreamPosition.from_cursor(position.to_cursor()) == position
    assert StreamPosition.from_cursor(None) is None
    assert StreamPosition.from_cursor("not json") is None
    assert StreamPosition.from_cursor('{"other": 1}') is None


def _plan(backfill: pl.DataFrame, position: StreamPosition | None, **kw: Any) -> Any:
    return plan_gap_fill(
        backfill,
        key=("trade_id",),
        time_column=kw.pop("time_column", "time"),
        position=position,
        down_since=kw.pop("down_since", at(10)),
        now=at(100),
        **kw,
    )


def test_gap_fill_covered_when_the_backfill_reaches_the_last_seen_row() -> None:
    seen = StreamPosition(key=("t005",), time=at(5))
    plan = _plan(trades(9, 4, 5, 6, 7), seen)
    assert plan.gap is None and plan.covered
    assert plan.rows["trade_id"].to_list() == ["t005", "t006", "t007", "t009"]  # >= last, sorted


def test_gap_fill_covered_by_key_without_a_time_column() -> None:
    seen = StreamPosition(key=("t005",), time=None)
    plan = _plan(trades(5, 6), seen, time_column=None)
    assert plan.gap is None
    assert _plan(trades(6, 7), seen, time_column=None).gap is not None


def test_gap_when_the_backfill_starts_after_the_last_seen_row() -> None:
    seen = StreamPosition(key=("t005",), time=at(5))
    plan = _plan(trades(8, 9), seen)
    assert not plan.covered and plan.gap is not None
    assert (plan.gap.start, plan.gap.end) == (at(5), at(8))
    assert plan.rows["trade_id"].to_list() == ["t008", "t009"]
    empty = _plan(trades(), seen)
    assert empty.gap is not None and (empty.gap.start, empty.gap.end) == (at(5), at(100))


def test_gap_fill_without_a_position_uses_the_outage_start() -> None:
    assert _plan(trades(9, 12), None, down_since=at(10)).gap is None
    plan = _plan(trades(12), None, down_since=at(10))
    assert plan.gap is not None and (plan.gap.start, plan.gap.end) == (at(10), at(12))


def test_a_complete_backfill_is_never_a_gap() -> None:
    seen = StreamPosition(key=("t005",), time=at(5))
    assert _plan(trades(8), seen, complete=True).gap is None
    assert _plan(trades(), seen, complete=True).gap is None


@dataclass
class SymbolTrade:
    trade_id: str
    symbol: str
    price: float
    time: datetime


SYMBOL_TRADE: EntitySpec = reflect(SymbolTrade, "trade_id")


def sym_trade(symbol: str, n: int) -> dict[str, Any]:
    return {"trade_id": f"{symbol}{n}", "symbol": symbol, "price": float(n), "time": at(n)}


def test_partitions_are_judged_each_against_its_own_position() -> None:
    positions = {
        "BTC": StreamPosition(key=("BTC5",), time=at(5)),
        "ETH": StreamPosition(key=("ETH3",), time=at(3)),
        "SOL": StreamPosition(key=("SOL1",), time=at(1)),
    }
    backfill = SYMBOL_TRADE.to_frame(
        [sym_trade("BTC", n) for n in (4, 5, 6, 9)] + [sym_trade("ETH", n) for n in (6, 8)]
    )
    plan = plan_partitioned_gap_fill(
        backfill,
        key=("trade_id",),
        time_column="time",
        partition="symbol",
        positions=positions,
        down_since=at(10),
        now=at(100),
    )
    assert sorted(plan.rows["trade_id"].to_list()) == ["BTC5", "BTC6", "BTC9", "ETH6", "ETH8"]
    eth, sol = plan.gaps
    assert (eth.start, eth.end) == (at(3), at(6)) and eth.reason.startswith("symbol=ETH")
    assert (sol.start, sol.end) == (at(1), at(100)) and sol.reason.startswith("symbol=SOL")
    assert positions_from_cursor(positions_to_cursor(positions)) == positions
    single = StreamPosition(key=("x",), time=at(1))
    assert positions_from_cursor(single.to_cursor()) == {ALL: single}
    assert positions_from_cursor("garbage") == {}


def _entry(
    n: int, key: str, before: Mapping[str, Any] | None, payload: Mapping[str, Any] | None
) -> OutboxEntry:
    return OutboxEntry(
        id=n,
        op="update" if before else "create",
        key=(key,),
        payload=payload,
        before=before,
        created_at=T0,
    )


def test_plan_pull_without_pending_writes_applies_everything() -> None:
    remote = ITEM.to_frame([item("a"), item("b")])
    plan = plan_pull(ITEM, remote, [], ITEM.to_frame([]))
    assert plan.apply.equals(remote) and not plan.remote_won and not plan.merged


def test_plan_pull_keeps_a_local_write_the_remote_did_not_touch() -> None:
    before, local = item("a", "old"), item("a", "mine")
    remote = ITEM.to_frame([before, item("b")])
    plan = plan_pull(ITEM, remote, [_entry(1, "a", before, local)], ITEM.to_frame([local]))
    assert plan.keep_local == (("a",),)
    assert ids(plan.apply) == ["b"]  # the stale remote "a" is not applied over the write


def test_plan_pull_conflicts_are_settled_by_the_resolver() -> None:
    before, local, theirs = item("a", "old"), item("a", "mine", 1.0), item("a", "theirs", 2.0)
    remote = ITEM.to_frame([theirs])
    pending = [_entry(1, "a", before, local)]
    local_frame = ITEM.to_frame([local])

    won = plan_pull(ITEM, remote, pending, local_frame, remote_wins)
    assert [c.resolved["name"] for c in won.remote_won] == ["theirs"]
    assert won.apply.height == 0

    kept = plan_pull(ITEM, remote, pending, local_frame, local_wins)
    assert kept.keep_local == (("a",),) and not kept.remote_won

    def merge(mine: Mapping[str, Any] | None, other: Mapping[str, Any]) -> Mapping[str, Any]:
        assert mine is not None
        return {**other, "name": mine["name"]}

    merged = plan_pull(ITEM, remote, pending, local_frame, merge)
    (conflict,) = merged.merged
    assert conflict.resolved == {"id": "a", "name": "mine", "price": 2.0}
    assert conflict.entries == tuple(pending)


def test_plan_pull_already_in_sync_is_no_conflict() -> None:
    local = item("a", "mine")
    plan = plan_pull(
        ITEM,
        ITEM.to_frame([local]),
        [_entry(1, "a", item("a", "old"), local)],
        ITEM.to_frame([local]),
    )
    assert plan.keep_local == (("a",),) and not plan.remote_won


# -- QueryOnInit and PeriodicSync ------------------------------------------------------------


def test_query_on_init_fetches_once_and_reports_remote_changes(db: str) -> None:
    conn = InMemoryConnection([item("a"), item("b")], key="id")
    with open_sink(Item, "id", store=db, connection=conn, policy=QueryOnInit()) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        assert ids(sink.frame()) == ["a", "b"]
        assert conn.count("fetch") == 1
        assert sink.status().last_sync is not None
        changes = Recorder()
        sink.subscribe(changes)
        conn.put([item("c")])
        sink.force_sync()
        (change,) = changes.wait(lambda items: len(items) >= 1)
        assert (change.source, change.op) == (Source.REMOTE, Op.UPSERT)
        assert ids(sink.frame()) == ["a", "b", "c"]


def test_query_on_init_retries_until_the_first_fetch_succeeds(db: str) -> None:
    conn = InMemoryConnection([item("a")], key="id")
    conn.fail_next(2, ops=("fetch",))
    errors = Recorder()
    policy = QueryOnInit(retry_interval=FAST)
    with pytest.warns(StaleDataWarning, match="first sync failed"):
        sink = open_sink(Item, "id", store=db, connection=conn, policy=policy)
    with sink:
        sink.set_error_handler(errors)
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        assert ids(sink.frame()) == ["a"]
        assert conn.count("fetch") == 3


def test_periodic_sync_pulls_every_interval_and_survives_errors(db: str) -> None:
    conn = InMemoryConnection([item("a")], key="id")
    policy = PeriodicSync(interval=FAST)
    errors = Recorder()
    with open_sink(Item, "id", store=db, connection=conn, policy=policy) as sink:
        sink.set_error_handler(errors)
        eventually(lambda: sink.frame().height == 1)
        conn.fail_next(1, ops=("fetch",))
        conn.put([item("b")])
        eventually(lambda: ids(sink.frame()) == ["a", "b"])
        errors.wait(lambda items: any(isinstance(e, TransportError) for e in items))
        conn.put([item("a", "renamed")])
        eventually(lambda: sink.dao.get("a") == Item("a", "renamed", 1.0))
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)


def test_periodic_sync_without_query_on_init_waits_an_interval(db: str) -> None:
    conn = InMemoryConnection([item("a")], key="id")
    policy = PeriodicSync(interval=timedelta(hours=1), query_on_init=False, params={"id": "a"})
    with open_sink(Item, "id", store=db, connection=conn, policy=policy) as sink:
        assert sink.frame().height == 0
        sink.force_sync()  # does not wait for the interval
        assert ids(sink.frame()) == ["a"]
        assert conn.count("fetch") == 1
    with pytest.raises(ValueError):
        PeriodicSync(interval=0)


# -- PushAfterWrite --------------------------------------------------------------------------


def _push_sink(db: str, conn: InMemoryConnection, **kw: Any) -> Sink:
    kw.setdefault("retry_interval", FAST)
    return open_sink(Item, "id", store=db, connection=conn, policy=PushAfterWrite(**kw))


def test_push_after_write_pushes_creates_updates_and_removes_in_order(db: str) -> None:
    conn = InMemoryConnection(key="id")
    with _push_sink(db, conn) as sink:
        sink.dao.upsert([item("a", "one")]).wait(TIMEOUT)
        assert conn.rows[("a",)]["name"] == "one"
        eventually(lambda: sink.sync_status is SyncStatus.LOCAL_DATA_PUSHED)
        sink.dao.upsert([item("a", "two")])
        result = sink.dao.delete("a")
        assert result.pushes == 1
        result.wait(TIMEOUT)
        assert conn.calls == [("create", ("a",)), ("update", ("a",)), ("remove", ("a",))]
        assert conn.rows == {}
        assert sink.status().pending_pushes == 0


def test_a_write_result_is_awaitable(db: str) -> None:
    conn = InMemoryConnection(key="id")

    async def main(sink: Sink) -> bool:
        result = await sink.dao.aupsert([item("a")])
        await result
        return result.pushed

    with _push_sink(db, conn) as sink:
        assert asyncio.run(main(sink))
        assert conn.pushes("a") == 1


def test_temporary_push_errors_are_retried(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(2, ops=("create",))
    errors = Recorder()
    with _push_sink(db, conn) as sink:
        sink.set_error_handler(errors)
        result = sink.dao.upsert([item("a")])
        result.wait(TIMEOUT)
        assert conn.count("create") == 3 and conn.pushes("a") == 1
        assert len([e for e in errors.items if isinstance(e, TransportError)]) == 2
        assert sink.table.outbox_count() == 0


def test_a_rejected_write_is_rolled_back_with_a_rejected_event(db: str) -> None:
    conn = InMemoryConnection(key="id")
    with _push_sink(db, conn) as sink:
        sink.dao.upsert([item("a", "original")]).wait(TIMEOUT)
        changes = Recorder()
        sink.subscribe(changes)
        conn.reject_key("a", "read-only instrument")
        result = sink.dao.upsert([item("a", "edited")])
        with pytest.raises(Rejected, match="read-only instrument"):
            result.wait(TIMEOUT)
        assert isinstance(result.exception(), Rejected) and not result.pushed
        changes.wait(lambda items: any(c.op is Op.REJECTED for c in items))
        (rejected,) = changes.ops(Op.REJECTED)
        assert rejected.reason is not None and "read-only instrument" in rejected.reason
        assert rejected.frame["name"].to_list() == ["original"]  # the rolled-back row
        assert sink.dao.get("a") == Item("a", "original", 1.0)
        assert sink.frame()["name"].to_list() == ["original"]
        assert conn.rows[("a",)]["name"] == "original"

        # a rejected create disappears locally
        conn.reject_key("new", "no")
        with pytest.raises(Rejected):
            sink.dao.upsert([item("new")]).wait(TIMEOUT)
        assert sink.dao.get("new") is None and sink.dao.count() == 1
        assert sink.status().pending_pushes == 0


def test_a_rejection_takes_later_writes_of_the_same_key_with_it(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(1000, ops=("update",))  # hold updates back while we queue two
    with _push_sink(db, conn, retry_interval=timedelta(hours=1)) as sink:
        sink.dao.upsert([item("a", "original")]).wait(TIMEOUT)
        first = sink.dao.upsert([item("a", "first")])
        second = sink.dao.upsert([item("a", "second")])
        eventually(lambda: sink.status().pending_pushes == 2)
        conn.clear_faults()
        conn.reject_key("a", "locked")
        sink.force_sync()
        for result in (first, second):
            with pytest.raises(Rejected):
                result.wait(TIMEOUT)
        assert sink.dao.get("a") == Item("a", "original", 1.0)
        assert sink.table.outbox_count() == 0


def test_max_attempts_turns_a_lasting_temporary_error_into_a_rejection(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(1000, ops=("create",))
    with _push_sink(db, conn, max_attempts=3) as sink:
        with pytest.raises(Rejected, match="gave up after 3 attempts"):
            sink.dao.upsert([item("a")]).wait(TIMEOUT)
        assert conn.count("create") == 3
        assert sink.dao.count() == 0
    with pytest.raises(ValueError):
        PushAfterWrite(max_attempts=0)


def test_the_outbox_survives_a_reopen_and_is_pushed_exactly_once(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(10_000, ops=("create",))
    sink = _push_sink(db, conn, retry_interval=timedelta(hours=1))
    result = sink.dao.upsert([item("a"), item("b")])
    eventually(lambda: conn.count("create") >= 1)
    assert sink.status().pending_pushes == 2
    sink.close(timeout=1.0)
    with pytest.raises(ClosedError, match="stays in the outbox"):
        result.wait(TIMEOUT)
    assert conn.rows == {}

    conn.clear_faults()
    with _push_sink(db, conn) as reopened:
        assert ids(reopened.frame()) == ["a", "b"]
        eventually(lambda: conn.pushes("a") == 1 and conn.pushes("b") == 1)
        eventually(lambda: reopened.status().pending_pushes == 0)
    with _push_sink(db, conn) as again:
        again.force_sync()
        assert again.table.outbox_count() == 0
    assert conn.pushes("a") == 1 and conn.pushes("b") == 1


def test_close_flushes_the_outbox(db: str) -> None:
    conn = InMemoryConnection(key="id")
    sink = _push_sink(db, conn, push_delay=timedelta(hours=1))
    result = sink.dao.upsert([item("a")])
    assert not result.done()
    sink.close()
    result.wait(0)
    assert conn.pushes("a") == 1


def test_a_pushing_policy_needs_a_connection(db: str) -> None:
    with pytest.raises(ValueError, match="needs a connection"):
        open_sink(Item, "id", store=db, policy=PushAfterWrite())


def test_writes_pending_mark_the_sink_out_of_sync(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(10_000, ops=("create",))
    with _push_sink(db, conn, retry_interval=timedelta(hours=1)) as sink:
        sink.dao.upsert([item("a")])
        assert sink.sync_status is SyncStatus.OUT_OF_SYNC
        assert sink.status().pending_pushes == 1
        with pytest.raises(TransportError):
            sink.force_sync()
        conn.clear_faults()
        sink.force_sync()
        assert sink.sync_status is SyncStatus.LOCAL_DATA_PUSHED
        assert sink.status().pending_pushes == 0


def test_reconnect_retries_pending_pushes(db: str) -> None:
    conn = InMemoryConnection(key="id")
    conn.fail_next(10_000, ops=("create",))
    with _push_sink(db, conn, retry_interval=timedelta(hours=1)) as sink:
        result = sink.dao.upsert([item("a")])
        eventually(lambda: conn.count("create") == 1)
        conn.clear_faults()
        sink.reconnect()
        result.wait(TIMEOUT)
        assert conn.pushes("a") == 1


# -- Bidirectional ---------------------------------------------------------------------------


def _bidi_sink(db: str, conn: InMemoryConnection, **kw: Any) -> Sink:
    kw.setdefault("interval", timedelta(hours=1))
    kw.setdefault("retry_interval", timedelta(hours=1))
    return open_sink(Item, "id", store=db, connection=conn, policy=Bidirectional(**kw))


def test_bidirectional_pushes_then_pulls(db: str) -> None:
    conn = InMemoryConnection([item("r")], key="id")
    with _bidi_sink(db, conn, retry_interval=FAST) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        assert ids(sink.frame()) == ["r"]
        sink.dao.upsert([item("l")]).wait(TIMEOUT)
        assert set(conn.rows) == {("r",), ("l",)}
        conn.put([item("r2")])
        sink.force_sync()
        assert ids(sink.frame()) == ["l", "r", "r2"]
        assert sink.sync_status is SyncStatus.FULL_SYNC


def test_bidirectional_pulls_on_its_interval(db: str) -> None:
    conn = InMemoryConnection([item("a")], key="id")
    with _bidi_sink(db, conn, interval=FAST) as sink:
        eventually(lambda: sink.frame().height == 1)
        conn.put([item("b")])
        eventually(lambda: ids(sink.frame()) == ["a", "b"])


def test_bidirectional_conflict_remote_wins_by_default(db: str) -> None:
    conn = InMemoryConnection([item("a", "original")], key="id")
    with _bidi_sink(db, conn) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        changes = Recorder()
        sink.subscribe(changes)
        conn.fail_next(10_000, ops=("update",))  # our push cannot land
        result = sink.dao.upsert([item("a", "mine")])
        conn.put([item("a", "theirs", 5.0)])  # someone else changed it remotely
        sink.force_sync()
        with pytest.raises(Rejected, match="remote"):
            result.wait(TIMEOUT)
        assert sink.dao.get("a") == Item("a", "theirs", 5.0)
        assert sink.table.outbox_count() == 0
        changes.wait(lambda items: any(c.op is Op.REJECTED for c in items))
        (refusal,) = changes.ops(Op.REJECTED)
        assert refusal.frame["name"].to_list() == ["theirs"]
        assert sink.sync_status is SyncStatus.FULL_SYNC
        assert conn.rows[("a",)]["name"] == "theirs"


def test_bidirectional_conflict_with_a_merging_resolver(db: str) -> None:
    def keep_my_name(mine: Mapping[str, Any] | None, theirs: Mapping[str, Any]) -> Any:
        assert mine is not None
        return {**theirs, "name": mine["name"]}

    conn = InMemoryConnection([item("a", "original", 1.0)], key="id")
    with _bidi_sink(db, conn, resolver=keep_my_name) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        conn.fail_next(2, ops=("update",))  # the write's push fails, and again in force_sync
        result = sink.dao.upsert([item("a", "mine", 1.0)])
        conn.put([item("a", "theirs", 7.0)])
        eventually(lambda: conn.count("update") == 1)
        sink.force_sync()  # push fails, pull finds the conflict, the merged row is pushed
        result.wait(TIMEOUT)  # settled by the push of the merged row
        assert conn.count("update") == 3
        assert sink.dao.get("a") == Item("a", "mine", 7.0)
        assert conn.rows[("a",)] == {"id": "a", "name": "mine", "price": 7.0}
        assert sink.table.outbox_count() == 0


def test_bidirectional_keeps_a_local_write_the_remote_did_not_change(db: str) -> None:
    conn = InMemoryConnection([item("a", "original")], key="id")
    with _bidi_sink(db, conn) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        conn.fail_next(1, ops=("update",))
        result = sink.dao.upsert([item("a", "mine")])
        eventually(lambda: conn.count("update") == 1)
        sink.force_sync()  # pushes (works now), then pulls: no conflict
        result.wait(TIMEOUT)
        assert sink.dao.get("a") == Item("a", "mine", 1.0)
        assert conn.rows[("a",)]["name"] == "mine"


# -- WebSocketSubscription -------------------------------------------------------------------


def _fetch_since(conn: InMemoryConnection, limit: int | None = None) -> Any:
    async def backfill(ctx: SyncContext, since: datetime) -> pl.DataFrame:
        params: dict[str, Any] = {"time>=": since}
        if limit is not None:
            params = {"limit": limit}  # a "recent trades" endpoint: the newest rows only
        return await conn.fetch(ctx.spec, params)

    return backfill


def _ws_sink(db: str, conn: InMemoryConnection, **kw: Any) -> Sink:
    policy = WebSocketSubscription(topics=["trades"], **kw)
    return open_sink(Trade, "trade_id", store=db, connection=conn, policy=policy)


def _reported(changes: Sequence[Any], op: Op = Op.UPSERT) -> list[str]:
    """Every trade id the REMOTE changes of ``op`` carried (streams batch rows per change)."""
    return [
        tid
        for c in changes
        if isinstance(c, Change) and c.op is op
        for tid in c.frame["trade_id"].to_list()
    ]


def _stored(sink: Sink) -> list[str]:
    return ids(sink.frame(), "trade_id")


def test_websocket_rows_are_stored_and_repeats_are_not_reported(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn) as sink:
        assert "trades" in conn.subscriptions  # subscribed before open_sink returned
        changes = Recorder()
        sink.subscribe(changes)
        conn.push_stream("trades", [trade(1), trade(2)])
        conn.push_stream("trades", [trade(1), trade(2)])  # a duplicate delivery
        conn.push_stream("trades", [trade(3)])
        changes.wait(lambda items: len(_reported(items)) >= 3)
        assert sorted(_reported(changes.items)) == ["t001", "t002", "t003"]  # each once
        assert all(c.source is Source.REMOTE for c in changes.items)
        assert _stored(sink) == ["t001", "t002", "t003"]
        assert sink.sync_status is SyncStatus.REMOTE_DATA_RECEIVED
    # the position is committed with the rows now and then, and always when the sink stops
    with open_sink(Trade, "trade_id", store=db) as reopened:
        positions = positions_from_cursor(reopened.table.state().cursor)
    assert positions == {ALL: StreamPosition(key=("t003",), time=at(3))}


def test_websocket_gap_is_filled_from_the_backfill(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, backfill=_fetch_since(conn)) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        changes = Recorder()
        sink.subscribe(changes)
        conn.push_stream("trades", [trade(1)])
        changes.wait(lambda items: len(_reported(items)) == 1)
        conn.push_stream("trades", [trade(2), trade(3)], deliver=False)  # lost in transit
        conn.drop()
        conn.push_stream("trades", [trade(4)])
        eventually(lambda: _stored(sink) == ["t001", "t002", "t003", "t004"])
        assert not changes.ops(Op.GAP)
        reported = [tid for c in changes.ops(Op.UPSERT) for tid in c.frame["trade_id"].to_list()]
        assert sorted(reported) == ["t001", "t002", "t003", "t004"]  # t001 not reported twice
        assert sink.status().reconnects == 1


def test_websocket_gap_that_cannot_be_filled_emits_a_gap_event(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, backfill=_fetch_since(conn, limit=1)) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        changes = Recorder()
        sink.subscribe(changes)
        conn.push_stream("trades", [trade(1)])
        changes.wait(lambda items: len(_reported(items)) == 1)
        conn.push_stream("trades", [trade(2), trade(3), trade(4)], deliver=False)
        conn.drop()
        changes.wait(lambda items: any(c.op is Op.GAP for c in items))
        (gap,) = changes.ops(Op.GAP)
        assert gap.gap is not None
        assert (gap.gap.start, gap.gap.end) == (at(1), at(4))
        assert gap.frame.height == 0 and gap.reason
        eventually(lambda: _stored(sink) == ["t001", "t004"])


def test_websocket_without_a_backfill_reports_the_outage_as_a_gap(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, stream_fetch=False) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        changes = Recorder()
        sink.subscribe(changes)
        conn.drop()
        changes.wait(lambda items: any(c.op is Op.GAP for c in items))
        assert "no backfill" in (changes.ops(Op.GAP)[0].reason or "")


def test_websocket_backfills_through_the_stream_connection_by_default(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, since_param="time>=", rest_params={"limit": 100}) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        changes = Recorder()
        sink.subscribe(changes)
        conn.push_stream("trades", [trade(1)])
        changes.wait(lambda items: len(_reported(items)) == 1)
        conn.push_stream("trades", [trade(2)], deliver=False)
        conn.drop()
        eventually(lambda: _stored(sink) == ["t001", "t002"])
        assert not changes.ops(Op.GAP)


def test_websocket_reconnect_resubscribes_and_backfills_from_the_stored_position(
    db: str,
) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, backfill=_fetch_since(conn)) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        conn.push_stream("trades", [trade(1)])
        eventually(lambda: _stored(sink) == ["t001"])
        sink.reconnect()  # subscriptions are gone with the old connection
        conn.push_stream("trades", [trade(2)], deliver=False)  # sent while we resubscribe
        eventually(lambda: "trades" in conn.subscriptions)
        sink.force_sync()  # backfill from the stored position now
        conn.push_stream("trades", [trade(3)])
        eventually(lambda: _stored(sink) == ["t001", "t002", "t003"])
        assert sink.status().reconnects == 1


def test_a_restarted_sink_backfills_from_where_the_stream_stood(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    with _ws_sink(db, conn, backfill=_fetch_since(conn)) as sink:
        eventually(lambda: "trades" in conn.subscriptions)
        conn.push_stream("trades", [trade(1)])
        eventually(lambda: _stored(sink) == ["t001"])
    conn.push_stream("trades", [trade(2), trade(3)])  # while no sink was running
    with _ws_sink(db, conn, backfill=_fetch_since(conn)) as sink:
        eventually(lambda: _stored(sink) == ["t001", "t002", "t003"])


def test_websocket_partitions_report_the_gap_of_the_symbol_that_lost_rows(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")

    async def recent_per_symbol(ctx: SyncContext, since: datetime) -> pl.DataFrame:
        frames = [await conn.fetch(ctx.spec, {"symbol": s, "limit": 2}) for s in ("BTC", "ETH")]
        return pl.concat(frames)

    policy = WebSocketSubscription(
        topics=["trades.BTC", "trades.ETH"], backfill=recent_per_symbol, partition="symbol"
    )
    with open_sink(SymbolTrade, "trade_id", store=db, connection=conn, policy=policy) as sink:
        eventually(lambda: len(conn.subscriptions) == 2)
        changes = Recorder()
        sink.subscribe(changes)
        conn.push_stream("trades.BTC", [sym_trade("BTC", 1)])
        conn.push_stream("trades.ETH", [sym_trade("ETH", 1)])
        changes.wait(lambda items: len(_reported(items)) == 2)
        conn.push_stream("trades.BTC", [sym_trade("BTC", 2)], deliver=False)
        conn.push_stream("trades.ETH", [sym_trade("ETH", n) for n in (2, 3, 4)], deliver=False)
        conn.drop()
        changes.wait(lambda items: any(c.op is Op.GAP for c in items))
        (gap,) = changes.ops(Op.GAP)
        assert gap.gap is not None and gap.reason is not None
        assert gap.reason.startswith("symbol=ETH")
        assert (gap.gap.start, gap.gap.end) == (at(1), at(3))
        expected = ["BTC1", "BTC2", "ETH1", "ETH3", "ETH4"]  # ETH2 is lost: the gap says so
        eventually(lambda: ids(sink.frame(), "trade_id") == expected)


def test_websocket_deltas_are_merged_into_the_current_row(db: str) -> None:
    conn = InMemoryConnection(key="id")
    policy = WebSocketSubscription(topics=["tickers"])
    with open_sink(Item, "id", store=db, connection=conn, policy=policy) as sink:
        eventually(lambda: "tickers" in conn.subscriptions)
        conn.push_stream("tickers", [item("BTC", "bitcoin", 1.0)])
        eventually(lambda: sink.frame().height == 1)
        conn.push_stream("tickers", pl.DataFrame({"id": ["BTC"], "price": [2.0]}), kind="delta")
        eventually(lambda: sink.dao.get("BTC") == Item("BTC", "bitcoin", 2.0))


def test_a_bad_message_goes_to_the_error_handler_and_the_stream_goes_on(db: str) -> None:
    conn = InMemoryConnection(key="trade_id")
    errors = Recorder()
    with _ws_sink(db, conn) as sink:
        sink.set_error_handler(errors)
        eventually(lambda: "trades" in conn.subscriptions)
        conn.push_stream("trades", [{"trade_id": "bad", "price": None, "time": at(1)}])
        errors.wait(lambda items: len(items) >= 1)
        assert isinstance(errors.items[0], hubkit.HubkitError)
        conn.push_stream("trades", [trade(2)])
        eventually(lambda: _stored(sink) == ["t002"])


# -- a policy written by a user ---------------------------------------------------------------


@dataclass(frozen=True)
class FetchOnWrite:
    """The custom policy of ``hubkit.policies``' docstring: no base class, just the protocol."""

    params: Mapping[str, Any] | None = None

    async def run(self, ctx: SyncContext) -> None:
        while True:
            try:
                await self.sync_once(ctx)
            except Exception as exc:
                ctx.set_status(SyncStatus.OUT_OF_SYNC)
                ctx.report_error(exc)
            await ctx.wait_for_request(None)

    async def sync_once(self, ctx: SyncContext) -> None:
        assert ctx.connection is not None
        frame = await ctx.connection.fetch(ctx.spec, self.params)
        await ctx.apply_remote(frame)
        ctx.set_status(SyncStatus.FULL_SYNC)


def test_a_custom_policy_runs_in_a_sink(db: str) -> None:
    conn = InMemoryConnection([item("r")], key="id")
    with open_sink(Item, "id", store=db, connection=conn, policy=FetchOnWrite()) as sink:
        eventually(lambda: sink.sync_status is SyncStatus.FULL_SYNC)
        assert ids(sink.frame()) == ["r"]
        # the policy's context is its own object: the user's sink offers no policy methods
        assert not any(hasattr(sink, m) for m in ("apply_remote", "reject", "supersede", "bump"))
        # a custom policy does not push: local writes only wake it
        assert not getattr(sink.policy, "pushes_local_writes", False)
        conn.put([item("r2")])
        sink.dao.upsert([item("local")])
        eventually(lambda: ids(sink.frame()) == ["local", "r", "r2"])
        assert conn.count("fetch") >= 2
        errors = Recorder()
        sink.set_error_handler(errors)
        conn.fail_next(1, ops=("fetch",))
        sink.dao.upsert([item("again")])
        errors.wait(lambda items: len(items) == 1)  # reported; the policy goes on
        conn.put([item("r3")])
        sink.dao.upsert([item("more")])
        eventually(lambda: "r3" in ids(sink.frame()))


@dataclass
class Candle:
    symbol: str
    start: datetime
    close: float


def test_pushes_with_a_composite_key_including_a_datetime(db: str) -> None:
    conn = InMemoryConnection(key=("symbol", "start"))
    policy = PushAfterWrite(retry_interval=FAST)
    with open_sink(Candle, ("symbol", "start"), store=db, connection=conn, policy=policy) as sink:
        rows = [Candle("BTC", at(60), 1.0), Candle("BTC", at(120), 2.0)]
        sink.dao.upsert(rows).wait(TIMEOUT)
        assert set(conn.rows) == {("BTC", at(60)), ("BTC", at(120))}
        conn.reject_key(("BTC", at(60)), "closed candle")
        with pytest.raises(Rejected):
            sink.dao.upsert([Candle("BTC", at(60), 9.0)]).wait(TIMEOUT)
        assert sink.dao.get(("BTC", at(60))) == Candle("BTC", at(60), 1.0)
        sink.dao.delete([("BTC", at(120))]).wait(TIMEOUT)
        assert set(conn.rows) == {("BTC", at(60))}
        assert ids(sink.frame(), "close") == [1.0]
