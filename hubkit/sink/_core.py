"""The state one sink's parts share, and its one write path: commit a change-set, update the
cache, queue the change events (in that order, under one lock, so the store, the cache and
the event order always agree)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from hubkit.errors import ClosedError, HubkitError, as_hubkit
from hubkit.sink.events import Events
from hubkit.types import (
    Change,
    Connection,
    Op,
    OutboxEntry,
    Source,
    SyncPolicy,
    SyncState,
    SyncStatus,
)
from hubkit.writes import Tickets

if TYPE_CHECKING:
    from hubkit.bridge import Bridge
    from hubkit.cache import FrameCache
    from hubkit.changeset import Applied, ChangeSet
    from hubkit.entity import EntitySpec
    from hubkit.store import Store, TableStore

__all__ = ["CLOSE_TIMEOUT", "Core", "Parts", "PolicyTraits", "utcnow"]

# How long close() waits for a running sync step and for the final outbox push.
CLOSE_TIMEOUT: Final = 5.0
# last_sync is persisted with remote rows at most this often (seconds): streams write often.
_STATE_EVERY: Final = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Parts:
    """What opening assembled, so a failure can close exactly what was opened."""

    spec: EntitySpec
    store: Store
    owns_store: bool
    table: TableStore
    cache: FrameCache | None
    owns_cache: bool


PolicyStep = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class PolicyTraits:
    """The optional members of a ``SyncPolicy`` (see its docstring), read once: a policy
    that does not define one gets the default."""

    pushes_local_writes: bool = False
    waits_for_first_sync: bool = False
    start: PolicyStep | None = None
    flush: PolicyStep | None = None

    @classmethod
    def of(cls, policy: SyncPolicy | None) -> PolicyTraits:
        if policy is None:
            return cls()
        start = getattr(policy, "start", None)
        flush = getattr(policy, "flush", None)
        return cls(
            pushes_local_writes=bool(getattr(policy, "pushes_local_writes", False)),
            waits_for_first_sync=bool(getattr(policy, "waits_for_first_sync", False)),
            start=start if callable(start) else None,
            flush=flush if callable(flush) else None,
        )


EventsOf = Callable[["Applied"], Sequence[Change]]


def default_events(source: Source) -> EventsOf:
    """UPSERT for the rows written, then DELETE for the rows removed (when there are any)."""

    def events(applied: Applied) -> list[Change]:
        out = []
        if applied.upserted.height:
            out.append(Change(frame=applied.upserted, source=source, op=Op.UPSERT))
        if applied.deleted.height:
            out.append(Change(frame=applied.deleted, source=source, op=Op.DELETE))
        return out

    return events


class Core:
    """A sink's shared state: its parts, statuses and counters, its locks and loop objects."""

    def __init__(
        self,
        parts: Parts,
        *,
        connection: Connection | None,
        policy: SyncPolicy | None,
        bridge: Bridge,
        name: str,
        pending: Sequence[OutboxEntry],
        state: SyncState,
    ) -> None:
        self.parts = parts
        self.spec = parts.spec
        self.table = parts.table
        self.cache = parts.cache
        self.connection = connection
        self.policy = policy
        self.bridge = bridge
        self.loop = bridge.loop
        self.name = name
        self.events = Events(name, bridge.loop)
        self.traits = PolicyTraits.of(policy)
        self.pushes = self.traits.pushes_local_writes
        self.write_lock = threading.RLock()  # store write + cache update + event queueing
        self.lock = threading.Lock()  # the small mutable state below
        self.sync_status = SyncStatus.OUT_OF_SYNC
        self.scheduled = 0
        self.last_sync: datetime | None = state.last_sync
        self.last_state_write = 0.0
        self.reconnects = 0
        self.pending = len(pending)
        self.tickets = Tickets(max((e.id for e in pending), default=0))
        self.rows_hint = 0
        self.lag: float | None = None
        self.behind: float | None = None  # a follower's delay behind the writer's commits
        self.time_column = next((c.name for c in self.spec.columns if c.kind == "datetime"), None)
        self.closing = False
        self.closed = False
        self.released = False
        self.received = False  # remote rows arrived since the sink opened
        # Loop-side objects, created by the runner on hubkit's loop.
        self.request: asyncio.Event | None = None
        self.sync_lock: asyncio.Lock | None = None
        # Tasks waiting for ``sync_lock`` through ``SinkContext.exclusive`` (a policy's steps).
        self.lock_waiters: set[asyncio.Task[Any]] = set()
        self.conn_lock: asyncio.Lock | None = None
        self.reconnect_lock: asyncio.Lock | None = None
        self.task: asyncio.Task[None] | None = None
        self.shutdown: asyncio.Future[None] | None = None
        # The outcome of the first sync, awaited by opening (None: a success).
        self.first_sync: asyncio.Future[HubkitError | None] | None = None
        self._first_settled = False

    # -- the one write path -------------------------------------------------------------------

    def commit(self, change: ChangeSet, events: EventsOf) -> Applied:
        """Apply ``change`` in one transaction, then update the cache, then queue the events
        ``events(applied)``. Holds the write lock throughout."""
        with self.write_lock:
            applied = self.table.apply(change)
            cache = self.cache
            if cache is not None:
                if applied.deleted.height:
                    cache.remove(applied.deleted.select(list(self.spec.key)))
                if applied.upserted.height:
                    cache.put(applied.upserted)
            if applied.outbox_added or applied.outbox_removed:
                self.pending = max(0, self.pending + applied.outbox_added - applied.outbox_removed)
            for event in events(applied):
                self.events.queue(event)
            return applied

    # -- errors and the first sync -------------------------------------------------------------

    def report_error(self, exc: BaseException) -> None:
        """Hand an error to the error handler; before the first sync settled, it settles it."""
        self.events.report_error(exc)
        self.first_sync_done(as_hubkit(exc))

    def first_sync_done(self, error: HubkitError | None) -> None:
        """The first sync succeeded (None) or failed; the first call counts. Any thread."""
        if self._first_settled or self.first_sync is None:
            return
        self._first_settled = True
        future = self.first_sync

        def settle() -> None:
            if not future.done():
                future.set_result(error)

        self.events.call_soon(settle)

    # -- small helpers --------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closing or self.closed:
            raise ClosedError(f"sink {self.name!r} is closed")

    def check_not_closed(self) -> None:
        if self.closed:
            raise ClosedError(f"sink {self.name!r} is closed")

    def table_for_use(self) -> TableStore:
        self.check_open()
        return self.table

    def wake(self) -> None:
        """Ask the policy to sync (a local write, a reconnect)."""
        event = self.request
        if event is not None:
            self.events.call_soon(event.set)

    def state_time(self) -> datetime | None:
        """``last_sync`` to persist with a remote write, at most once a second."""
        now = utcnow()
        self.last_sync = now
        stamp = now.timestamp()
        if stamp - self.last_state_write < _STATE_EVERY:
            return None
        self.last_state_write = stamp
        return now

    def note_lag(self, written: pl.DataFrame) -> None:
        column = self.time_column
        if column is None or written.height == 0:
            return
        newest = written.get_column(column).max()
        if isinstance(newest, datetime):
            self.lag = max(0.0, (utcnow() - newest).total_seconds())

    def key_tuples(self, keys: pl.DataFrame) -> list[tuple[Any, ...]]:
        return list(keys.select(list(self.spec.key)).iter_rows())
