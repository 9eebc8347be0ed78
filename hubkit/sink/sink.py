"""``Sink``: what a user holds. The DAO, the frame, subscriptions, statuses, forced and
scheduled syncs, reconnect, the panel and close, with their ``a``-twins. The policy works
through its own ``SinkContext`` (``hubkit.sink.context``), not through this object."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.bridge import run_sync_in_worker
from hubkit.errors import HubkitError
from hubkit.sink._core import CLOSE_TIMEOUT, Core
from hubkit.sink.dao import SinkDao
from hubkit.sink.events import Subscription
from hubkit.sink.runner import Runner
from hubkit.sink.warm import warm_cache
from hubkit.status import SinkStatus
from hubkit.types import (
    ChangeHandler,
    Connection,
    ErrorHandler,
    ScheduleStatus,
    SyncPolicy,
    SyncStatus,
)

if TYPE_CHECKING:
    from hubkit.cache import FrameCache
    from hubkit.entity import EntitySpec
    from hubkit.store import Store, TableStore

__all__ = ["Sink"]


class Sink:
    """One entity kept in sync; create it with ``open_sink``/``aopen_sink`` (see
    ``hubkit.sink``)."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._runner = Runner(core)
        self.name = core.name
        self.dao = SinkDao(core)

    # -- what it is made of -------------------------------------------------------------------

    @property
    def spec(self) -> EntitySpec:
        """How the entity maps to columns (``hubkit.entity.EntitySpec``)."""
        return self._core.spec

    @property
    def connection(self) -> Connection | None:
        return self._core.connection

    @property
    def policy(self) -> SyncPolicy | None:
        return self._core.policy

    @property
    def store(self) -> Store:
        return self._core.parts.store

    @property
    def table(self) -> TableStore:
        """The store table behind the DAO (blocking; mind the thread you call it from)."""
        return self._core.table

    @property
    def cache(self) -> FrameCache | None:
        return self._core.cache

    # -- statuses ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def sync_status(self) -> SyncStatus:
        return self._core.sync_status

    @property
    def schedule_status(self) -> ScheduleStatus:
        scheduled = self._core.scheduled
        return ScheduleStatus.SCHEDULED if scheduled else ScheduleStatus.NOT_SCHEDULED

    def status(self) -> SinkStatus:
        """A frozen snapshot: statuses, connection, last sync, rows, pending pushes, ...

        Cheap and callable from any thread (no store I/O on hubkit's loop thread)."""
        core = self._core
        connection = core.connection
        return SinkStatus(
            name=self.name,
            sync_status=core.sync_status,
            schedule_status=self.schedule_status,
            connected=bool(connection is not None and connection.is_connected) and not core.closed,
            last_sync=core.last_sync,
            rows=self._row_count(),
            pending_pushes=core.pending,
            reconnects=core.reconnects,
            last_error=core.events.last_error,
            lag=core.lag,
            behind=core.behind,
            rate_limit_remaining=self._rate_limit_remaining(),
            closed=core.closed,
            window=self._window(),
        )

    def _window(self) -> int | None:
        # rows counts a window of a bigger table: say how big the window is
        cache = self._core.cache
        if cache is None or cache.max_rows is None or cache.complete:
            return None
        return cache.max_rows

    def _rate_limit_remaining(self) -> int | None:
        # an HTTP connection exposes the remote's last rate-limit figures
        info = getattr(self._core.connection, "last_rate_limit", None)
        remaining = getattr(info, "remaining", None)
        return remaining if isinstance(remaining, int) else None

    def _row_count(self) -> int:
        core = self._core
        if core.closed:
            return core.rows_hint
        if core.cache is not None:
            core.rows_hint = len(core.cache)
        elif not core.bridge.in_loop_thread():
            with contextlib.suppress(HubkitError):
                core.rows_hint = core.table.count()
        return core.rows_hint

    # -- reading ----------------------------------------------------------------------------

    def frame(self, *, full: bool = False) -> pl.DataFrame:
        """The cached window as a Polars frame: the cache snapshot (reloaded from the store
        first if it is stale), or a store read when the sink has no cache. Later writes never
        change a frame already returned.

        The default cache holds a window, the newest 100,000 rows (``sink.cache.window``
        says which, ``status().window`` whether the table holds more), so on a bigger table
        this is not every row. ``full=True`` returns the whole table: the cache snapshot when
        the cache holds all of it, else a read of every stored row (costing time and memory
        in proportion to the table). ``dao.query()`` reads chosen rows from the store."""
        core = self._core
        table = core.table_for_use()
        cache = core.cache
        if cache is None:
            return table.read_all()
        if cache.is_stale:
            with core.write_lock:
                if cache.is_stale:
                    warm_cache(cache, table)
        if full and not cache.complete:
            return table.read_all()
        return cache.frame()

    def lazy(self, *, full: bool = False) -> pl.LazyFrame:
        """``frame(full=full)`` as a ``LazyFrame`` for query building."""
        core = self._core
        core.table_for_use()
        cache = core.cache
        if cache is not None and not cache.is_stale and (cache.complete or not full):
            return cache.lazy()
        return self.frame(full=full).lazy()

    def scan(
        self, *, start: Any = None, end: Any = None, time_column: str | None = None
    ) -> pl.LazyFrame:
        """A Polars ``LazyFrame`` over the whole stored table, read when collected; column
        selection, filters and ``head`` run in SQL on the table's indexes, and reads stream
        in batches (``collect(engine="streaming")`` aggregates without holding the table).
        ``start``/``end`` keep a time range as in ``dao.query``. Unlike ``lazy()`` it never
        uses the cache: each ``collect`` reads what is stored then (see
        ``TableStore.scan``)."""
        return self._core.table_for_use().scan(start=start, end=end, time_column=time_column)

    # -- events -----------------------------------------------------------------------------

    def subscribe(self, handler: ChangeHandler) -> Subscription:
        """Call ``handler(change)`` for every change (LOCAL and REMOTE upserts and deletes,
        REJECTED writes, GAPs) on hubkit's loop thread; returns the handle that unsubscribes.

        An exception from the handler goes to the error handler (as ``SyncError`` unless it
        is a ``HubkitError``) and never stops the sink or other handlers."""
        self._core.check_open()
        return self._core.events.subscribe(handler)

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Route errors from background work (policy, handlers) to ``handler(exc)``, called on
        hubkit's loop thread. None restores the default: log at WARNING and keep going."""
        self._core.events.set_error_handler(handler)

    # -- syncing ----------------------------------------------------------------------------

    def force_sync(self, timeout: float | None = None) -> None:
        """Run one sync of the policy now and wait for it; its error is raised here as a
        ``HubkitError``. Without a policy a sink with a connection fetches everything."""
        self._core.check_open()
        self._core.bridge.run(self._runner.force_sync(), timeout)

    async def aforce_sync(self) -> None:
        """Async twin of ``force_sync``."""
        self._core.check_open()
        await self._core.bridge.arun(self._runner.force_sync())

    def schedule_sync(self) -> None:
        """Ask for a sync without waiting: ``schedule_status`` is ``SCHEDULED`` until it ran.
        Its errors go to the error handler."""
        self._core.check_open()
        self._runner.schedule()

    def reconnect(self, timeout: float | None = None) -> None:
        """Disconnect and connect again, then restart the policy (a stream resubscribes and
        backfills). Counted in ``status().reconnects``; a failed connect is raised."""
        self._core.check_open()
        self._core.bridge.run(self._runner.reconnect(), timeout)

    async def areconnect(self) -> None:
        """Async twin of ``reconnect``."""
        self._core.check_open()
        await self._core.bridge.arun(self._runner.reconnect())

    # -- closing ----------------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the policy, push what can be pushed of the outbox within ``timeout`` seconds
        (the rest stays durable for next time), disconnect, and release what the sink opened.
        Idempotent (a concurrent second call waits for the first); every later use raises
        ``ClosedError``."""
        if self._core.released:
            return
        if not self._core.closed:
            self._core.bridge.run(self._runner.shutdown(timeout))
        self._release()

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Async twin of ``close``."""
        if self._core.released:
            return
        if not self._core.closed:
            await self._core.bridge.arun(self._runner.shutdown(timeout))
        await run_sync_in_worker(self._release)

    def _release(self) -> None:
        """Blocking part of closing: what the sink owns of the cache and the store (after
        any write still running in another thread has finished). Once only."""
        core = self._core
        with core.lock:
            if core.released:
                return
            core.released = True
        core.events.clear()
        parts = core.parts
        with core.write_lock:
            if parts.owns_cache and parts.cache is not None:
                parts.cache.clear()
            if parts.owns_store:
                parts.store.close()

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

    # -- display ----------------------------------------------------------------------------

    def panel(self, **kwargs: Any) -> Any:
        """A live status panel (ipywidgets, with a text fallback) for this sink."""
        from hubkit.notebook import status_panel

        return status_panel(self, **kwargs)

    def __repr__(self) -> str:
        s = self.status()
        state = "closed" if s.closed else s.sync_status.value
        policy = None if self.policy is None else type(self.policy).__name__
        rows = f"{s.rows} (newest window)" if s.window is not None else str(s.rows)
        return (
            f"<Sink {s.name!r} {state} rows={rows} pending={s.pending_pushes} "
            f"connected={s.connected} policy={policy}>"
        )

    def _repr_html_(self) -> str:
        return self.status()._repr_html_()
