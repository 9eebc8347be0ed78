"""The sink: one entity kept in sync between a remote, a SQL store and a Polars cache.

::

    with hubkit.open_sink(Instrument, key="symbol", store="data.db",
                          connection=conn, policy=hubkit.PeriodicSync(interval=60)) as sink:
        sink.dao.upsert([Instrument("BTCUSDT", "Trading", 0.1)]).wait(5)
        df = sink.frame()
        with sink.subscribe(print):
            sink.force_sync()

    async with await hubkit.aopen_sink(Instrument, "symbol", store="data.db") as sink:
        await sink.dao.aupsert(rows)

``open_sink`` returns only a fully initialised sink (entity reflected, table created, cache
warmed from the store, connection connected, policy running) or raises, having closed
whatever it had opened. ``close()`` stops the policy, pushes what it can of the outbox, and
disconnects; every later use raises ``ClosedError``.

Where things run (hubkit owns one event loop in one thread, see ``hubkit.bridge``):

- ``sink.dao`` blocking calls do their store I/O in the calling thread; the ``a``-twins do
  it in a worker thread. Neither touches the event loop thread.
- the policy runs as a task on hubkit's loop; everything it stores goes through the
  ``SyncContext`` methods, whose store work runs in worker threads.
- change handlers and the error handler are called on hubkit's loop thread, one at a time,
  in the order the changes were committed. Keep them quick; a handler may return an
  awaitable, which is run as a task on that loop. Use the ``a``-twins from a handler: a
  blocking sink call made on hubkit's loop thread raises ``BridgeError``.

Every write to the store, the cache update after it and the queueing of its change event
happen under one lock, so the store, the cache and the event order always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import logging
import os
import threading
from collections.abc import (
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from hubkit.bridge import run_sync_in_worker
from hubkit.errors import ClosedError, HubkitError, Rejected, SyncError
from hubkit.status import SinkStatus, status_html
from hubkit.types import (
    Change,
    ChangeHandler,
    Connection,
    ErrorHandler,
    Gap,
    Op,
    OutboxEntry,
    ScheduleStatus,
    Source,
    SyncPolicy,
    SyncState,
    SyncStatus,
)
from hubkit.writes import Forward, Tickets, WriteResult, key_text

if TYPE_CHECKING:
    from hubkit.bridge import Bridge
    from hubkit.cache import FrameCache
    from hubkit.entity import EntitySpec
    from hubkit.store import Store, TableStore

__all__ = [
    "Sink",
    "SinkDao",
    "SinkOpening",
    "Subscription",
    "WriteResult",
    "aopen_sink",
    "open_sink",
]

_log = logging.getLogger("hubkit.sink")

# How long close() waits for a running sync step and for the final outbox push.
_CLOSE_TIMEOUT: Final = 5.0
# last_sync is persisted with remote rows at most this often (seconds): streams write often.
_STATE_EVERY: Final = 1.0


class _DefaultCache:
    """Marker type for ``open_sink``'s default ``cache`` argument: a new ``FrameCache()``."""

    def __repr__(self) -> str:
        return "FrameCache()"


DEFAULT_CACHE: Final = _DefaultCache()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_hubkit(exc: BaseException) -> HubkitError:
    if isinstance(exc, HubkitError):
        return exc
    error = SyncError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


# -- subscriptions ---------------------------------------------------------------------------


class Subscription:
    """A registered change handler. ``close()`` (or leaving its ``with`` block) unsubscribes;
    closing twice is harmless."""

    def __init__(self, sink: Sink, handler: ChangeHandler) -> None:
        self._sink = sink
        self.handler = handler
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sink._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active"
        return f"<Subscription {self.handler!r} on {self._sink.name!r} {state}>"


# -- the DAO ---------------------------------------------------------------------------------


class SinkDao:
    """Reads and writes of a sink's table. Writes go store -> cache -> LOCAL change events,
    with outbox entries in the same transaction when the policy pushes local writes.

    Blocking methods run their store I/O in the calling thread; the ``a``-prefixed twins run
    it in a worker thread and never block an event loop. Rows may be entities, dicts (field
    or column names) or a Polars frame; a key is a scalar, a tuple for a composite key, an
    entity or a dict. A bad value raises ``ValidationError`` and nothing is stored.
    """

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def upsert(self, rows: Iterable[object] | pl.DataFrame | object) -> WriteResult:
        """Insert or replace rows by key (never duplicates); returns a ``WriteResult``."""
        return self._sink._local_upsert(rows)

    def delete(self, keys: Any) -> WriteResult:
        """Delete rows by key: one key, or a list/set/frame of keys. Missing keys are ignored;
        ``WriteResult.frame`` holds the rows that were removed."""
        return self._sink._local_delete(keys)

    def get(self, key: Any) -> Any | None:
        """The entity with this key, or None (from the cache when it has the row)."""
        return self._sink._get(key)

    def query(
        self,
        where: Any = None,
        *,
        order_by: str | Sequence[str] | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Rows from the store: ``where`` is a mapping (column -> value, or a list for IN) or
        a SQLAlchemy expression; ``order_by``, ``descending`` and ``limit`` as in SQL."""
        table = self._sink._table_for_use()
        return table.query(where, order_by=order_by, descending=descending, limit=limit)

    def count(self) -> int:
        """How many rows the table holds (in the store)."""
        return self._sink._table_for_use().count()

    async def aupsert(self, rows: Iterable[object] | pl.DataFrame | object) -> WriteResult:
        return await run_sync_in_worker(self.upsert, rows)

    async def adelete(self, keys: Any) -> WriteResult:
        return await run_sync_in_worker(self.delete, keys)

    async def aget(self, key: Any) -> Any | None:
        return await run_sync_in_worker(self.get, key)

    async def aquery(
        self,
        where: Any = None,
        *,
        order_by: str | Sequence[str] | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> pl.DataFrame:
        return await run_sync_in_worker(
            functools.partial(
                self.query, where, order_by=order_by, descending=descending, limit=limit
            )
        )

    async def acount(self) -> int:
        return await run_sync_in_worker(self.count)


# -- the sink --------------------------------------------------------------------------------


def _default_error_handler(name: str) -> ErrorHandler:
    def log(exc: HubkitError) -> None:
        _log.warning("sink %s: %s: %s", name, type(exc).__name__, exc)

    return log


@dataclass
class _Parts:
    """What ``open_sink`` assembled, so a failure can close exactly what was opened."""

    spec: EntitySpec
    store: Store
    owns_store: bool
    table: TableStore
    cache: FrameCache | None
    owns_cache: bool


class Sink:
    """One entity kept in sync; create it with ``open_sink``/``aopen_sink`` (see the module
    docstring). The sink is also the ``SyncContext`` its policy works through."""

    def __init__(
        self,
        parts: _Parts,
        *,
        connection: Connection | None,
        policy: SyncPolicy | None,
        bridge: Bridge,
        name: str,
        pending: Sequence[OutboxEntry],
        state: SyncState,
    ) -> None:
        self._parts = parts
        self._spec = parts.spec
        self._table = parts.table
        self._cache = parts.cache
        self._connection = connection
        self._policy = policy
        self._bridge = bridge
        self._loop = bridge.loop
        self.name = name
        self.dao = SinkDao(self)
        self._pushes = bool(getattr(policy, "pushes_local_writes", False))
        self._write_lock = threading.RLock()  # store write + cache update + event queueing
        self._lock = threading.Lock()  # the small mutable state below
        self._handlers: tuple[Subscription, ...] = ()
        self._error_handler: ErrorHandler = _default_error_handler(name)
        self._sync_status = SyncStatus.OUT_OF_SYNC
        self._scheduled = 0
        self._last_sync: datetime | None = state.last_sync
        self._last_state_write = 0.0
        self._last_error: str | None = None
        self._reconnects = 0
        self._pending = len(pending)
        self._tickets = Tickets(max((e.id for e in pending), default=0))
        self._rows_hint = 0
        self._lag: float | None = None
        self._time_column = next((c.name for c in self._spec.columns if c.kind == "datetime"), None)
        self._closing = False
        self._closed = False
        self._released = False
        self._shutdown: asyncio.Future[None] | None = None
        # Loop-side objects, created by _astart on hubkit's loop.
        self._request: asyncio.Event | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._conn_lock: asyncio.Lock | None = None
        self._reconnect_lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()

    # -- public surface ----------------------------------------------------------------------

    @property
    def spec(self) -> EntitySpec:
        """How the entity maps to columns (``hubkit.entity.EntitySpec``)."""
        return self._spec

    @property
    def connection(self) -> Connection | None:
        return self._connection

    @property
    def policy(self) -> SyncPolicy | None:
        return self._policy

    @property
    def store(self) -> Store:
        return self._parts.store

    @property
    def table(self) -> TableStore:
        """The store table behind the DAO (blocking; mind the thread you call it from)."""
        return self._table

    @property
    def cache(self) -> FrameCache | None:
        return self._cache

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sync_status(self) -> SyncStatus:
        return self._sync_status

    @property
    def schedule_status(self) -> ScheduleStatus:
        return ScheduleStatus.SCHEDULED if self._scheduled else ScheduleStatus.NOT_SCHEDULED

    def status(self) -> SinkStatus:
        """A frozen snapshot: statuses, connection, last sync, rows, pending pushes, ...

        Cheap and callable from any thread (no store I/O on hubkit's loop thread)."""
        connection = self._connection
        return SinkStatus(
            name=self.name,
            sync_status=self._sync_status,
            schedule_status=self.schedule_status,
            connected=bool(connection is not None and connection.is_connected) and not self._closed,
            last_sync=self._last_sync,
            rows=self._row_count(),
            pending_pushes=self._pending,
            reconnects=self._reconnects,
            last_error=self._last_error,
            lag=self._lag,
            rate_limit_remaining=self._rate_limit_remaining(),
            closed=self._closed,
        )

    def _rate_limit_remaining(self) -> int | None:
        # duck-typed: an HTTP connection exposes the remote's last rate-limit figures
        info = getattr(self._connection, "last_rate_limit", None)
        remaining = getattr(info, "remaining", None)
        return remaining if isinstance(remaining, int) else None

    def frame(self) -> pl.DataFrame:
        """The table as a Polars frame: the cache snapshot (reloaded from the store first if
        it is stale), or a store read when the sink has no cache. Later writes never change
        a frame already returned. A cache with ``max_rows`` holds only the most recently
        written rows; ``dao.query()`` reads the whole table from the store."""
        table = self._table_for_use()
        cache = self._cache
        if cache is None:
            return table.read_all()
        if cache.is_stale:
            with self._write_lock:
                if cache.is_stale:
                    cache.load(table.read_all())
        return cache.frame()

    def lazy(self) -> pl.LazyFrame:
        """``frame()`` as a ``LazyFrame`` for query building."""
        self._table_for_use()
        if self._cache is not None and not self._cache.is_stale:
            return self._cache.lazy()
        return self.frame().lazy()

    def subscribe(self, handler: ChangeHandler) -> Subscription:
        """Call ``handler(change)`` for every change (LOCAL and REMOTE upserts and deletes,
        REJECTED writes, GAPs) on hubkit's loop thread; returns the handle that unsubscribes.

        An exception from the handler goes to the error handler (as ``SyncError`` unless it
        is a ``HubkitError``) and never stops the sink or other handlers."""
        self._check_open()
        subscription = Subscription(self, handler)
        with self._lock:
            self._handlers = (*self._handlers, subscription)
        return subscription

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Route errors from background work (policy, handlers) to ``handler(exc)``, called on
        hubkit's loop thread. None restores the default: log at WARNING and keep going."""
        self._error_handler = handler or _default_error_handler(self.name)

    def force_sync(self, timeout: float | None = None) -> None:
        """Run one sync of the policy now and wait for it; its error is raised here as a
        ``HubkitError``. Without a policy a sink with a connection fetches everything."""
        self._check_open()
        self._bridge.run(self._aforce_sync_on_loop(), timeout)

    async def aforce_sync(self) -> None:
        """Async twin of ``force_sync``."""
        self._check_open()
        await self._bridge.arun(self._aforce_sync_on_loop())

    def schedule_sync(self) -> None:
        """Ask for a sync without waiting: ``schedule_status`` is ``SCHEDULED`` until it ran.
        Its errors go to the error handler."""
        self._check_open()
        with self._lock:
            self._scheduled += 1
        try:
            self._loop.call_soon_threadsafe(self._start_scheduled)
        except RuntimeError:
            with self._lock:
                self._scheduled -= 1
            raise ClosedError("hubkit's event loop is gone") from None

    def reconnect(self, timeout: float | None = None) -> None:
        """Disconnect and connect again, then restart the policy (a stream resubscribes and
        backfills). Counted in ``status().reconnects``; a failed connect is raised."""
        self._check_open()
        self._bridge.run(self._areconnect_on_loop(), timeout)

    async def areconnect(self) -> None:
        """Async twin of ``reconnect``."""
        self._check_open()
        await self._bridge.arun(self._areconnect_on_loop())

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Stop the policy, push what can be pushed of the outbox within ``timeout`` seconds
        (the rest stays durable for next time), disconnect, and release what the sink opened.
        Idempotent (a concurrent second call waits for the first); every later use raises
        ``ClosedError``."""
        if self._released:
            return
        if not self._closed:
            self._bridge.run(self._ashutdown(timeout))
        self._release()

    async def aclose(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Async twin of ``close``."""
        if self._released:
            return
        if not self._closed:
            await self._bridge.arun(self._ashutdown(timeout))
        await run_sync_in_worker(self._release)

    def panel(self, **kwargs: Any) -> Any:
        """A live status panel (ipywidgets, with a text fallback) for this sink."""
        module = importlib.import_module("hubkit.notebook")
        return module.status_panel(self, **kwargs)

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.status()
        state = "closed" if s.closed else s.sync_status.value
        return (
            f"<Sink {s.name!r} {state} rows={s.rows} pending={s.pending_pushes} "
            f"connected={s.connected} policy={self._policy_name()}>"
        )

    def _policy_name(self) -> str | None:
        return None if self._policy is None else type(self._policy).__name__

    def _repr_html_(self) -> str:
        return status_html(self.status())

    # -- SyncContext (called by the policy on hubkit's loop) ---------------------------------

    async def apply_remote(
        self, frame: pl.DataFrame, *, op: Op = Op.UPSERT, cursor: str | None = None
    ) -> pl.DataFrame:
        """Store remote rows (and ``cursor``) in one transaction off the loop thread, update
        the cache and emit a REMOTE change; returns the rows written (or deleted)."""
        self._check_not_closed()
        return await run_sync_in_worker(self._apply_remote, frame, op, cursor)

    async def state(self) -> SyncState:
        self._check_not_closed()
        return await run_sync_in_worker(self._table.state)

    async def pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Outbox entries waiting to be pushed, oldest first."""
        self._check_not_closed()
        return await run_sync_in_worker(self._pending_entries, limit)

    def _pending_entries(self, limit: int | None) -> list[OutboxEntry]:
        # under the write lock, so the pending count agrees with writes made meanwhile
        with self._write_lock:
            entries = self._table.outbox_pending(limit)
            if limit is None:
                self._pending = len(entries)
            return entries

    async def acknowledge(self, entry: OutboxEntry, response: Mapping[str, Any] | None) -> None:
        """Mark ``entry`` pushed; apply the remote's echo of the row when it differs and no
        newer local write of that key is waiting. Resolves the write's ``WriteResult``."""
        self._check_not_closed()
        await run_sync_in_worker(self._acknowledge, entry, response)
        self._tickets.settle(entry, None)

    async def reject(self, entry: OutboxEntry, error: HubkitError) -> None:
        """Drop a refused entry, roll its row back and emit REJECTED; later pending writes of
        the same key are rejected with it (newest first, so the row ends as it was before
        ``entry``). Their ``WriteResult``s raise ``error``."""
        self._check_not_closed()
        rejected = await run_sync_in_worker(self._reject, entry, error)
        for item, item_error in rejected:
            self._tickets.settle(item, item_error)

    async def emit_gap(self, gap: Gap) -> None:
        """Emit a GAP change (an empty frame; ``change.gap`` holds the interval)."""
        _log.warning("sink %s: stream gap %s .. %s: %s", self.name, gap.start, gap.end, gap.reason)
        change = Change(
            frame=self._spec.to_frame([]),
            source=Source.REMOTE,
            op=Op.GAP,
            reason=gap.reason,
            gap=gap,
        )
        self._queue_change(change)

    def report_error(self, exc: BaseException) -> None:
        """Hand an error to the error handler (on the loop thread); recorded in ``status()``."""
        error = _as_hubkit(exc)
        self._last_error = f"{type(error).__name__}: {error}"
        self._call_soon(self._call_error_handler, error)

    def set_status(self, status: SyncStatus) -> None:
        """Set ``sync_status``. A push round that found the outbox empty may end after a new
        local write was queued; while writes wait to be pushed, "pushed" is not true, so
        ``LOCAL_DATA_PUSHED`` stays ``OUT_OF_SYNC`` and ``FULL_SYNC`` becomes
        ``REMOTE_DATA_RECEIVED``."""
        if self._pushes and self._pending:
            if status is SyncStatus.LOCAL_DATA_PUSHED:
                status = SyncStatus.OUT_OF_SYNC
            elif status is SyncStatus.FULL_SYNC:
                status = SyncStatus.REMOTE_DATA_RECEIVED
        self._sync_status = status
        if status is not SyncStatus.OUT_OF_SYNC:
            self._last_sync = _utcnow()

    async def wait_for_request(self, timeout: float | None) -> bool:
        """Sleep until a local write or a reconnect asks the policy to sync (True), or until
        ``timeout`` seconds pass (False; None waits for ever)."""
        event = self._request
        assert event is not None, "the sink is not started"
        if not event.is_set():
            if timeout is not None and timeout <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return False
        event.clear()
        return True

    # SinkContext extras (see hubkit.policies.SinkContext)

    def exclusive(self) -> AbstractAsyncContextManager[Any]:
        lock = self._sync_lock
        assert lock is not None, "the sink is not started"
        return lock

    async def ensure_connected(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_connected:
            return False
        assert self._conn_lock is not None
        async with self._conn_lock:
            if connection.is_connected:
                return False
            await connection.connect()
            self._reconnects += 1
            return True

    async def rows(self, keys: pl.DataFrame) -> pl.DataFrame:
        self._check_not_closed()
        key_tuples = list(keys.select(list(self._spec.key)).iter_rows())
        if not key_tuples:
            return self._spec.to_frame([])
        return await run_sync_in_worker(self._get_rows, key_tuples)

    async def bump(self, entries: Sequence[OutboxEntry]) -> None:
        self._check_not_closed()
        await run_sync_in_worker(self._table.outbox_bump, [e.id for e in entries])

    async def supersede(
        self,
        entries: Sequence[OutboxEntry],
        frame: pl.DataFrame,
        *,
        push: bool,
        reason: str,
    ) -> bool:
        self._check_not_closed()
        if not entries:
            return False
        done = await run_sync_in_worker(self._supersede, list(entries), frame, push, reason)
        if not done:
            return False
        tickets = [t for t in (self._tickets.pop(e) for e in entries) if t is not None]
        if push:
            if tickets:
                self._tickets.add(entries[0].key, Forward(tickets))
        else:
            error = Rejected(f"{reason} (key {tuple(entries[0].key)!r})")
            for ticket in tickets:
                ticket._entry_settled(error)
        return True

    def note_reconnect(self) -> None:
        self._reconnects += 1

    # -- start, sync, reconnect and shutdown on the loop -------------------------------------

    async def _astart(self) -> None:
        self._request = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._conn_lock = asyncio.Lock()
        self._reconnect_lock = asyncio.Lock()
        if self._connection is not None:
            self._route_connection_errors(self._connection)
            await self._connection.connect()
        start = getattr(self._policy, "start", None)
        if callable(start):
            await start(self)
        self._start_policy()

    def _route_connection_errors(self, connection: Connection) -> None:
        """A connection that reports errors it handles itself (a malformed frame, a failed
        automatic reconnect) through a public ``on_error`` attribute left unset gets the
        sink's ``report_error``, so they reach the sink's error handler."""
        if "on_error" in dir(connection) and getattr(connection, "on_error", None) is None:
            with contextlib.suppress(AttributeError):
                connection.on_error = self.report_error  # type: ignore[attr-defined]

    def _note_lag(self, written: pl.DataFrame) -> None:
        column = self._time_column
        if column is None or written.height == 0:
            return
        newest = written.get_column(column).max()
        if isinstance(newest, datetime):
            self._lag = max(0.0, (_utcnow() - newest).total_seconds())

    def _start_policy(self) -> None:
        if self._policy is None:
            return
        self._task = self._loop.create_task(
            self._run_policy(self._policy), name=f"hubkit:{self.name}"
        )

    async def _run_policy(self, policy: SyncPolicy) -> None:
        try:
            await policy.run(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._sync_status = SyncStatus.OUT_OF_SYNC
            self.report_error(exc)

    async def _stop_policy(self, timeout: float) -> None:
        """Cancel the policy task once no sync step is running (waiting at most ``timeout``),
        so a push is never cut between sending and recording it."""
        task = self._task
        self._task = None
        if task is None or task.done():
            return
        assert self._sync_lock is not None
        acquired = False
        inside = asyncio.current_task() is task  # stopped by the policy itself
        if not inside:
            try:
                await asyncio.wait_for(self._sync_lock.acquire(), timeout)
                acquired = True
            except TimeoutError:
                _log.warning(
                    "sink %s: a sync step did not finish in %s s; cancelling it", self.name, timeout
                )
        try:
            task.cancel()
            if not inside:
                await asyncio.gather(task, return_exceptions=True)
        finally:
            if acquired:
                self._sync_lock.release()

    def _effective_policy(self) -> SyncPolicy | None:
        if self._policy is not None:
            return self._policy
        if self._connection is None:
            return None
        from hubkit.policies import QueryOnInit

        return QueryOnInit()

    async def _aforce_sync_on_loop(self) -> None:
        policy = self._effective_policy()
        if policy is None:
            return
        assert self._sync_lock is not None
        try:
            async with self._sync_lock:
                self._check_not_closed()
                await policy.sync_once(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _as_hubkit(exc) from (None if isinstance(exc, HubkitError) else exc)

    def _start_scheduled(self) -> None:
        task = self._loop.create_task(self._run_scheduled())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_scheduled(self) -> None:
        try:
            if not self._closing:
                await self._aforce_sync_on_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.report_error(exc)
        finally:
            with self._lock:
                self._scheduled -= 1

    async def _areconnect_on_loop(self) -> None:
        connection = self._connection
        if connection is None:
            return
        assert self._reconnect_lock is not None and self._conn_lock is not None
        async with self._reconnect_lock:
            self._check_open()
            await self._stop_policy(_CLOSE_TIMEOUT)
            try:
                async with self._conn_lock:
                    try:
                        await connection.disconnect()
                    except Exception as exc:
                        _log.debug(
                            "sink %s: disconnect before reconnect failed: %s", self.name, exc
                        )
                    self._sync_status = SyncStatus.OUT_OF_SYNC
                    try:
                        await connection.connect()
                    except Exception as exc:
                        self.report_error(exc)
                        raise _as_hubkit(exc) from None
                    self._reconnects += 1
            finally:
                if not self._closing:
                    self._start_policy()
                    self._wake()

    async def _ashutdown(self, timeout: float) -> None:
        """Close on the loop; a second caller waits for the first one's close to finish."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shutdown_steps(timeout))
        await asyncio.shield(self._shutdown)

    async def _shutdown_steps(self, timeout: float) -> None:
        self._closing = True
        try:
            await self._stop_policy(timeout)
            for task in list(self._background):
                task.cancel()
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            await self._flush(timeout)
        finally:
            connection = self._connection
            if connection is not None:
                try:
                    await connection.disconnect()
                except Exception as exc:
                    _log.warning("sink %s: disconnect on close failed: %s", self.name, exc)
            self._tickets.abandon_all(
                ClosedError(
                    f"sink {self.name!r} closed before the write was pushed; it stays in the "
                    "outbox and is pushed when the sink is opened again"
                )
            )
            self._closed = True
            await asyncio.sleep(0)  # deliver the changes already queued to the handlers

    async def _flush(self, timeout: float) -> None:
        flush = getattr(self._policy, "flush", None)
        if not (self._pushes and callable(flush) and self._pending):
            return
        connection = self._connection
        if connection is None or not connection.is_connected:
            return
        try:
            await asyncio.wait_for(flush(self), timeout)
        except TimeoutError:
            _log.warning(
                "sink %s: outbox not fully pushed within %s s; the rest stays for next time",
                self.name,
                timeout,
            )
        except Exception as exc:
            _log.warning("sink %s: pushing the outbox on close failed: %s", self.name, exc)

    def _release(self) -> None:
        """Blocking part of closing: what the sink owns of the cache and the store (after
        any write still running in another thread has finished). Once only."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._handlers = ()
        parts = self._parts
        with self._write_lock:
            if parts.owns_cache and parts.cache is not None:
                parts.cache.clear()
            if parts.owns_store:
                parts.store.close()

    # -- local writes (calling thread) -------------------------------------------------------

    def _local_upsert(self, rows: Iterable[object] | pl.DataFrame | object) -> WriteResult:
        self._check_open()
        spec = self._spec
        items: Iterable[object] | pl.DataFrame
        if isinstance(rows, pl.DataFrame) or (
            isinstance(rows, Iterable) and not isinstance(rows, str | bytes | Mapping)
        ):
            items = rows
        else:
            items = [rows]
        frame = spec.to_frame(items)
        if frame.height > 1:
            frame = frame.unique(subset=list(spec.key), keep="last", maintain_order=True)
        if frame.height == 0:
            return WriteResult(frame, 0, self._bridge)
        with self._write_lock:
            self._check_open()
            if self._pushes:
                from hubkit.store import OutboxWrite

                keys = list(frame.select(list(spec.key)).iter_rows())
                before = self._before_images(keys)
                outbox = []
                for row_key, row in zip(keys, frame.iter_rows(named=True), strict=True):
                    old = before.get(key_text(row_key))
                    outbox.append(
                        OutboxWrite(
                            op="create" if old is None else "update",
                            key=row_key,
                            payload=row,
                            before=old,
                        )
                    )
                written = self._table.upsert(frame, outbox=outbox)
                result = WriteResult(written, len(outbox), self._bridge)
                for row_key in keys:
                    self._tickets.add(row_key, result)
                self._pending += len(outbox)
                self._sync_status = SyncStatus.OUT_OF_SYNC
            else:
                written = self._table.upsert(frame)
                result = WriteResult(written, 0, self._bridge)
            if self._cache is not None:
                self._cache.put(written)
            self._queue_change(Change(frame=written, source=Source.LOCAL, op=Op.UPSERT))
        self._wake()  # a pushing policy pushes; another may use writes as a sync trigger
        return result

    def _local_delete(self, keys: Any) -> WriteResult:
        self._check_open()
        key_list = self._key_list(keys)
        if not key_list:
            return WriteResult(self._spec.to_frame([]), 0, self._bridge)
        with self._write_lock:
            self._check_open()
            if self._pushes:
                from hubkit.store import OutboxWrite

                before = self._before_images(key_list)
                outbox = [
                    OutboxWrite(op="remove", key=k, payload=None, before=before[key_text(k)])
                    for k in key_list
                    if key_text(k) in before
                ]
                deleted = self._table.delete(self._store_keys(key_list), outbox=outbox)
                result = WriteResult(deleted, len(outbox), self._bridge)
                for item in outbox:
                    self._tickets.add(item.key, result)
                self._pending += len(outbox)
                if outbox:
                    self._sync_status = SyncStatus.OUT_OF_SYNC
            else:
                deleted = self._table.delete(self._store_keys(key_list))
                result = WriteResult(deleted, 0, self._bridge)
            if deleted.height:
                if self._cache is not None:
                    self._cache.remove(deleted.select(list(self._spec.key)))
                self._queue_change(Change(frame=deleted, source=Source.LOCAL, op=Op.DELETE))
        if deleted.height:
            self._wake()
        return result

    def _get(self, key: Any) -> Any | None:
        table = self._table_for_use()
        cache = self._cache
        if cache is not None and not cache.is_stale:
            row = cache.get(key)
            if row is not None:
                return self._spec.to_entity(row)
        return table.get(key)

    def _key_list(self, keys: Any) -> list[tuple[Any, ...]]:
        spec = self._spec
        if isinstance(keys, pl.DataFrame):
            return list(keys.select(list(spec.key)).iter_rows())
        if isinstance(keys, list | set | frozenset) or inspect.isgenerator(keys):
            return [tuple(spec.key_of(k)) for k in keys]
        return [tuple(spec.key_of(keys))]

    def _store_keys(self, keys: Sequence[tuple[Any, ...]]) -> list[Any]:
        if len(self._spec.key) == 1:
            return [k[0] for k in keys]
        return list(keys)

    def _before_images(self, keys: Sequence[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
        current = self._table.get_rows(self._store_keys(keys))
        names = list(self._spec.key)
        return {
            key_text(tuple(row[k] for k in names)): row for row in current.iter_rows(named=True)
        }

    def _get_rows(self, keys: Sequence[tuple[Any, ...]]) -> pl.DataFrame:
        return self._table.get_rows(self._store_keys(keys))

    def _key_frame(self, keys: Sequence[Sequence[Any]]) -> pl.DataFrame:
        schema = self._spec.schema
        return pl.DataFrame(
            {
                name: pl.Series(name, [k[i] for k in keys], dtype=schema[name], strict=False)
                for i, name in enumerate(self._spec.key)
            }
        )

    # -- remote-side writes (worker threads, called from the SyncContext methods) ------------

    def _state_time(self) -> datetime | None:
        """``last_sync`` to persist with this write, at most once a second."""
        now = _utcnow()
        self._last_sync = now
        stamp = now.timestamp()
        if stamp - self._last_state_write < _STATE_EVERY:
            return None
        self._last_state_write = stamp
        return now

    def _apply_remote(self, frame: pl.DataFrame, op: Op, cursor: str | None) -> pl.DataFrame:
        spec = self._spec
        with self._write_lock:
            if op is Op.DELETE:
                keys = list(frame.select(list(spec.key)).iter_rows())
                deleted = self._table.delete(self._store_keys(keys))
                last_sync = self._state_time()
                if cursor is not None or last_sync is not None:
                    self._set_state(cursor, last_sync)
                if deleted.height:
                    if self._cache is not None:
                        self._cache.remove(deleted.select(list(spec.key)))
                    self._queue_change(Change(frame=deleted, source=Source.REMOTE, op=Op.DELETE))
                return deleted
            if op is not Op.UPSERT:
                raise SyncError(f"apply_remote takes Op.UPSERT or Op.DELETE, not {op}")
            if frame.height == 0:
                last_sync = self._state_time()
                if cursor is not None or last_sync is not None:
                    self._set_state(cursor, last_sync)
                return spec.to_frame([])
            written = self._table.upsert(frame, cursor=cursor, last_sync=self._state_time())
            if self._cache is not None:
                self._cache.put(written)
            self._queue_change(Change(frame=written, source=Source.REMOTE, op=Op.UPSERT))
            self._note_lag(written)
            return written

    def _set_state(self, cursor: str | None, last_sync: datetime | None) -> None:
        kwargs: dict[str, Any] = {}
        if cursor is not None:
            kwargs["cursor"] = cursor
        if last_sync is not None:
            kwargs["last_sync"] = last_sync
        self._table.set_state(**kwargs)

    def _acknowledge(self, entry: OutboxEntry, response: Mapping[str, Any] | None) -> None:
        spec = self._spec
        with self._write_lock:
            self._table.outbox_done([entry.id])
            self._pending = max(0, self._pending - 1)
            if response is None or entry.op == "remove" or entry.payload is None:
                return
            try:
                echo = spec.to_frame([dict(response)])
                sent = spec.to_frame([dict(entry.payload)])
            except HubkitError as exc:
                _log.debug(
                    "sink %s: ignoring an echo that does not fit the entity: %s", self.name, exc
                )
                return
            if echo.equals(sent):
                return
            if echo.select(list(spec.key)).row(0) != sent.select(list(spec.key)).row(0):
                return  # an echo of something else (e.g. a server-side id): not our row
            current = self._table.get_rows(self._store_keys([tuple(entry.key)]))
            if current.height != 1 or not current.select(sent.columns).equals(sent):
                return  # a newer local write of this key is waiting: keep it
            written = self._table.upsert(echo)
            if self._cache is not None:
                self._cache.put(written)
            self._queue_change(Change(frame=written, source=Source.REMOTE, op=Op.UPSERT))

    def _reject(
        self, entry: OutboxEntry, error: HubkitError
    ) -> list[tuple[OutboxEntry, HubkitError]]:
        text = key_text(entry.key)
        with self._write_lock:
            later = [
                e
                for e in self._table.outbox_pending()
                if e.id > entry.id and key_text(e.key) == text
            ]
            cascade = Rejected(
                f"an earlier write to key {tuple(entry.key)!r} was rejected: {error}"
            )
            cascade.__cause__ = error
            rejected = [(e, cascade) for e in later] + [(entry, error)]
            for item, item_error in sorted(rejected, key=lambda pair: -pair[0].id):
                restored = self._table.reject(item)
                self._pending = max(0, self._pending - 1)
                if self._cache is not None:
                    if item.before is None:
                        self._cache.remove(self._key_frame([tuple(item.key)]))
                    if restored.height:
                        self._cache.put(restored)
                self._queue_change(
                    Change(
                        frame=restored,
                        source=Source.REMOTE,
                        op=Op.REJECTED,
                        reason=f"{item.op} of key {tuple(item.key)!r} rejected: {item_error}",
                    )
                )
        # oldest first: the order their tickets were queued in
        return sorted(rejected, key=lambda pair: pair[0].id)

    def _supersede(
        self, entries: list[OutboxEntry], frame: pl.DataFrame, push: bool, reason: str
    ) -> bool:
        text = key_text(entries[0].key)
        with self._write_lock:
            current = [e.id for e in self._table.outbox_pending() if key_text(e.key) == text]
            if current != [e.id for e in entries]:
                return False  # a newer local write arrived: settle it in a later round
            if push:
                from hubkit.store import OutboxWrite

                remote_before = self._table.get_rows(self._store_keys([tuple(entries[0].key)]))
                row = frame.row(0, named=True)
                before = remote_before.row(0, named=True) if remote_before.height else None
                written = self._table.upsert(
                    frame,
                    outbox=[
                        OutboxWrite(
                            op="update" if before is not None else "create",
                            key=tuple(entries[0].key),
                            payload=row,
                            before=before,
                        )
                    ],
                )
                self._table.outbox_done([e.id for e in entries])
                self._pending = max(0, self._pending - len(entries)) + 1
                if self._cache is not None:
                    self._cache.put(written)
                self._queue_change(Change(frame=written, source=Source.REMOTE, op=Op.UPSERT))
            else:
                self._table.outbox_done([e.id for e in entries])
                written = self._table.upsert(frame)
                self._pending = max(0, self._pending - len(entries))
                if self._cache is not None:
                    self._cache.put(written)
                self._queue_change(
                    Change(
                        frame=written,
                        source=Source.REMOTE,
                        op=Op.REJECTED,
                        reason=f"key {tuple(entries[0].key)!r}: {reason}",
                    )
                )
            return True

    # -- events and errors -------------------------------------------------------------------

    def _queue_change(self, change: Change) -> None:
        """Queue a change for the handlers (called under the write lock: commit order)."""
        self._call_soon(self._dispatch, change)

    def _call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (interpreter exit): nobody is listening
            _log.debug("sink %s: dropped an event, hubkit's loop is closed", self.name)

    def _dispatch(self, change: Change) -> None:
        for subscription in self._handlers:
            if subscription.closed:
                continue
            try:
                outcome = subscription.handler(change)
                if inspect.isawaitable(outcome):
                    task = asyncio.ensure_future(outcome)
                    self._background.add(task)
                    task.add_done_callback(self._handler_task_done)
            except Exception as exc:
                self.report_error(self._handler_error(subscription, exc))

    def _handler_task_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.report_error(self._handler_error(None, exc))

    def _handler_error(self, subscription: Subscription | None, exc: BaseException) -> HubkitError:
        if isinstance(exc, HubkitError):
            return exc
        where = f" {subscription.handler!r}" if subscription is not None else ""
        error = SyncError(f"change handler{where} raised {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    def _call_error_handler(self, error: HubkitError) -> None:
        try:
            self._error_handler(error)
        except Exception:
            _log.exception("sink %s: the error handler raised", self.name)

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._handlers = tuple(s for s in self._handlers if s is not subscription)

    def _wake(self) -> None:
        event = self._request
        if event is not None:
            self._call_soon(event.set)

    # -- guards and small helpers ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise ClosedError(f"sink {self.name!r} is closed")

    def _check_not_closed(self) -> None:
        if self._closed:
            raise ClosedError(f"sink {self.name!r} is closed")

    def _table_for_use(self) -> TableStore:
        self._check_open()
        return self._table

    def _row_count(self) -> int:
        if self._closed:
            return self._rows_hint
        if self._cache is not None:
            self._rows_hint = len(self._cache)
        elif not self._bridge.in_loop_thread():
            with contextlib.suppress(HubkitError):
                self._rows_hint = self._table.count()
        return self._rows_hint


# -- opening ---------------------------------------------------------------------------------


def _open_parts(
    entity: Any,
    key: str | Sequence[str] | None,
    *,
    store: Store | str | os.PathLike[str] | None,
    cache: FrameCache | _DefaultCache | None,
    table: str | None,
    name: str | None,
) -> tuple[_Parts, list[OutboxEntry], SyncState]:
    """The blocking half of opening: reflect, open the store and table, warm the cache."""
    from hubkit.entity import EntitySpec, reflect
    from hubkit.store import Store

    if isinstance(entity, EntitySpec):
        spec = entity
    else:
        if key is None:
            raise TypeError("open_sink needs key=... (a field name or a tuple of names)")
        spec = reflect(entity, key, table=table)
    owns_store = not isinstance(store, Store)
    store_obj = Store(store) if not isinstance(store, Store) else store
    owns_cache = False
    cache_obj: FrameCache | None = None
    try:
        table_obj = store_obj.table(spec, name=name)
        if isinstance(cache, _DefaultCache):
            from hubkit.cache import FrameCache

            cache_obj = FrameCache()
            owns_cache = True
        else:
            cache_obj = cache
        if cache_obj is not None:
            cache_obj.bind(spec.key, spec.schema)
            cache_obj.load(table_obj.read_all())
        pending = table_obj.outbox_pending()
        state = table_obj.state()
    except BaseException:
        if owns_cache and cache_obj is not None:
            cache_obj.clear()
        if owns_store:
            store_obj.close()
        raise
    parts = _Parts(
        spec=spec,
        store=store_obj,
        owns_store=owns_store,
        table=table_obj,
        cache=cache_obj,
        owns_cache=owns_cache,
    )
    return parts, pending, state


def _build(
    parts: _Parts,
    pending: list[OutboxEntry],
    state: SyncState,
    connection: Connection | None,
    policy: SyncPolicy | None,
    name: str | None,
) -> Sink:
    from hubkit.bridge import get_bridge

    if getattr(policy, "pushes_local_writes", False) and connection is None:
        raise ValueError(f"{type(policy).__name__} pushes local writes and needs a connection")
    return Sink(
        parts,
        connection=connection,
        policy=policy,
        bridge=get_bridge(),
        name=name or parts.table.name,
        pending=pending,
        state=state,
    )


def _release_parts(parts: _Parts) -> None:
    if parts.owns_cache and parts.cache is not None:
        parts.cache.clear()
    if parts.owns_store:
        parts.store.close()


async def _abort_start(sink: Sink) -> None:
    """Undo a partly done ``_astart`` (on the loop)."""
    sink._closing = True
    await sink._stop_policy(0.0)
    connection = sink.connection
    if connection is not None and connection.is_connected:
        with contextlib.suppress(Exception):
            await connection.disconnect()
    sink._closed = True


def open_sink(
    entity: Any,
    key: str | Sequence[str] | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    connection: Connection | None = None,
    policy: SyncPolicy | None = None,
    cache: FrameCache | _DefaultCache | None = DEFAULT_CACHE,
    table: str | None = None,
    name: str | None = None,
) -> Sink:
    """Open a sink for the dataclass ``entity`` keyed by ``key`` (a field name or a tuple).

    ``store``: a path, a SQLAlchemy URL, an open ``Store`` (shared: the sink does not close
    it) or None for ``$HUBKIT_HOME/hubkit.db``. ``connection``: None for a local-only table.
    ``policy``: when and what to sync (``hubkit.policies``); None syncs only on
    ``force_sync()``. ``cache``: a ``FrameCache`` (default: a new one), or None to read from
    the store. ``table`` overrides the table name, ``name`` the sink's name (default: the
    table name; it also keys the sync state and the outbox).

    Blocking; returns only a fully initialised sink (table created, cache warmed from the
    store, connection connected, policy running). Raises ``SchemaError`` for an entity hubkit
    cannot map, and any error of the steps after, having closed what it opened. Must not be
    called on hubkit's loop thread (use ``aopen_sink`` there).
    """
    parts, pending, state = _open_parts(
        entity, key, store=store, cache=cache, table=table, name=name
    )
    try:
        sink = _build(parts, pending, state, connection, policy, name)
        try:
            sink._bridge.run(sink._astart())
        except BaseException:
            with contextlib.suppress(Exception):
                sink._bridge.run(_abort_start(sink))
            raise
    except BaseException:
        _release_parts(parts)
        raise
    return sink


def aopen_sink(
    entity: Any,
    key: str | Sequence[str] | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    connection: Connection | None = None,
    policy: SyncPolicy | None = None,
    cache: FrameCache | _DefaultCache | None = DEFAULT_CACHE,
    table: str | None = None,
    name: str | None = None,
) -> SinkOpening:
    """Async twin of ``open_sink``: the store work runs in a worker thread and the start on
    hubkit's loop, so the caller's loop keeps running. Await it, or use it directly in
    ``async with``::

        sink = await hubkit.aopen_sink(Trade, "trade_id", store=path)
        async with hubkit.aopen_sink(Trade, "trade_id", store=path) as sink:
            ...
    """
    return SinkOpening(
        entity,
        key,
        store=store,
        connection=connection,
        policy=policy,
        cache=cache,
        table=table,
        name=name,
    )


class SinkOpening:
    """What ``aopen_sink`` returns: awaitable (-> ``Sink``) and an async context manager
    (opens on enter, closes on exit). Awaiting it twice opens two sinks."""

    def __init__(self, entity: Any, key: str | Sequence[str] | None, **options: Any) -> None:
        self._entity = entity
        self._key = key
        self._options = options
        self._sink: Sink | None = None

    def __await__(self) -> Generator[Any, None, Sink]:
        return self._open().__await__()

    async def __aenter__(self) -> Sink:
        self._sink = await self._open()
        return self._sink

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            await sink.aclose()

    async def _open(self) -> Sink:
        options = dict(self._options)
        connection: Connection | None = options.pop("connection")
        policy: SyncPolicy | None = options.pop("policy")
        name: str | None = options["name"]
        parts, pending, state = await run_sync_in_worker(
            functools.partial(_open_parts, self._entity, self._key, **options)
        )
        try:
            sink = _build(parts, pending, state, connection, policy, name)
            try:
                await sink._bridge.arun(sink._astart())
            except BaseException:
                with contextlib.suppress(Exception):
                    await sink._bridge.arun(_abort_start(sink))
                raise
        except BaseException:
            await run_sync_in_worker(_release_parts, parts)
            raise
        return sink
