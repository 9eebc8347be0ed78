"""``SinkContext``: what a sink offers its policy (the ``hubkit.types.SyncContext`` protocol).

A policy stores through it (remote rows, acknowledgements, rejections, superseded writes),
reads the outbox and the sync state, reports errors and statuses, and waits for requests.
Every store call runs in a worker thread, never on hubkit's loop, and goes through the
sink's one write path (``Core.commit``): one transaction, then the cache, then the events.
The user's ``Sink`` does not offer these methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

import hubkit.sink.outbox as outbox
from hubkit.bridge import run_sync_in_worker, wait_event
from hubkit.changeset import UNSET, ChangeSet
from hubkit.errors import HubkitError, Rejected, SyncError
from hubkit.sink._core import Core, default_events, utcnow
from hubkit.types import Change, Connection, Gap, Op, OutboxEntry, Source, SyncState, SyncStatus
from hubkit.writes import Forward, key_text

if TYPE_CHECKING:
    from hubkit.cache import FrameCache
    from hubkit.entity import EntitySpec
    from hubkit.store import TableStore

__all__ = ["SinkContext", "vanished_keys"]

_log = logging.getLogger("hubkit.sink")

Snapshot = bool | Mapping[str, Any]


def vanished_keys(
    key: Sequence[str], stored: pl.DataFrame, fetched: pl.DataFrame
) -> list[tuple[Any, ...]]:
    """Keys of ``stored`` rows that ``fetched`` (a complete snapshot) no longer has."""
    have = set(fetched.select(list(key)).iter_rows())
    return [k for k in stored.select(list(key)).iter_rows() if k not in have]


class SinkContext:
    """The ``SyncContext`` of one sink (see ``hubkit.types.SyncContext`` for each method)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def spec(self) -> EntitySpec:
        return self._core.spec

    @property
    def connection(self) -> Connection | None:
        return self._core.connection

    @property
    def table(self) -> TableStore:
        """The sink's table in the store (a follower reads it and its change log)."""
        return self._core.table

    @property
    def cache(self) -> FrameCache | None:
        """The sink's frame cache, or None when it reads from the store."""
        return self._core.cache

    # -- storing ------------------------------------------------------------------------------

    async def apply_remote(
        self,
        frame: pl.DataFrame,
        *,
        op: Op = Op.UPSERT,
        cursor: str | None = None,
        snapshot: Snapshot = False,
    ) -> pl.DataFrame:
        """Store remote rows (and ``cursor``) in one transaction off the loop thread, update
        the cache and emit REMOTE changes; returns the rows written (or deleted).

        ``snapshot``: ``frame`` is every remote row (True), or every remote row whose columns
        have the given values (a mapping, e.g. ``{"category": ["linear", "spot"]}``); stored
        rows it does not hold are deleted in the same transaction (a DELETE change follows
        the UPSERT change)."""
        self._core.check_not_closed()
        return await run_sync_in_worker(self._apply_remote, frame, op, cursor, snapshot)

    def _apply_remote(
        self, frame: pl.DataFrame, op: Op, cursor: str | None, snapshot: Snapshot
    ) -> pl.DataFrame:
        core = self._core
        if op not in (Op.UPSERT, Op.DELETE):
            raise SyncError(f"apply_remote takes Op.UPSERT or Op.DELETE, not {op}")
        with core.write_lock:
            last_sync = core.state_time()
            # the cursor and last sync move with the rows, or stay as they are
            state = ChangeSet(
                cursor=UNSET if cursor is None else cursor,
                last_sync=UNSET if last_sync is None else last_sync,
            )
            if op is Op.DELETE:
                change = replace(state, delete=core.key_tuples(frame))
                return core.commit(change, default_events(Source.REMOTE)).deleted
            gone: list[tuple[Any, ...]] = []
            if snapshot is not False:
                fetched = core.spec.to_frame(frame)
                scope = None if snapshot is True else snapshot
                stored = core.table.query(scope) if scope else core.table.read_all()
                gone = vanished_keys(core.spec.key, stored, fetched)
            change = replace(state, upsert=frame, delete=gone)
            written = core.commit(change, default_events(Source.REMOTE)).upserted
            if written.height:
                core.received = True
            core.note_lag(written)
            return written

    async def apply_committed(
        self,
        upserted: pl.DataFrame,
        deleted: pl.DataFrame,
        *,
        committed_at: datetime | None = None,
    ) -> None:
        """Rows another writer already committed to the sink's table: update the cache and
        emit REMOTE changes (UPSERT for ``upserted``, DELETE for ``deleted``), writing
        nothing. ``committed_at``: the writer's commit time of the newest of them; the delay
        from it to now is kept as ``status().behind``."""
        self._core.check_not_closed()
        await run_sync_in_worker(self._apply_committed, upserted, deleted, committed_at)

    def _apply_committed(
        self, upserted: pl.DataFrame, deleted: pl.DataFrame, committed_at: datetime | None
    ) -> None:
        core = self._core
        with core.write_lock:
            cache = core.cache
            if cache is not None:
                if deleted.height:
                    cache.remove(deleted.select(list(core.spec.key)))
                if upserted.height:
                    cache.put(upserted)
            if upserted.height:
                core.events.queue(Change(frame=upserted, source=Source.REMOTE, op=Op.UPSERT))
                core.received = True
                core.note_lag(upserted)
            if deleted.height:
                core.events.queue(Change(frame=deleted, source=Source.REMOTE, op=Op.DELETE))
            if committed_at is not None:
                core.behind = max(0.0, (utcnow() - committed_at).total_seconds())

    async def acknowledge(self, entry: OutboxEntry, response: Mapping[str, Any] | None) -> None:
        """Mark ``entry`` pushed; store the remote's echo of the row with it when it differs
        and no newer local write of that key is waiting. Resolves the write's result."""
        self._core.check_not_closed()
        await run_sync_in_worker(self._acknowledge, entry, response)
        self._core.tickets.settle(entry, None)

    def _acknowledge(self, entry: OutboxEntry, response: Mapping[str, Any] | None) -> None:
        core = self._core
        with core.write_lock:
            current = core.table.empty()
            if response is not None and entry.op != "remove" and entry.payload is not None:
                current = core.table.get_rows([tuple(entry.key)])
            change = outbox.acknowledge(core.spec, entry, response, current)
            core.commit(change, default_events(Source.REMOTE))

    async def reject(self, entry: OutboxEntry, error: HubkitError) -> None:
        """Drop a refused entry, roll its row back and emit REJECTED; later pending writes of
        the same key are rejected with it, all in one transaction. Their results raise."""
        self._core.check_not_closed()
        rejected = await run_sync_in_worker(self._reject, entry, error)
        for item, item_error in rejected:
            self._core.tickets.settle(item, item_error)

    def _reject(
        self, entry: OutboxEntry, error: HubkitError
    ) -> Sequence[tuple[OutboxEntry, HubkitError]]:
        core = self._core
        with core.write_lock:
            decision = outbox.reject(core.spec, entry, error, core.table.outbox_pending())
            core.commit(decision.change, lambda applied: decision.events)
            return decision.rejected

    async def supersede(
        self,
        entries: Sequence[OutboxEntry],
        frame: pl.DataFrame,
        *,
        push: bool,
        reason: str,
    ) -> bool:
        """Replace the pending local writes ``entries`` (all of one key) by ``frame``: the
        remote's row wins (``push=False``, the writes are rejected with ``reason``), or a
        merged row is stored and pushed in their place. False (nothing done) when the key's
        pending writes are no longer exactly ``entries``."""
        core = self._core
        core.check_not_closed()
        if not entries:
            return False
        done = await run_sync_in_worker(self._supersede, list(entries), frame, push, reason)
        if not done:
            return False
        tickets = [t for t in (core.tickets.pop(e) for e in entries) if t is not None]
        if push:
            if tickets:
                core.tickets.add(entries[0].key, Forward(tickets))
        else:
            error = Rejected(f"{reason} (key {tuple(entries[0].key)!r})")
            for ticket in tickets:
                ticket._entry_settled(error)
        return True

    def _supersede(
        self, entries: list[OutboxEntry], frame: pl.DataFrame, push: bool, reason: str
    ) -> bool:
        core = self._core
        key = tuple(entries[0].key)
        text = key_text(key)
        with core.write_lock:
            pending = [e.id for e in core.table.outbox_pending() if key_text(e.key) == text]
            current = core.table.get_rows([key]) if push else core.table.empty()
            change = outbox.supersede(entries, pending, frame, current, push=push)
            if change is None:
                return False

            def events(applied: Any) -> list[Change]:
                if push:
                    return [Change(frame=applied.upserted, source=Source.REMOTE, op=Op.UPSERT)]
                return [
                    Change(
                        frame=applied.upserted,
                        source=Source.REMOTE,
                        op=Op.REJECTED,
                        reason=f"key {key!r}: {reason}",
                    )
                ]

            core.commit(change, events)
            return True

    async def bump(self, entries: Sequence[OutboxEntry]) -> None:
        """Count one more failed push attempt for these outbox entries (durably)."""
        self._core.check_not_closed()
        change = ChangeSet(outbox_bump=[e.id for e in entries])
        await run_sync_in_worker(self._core.commit, change, lambda applied: ())

    # -- reading ------------------------------------------------------------------------------

    async def state(self) -> SyncState:
        self._core.check_not_closed()
        return await run_sync_in_worker(self._core.table.state)

    async def pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Outbox entries waiting to be pushed, oldest first."""
        self._core.check_not_closed()
        return await run_sync_in_worker(self._pending, limit)

    def _pending(self, limit: int | None) -> list[OutboxEntry]:
        core = self._core
        # under the write lock, so the pending count agrees with writes made meanwhile
        with core.write_lock:
            entries = core.table.outbox_pending(limit)
            if limit is None:
                core.pending = len(entries)
            return entries

    async def rows(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The current local rows for the key columns of ``keys`` (absent keys are missing)."""
        core = self._core
        core.check_not_closed()
        wanted = core.key_tuples(keys)
        if not wanted:
            return core.table.empty()
        return await run_sync_in_worker(core.table.get_rows, wanted)

    # -- reporting and waiting ---------------------------------------------------------------

    async def emit_gap(self, gap: Gap) -> None:
        """Emit a GAP change (an empty frame; ``change.gap`` holds the interval)."""
        _log.warning("sink %s: stream gap %s .. %s: %s", self.name, gap.start, gap.end, gap.reason)
        change = Change(
            frame=self._core.table.empty(),
            source=Source.REMOTE,
            op=Op.GAP,
            reason=gap.reason,
            gap=gap,
        )
        self._core.events.queue(change)

    def report_error(self, exc: BaseException) -> None:
        """Hand an error to the error handler (on the loop thread); recorded in ``status()``."""
        self._core.report_error(exc)

    def error_resolved(self, text: str) -> None:
        """The condition behind an error reported earlier is over (e.g. the store takes writes
        again): ``status().last_error`` is cleared if it still shows ``text``."""
        self._core.events.clear_error(text)

    def set_status(self, status: SyncStatus) -> None:
        """Set ``sync_status``. While writes wait to be pushed, "pushed" is not true:
        ``LOCAL_DATA_PUSHED`` stays ``OUT_OF_SYNC`` and ``FULL_SYNC`` becomes
        ``REMOTE_DATA_RECEIVED``."""
        core = self._core
        if core.pushes and core.pending:
            if status is SyncStatus.LOCAL_DATA_PUSHED:
                status = SyncStatus.OUT_OF_SYNC
            elif status is SyncStatus.FULL_SYNC:
                status = SyncStatus.REMOTE_DATA_RECEIVED
        core.sync_status = status
        if status is not SyncStatus.OUT_OF_SYNC:
            core.last_sync = utcnow()
            core.first_sync_done(None)

    async def wait_for_request(self, timeout: float | None) -> bool:
        """Sleep until a local write or a reconnect asks the policy to sync (True), or until
        ``timeout`` seconds pass (False; None waits for ever)."""
        event = self._core.request
        assert event is not None, "the sink is not started"
        if not event.is_set():
            if timeout is not None and timeout <= 0:
                return False
            if not await wait_event(event, timeout):
                return False
        event.clear()
        return True

    def exclusive(self) -> AbstractAsyncContextManager[Any]:
        """Held around a sync step; ``force_sync``/``schedule_sync``/close take it too."""
        assert self._core.sync_lock is not None, "the sink is not started"
        return self._exclusive()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        core = self._core
        lock = core.sync_lock
        assert lock is not None
        task = asyncio.current_task()
        if task is not None:
            core.lock_waiters.add(task)  # seen by a close that holds the lock
        try:
            await lock.acquire()
        finally:
            if task is not None:
                core.lock_waiters.discard(task)
        try:
            yield
        finally:
            lock.release()

    async def ensure_connected(self) -> bool:
        """Connect the sink's connection if it is not connected (True if it had to)."""
        core = self._core
        connection = core.connection
        if connection is None or connection.is_connected:
            return False
        assert core.conn_lock is not None
        async with core.conn_lock:
            if connection.is_connected:
                return False
            await connection.connect()
            core.reconnects += 1
            return True

    def note_reconnect(self) -> None:
        """Count a reconnect the connection made by itself (shown in ``status().reconnects``)."""
        self._core.reconnects += 1
