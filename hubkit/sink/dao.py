"""``SinkDao``: a sink's local reads and writes. A write goes through the sink's one write
path: one transaction (rows, and outbox entries when the policy pushes local writes), then
the cache, then a LOCAL change event."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

import hubkit.sink.outbox as outbox
from hubkit.bridge import run_sync_in_worker
from hubkit.sink._core import Core, default_events
from hubkit.types import Source, SyncStatus
from hubkit.writes import WriteResult

__all__ = ["SinkDao"]


class SinkDao:
    """Reads and writes of a sink's table. Writes go store -> cache -> LOCAL change events,
    with outbox entries in the same transaction when the policy pushes local writes.

    Blocking methods run their store I/O in the calling thread; the ``a``-prefixed twins run
    it in a worker thread and never block an event loop. Rows may be entities, dicts (field
    or column names) or a Polars frame; a key is a scalar, a tuple for a composite key, an
    entity or a dict. A bad value raises ``ValidationError`` and nothing is stored.
    """

    def __init__(self, core: Core) -> None:
        self._core = core

    def upsert(self, rows: Iterable[object] | pl.DataFrame | object) -> WriteResult:
        """Insert or replace rows by key (never duplicates); returns a ``WriteResult``."""
        core = self._core
        core.check_open()
        spec = core.spec
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
            return WriteResult(frame, 0, core.bridge)
        with core.write_lock:
            core.check_open()
            keys = core.key_tuples(frame)
            before = outbox.before_images(spec, core.table.get_rows(keys)) if core.pushes else {}
            change = outbox.local_upsert(spec, frame, before, push=core.pushes)
            written = core.commit(change, default_events(Source.LOCAL)).upserted
            result = WriteResult(written, len(change.outbox_add), core.bridge)
            if change.outbox_add:
                for row_key in keys:
                    core.tickets.add(row_key, result)
                core.sync_status = SyncStatus.OUT_OF_SYNC
        core.wake()  # a pushing policy pushes; another may use writes as a sync trigger
        return result

    def delete(self, keys: Any) -> WriteResult:
        """Delete rows by key: one key, or a list/set/frame of keys. Missing keys are ignored;
        ``WriteResult.frame`` holds the rows that were removed."""
        core = self._core
        core.check_open()
        key_list = self._key_list(keys)
        if not key_list:
            return WriteResult(core.table.empty(), 0, core.bridge)
        with core.write_lock:
            core.check_open()
            current = core.table.get_rows(key_list) if core.pushes else core.table.empty()
            before = outbox.before_images(core.spec, current)
            change = outbox.local_delete(key_list, before, push=core.pushes)
            deleted = core.commit(change, default_events(Source.LOCAL)).deleted
            result = WriteResult(deleted, len(change.outbox_add), core.bridge)
            for item in change.outbox_add:
                core.tickets.add(item.key, result)
            if change.outbox_add:
                core.sync_status = SyncStatus.OUT_OF_SYNC
        if deleted.height:
            core.wake()
        return result

    def get(self, key: Any) -> Any | None:
        """The entity with this key, or None (from the cache when it has the row)."""
        core = self._core
        table = core.table_for_use()
        cache = core.cache
        if cache is not None and not cache.is_stale:
            row = cache.get(key)
            if row is not None:
                return core.spec.to_entity(row)
        return table.get(key)

    def query(
        self,
        where: Any = None,
        *,
        order_by: str | Sequence[str] | None = None,
        descending: bool = False,
        limit: int | None = None,
        start: Any = None,
        end: Any = None,
        time_column: str | None = None,
    ) -> pl.DataFrame:
        """Rows from the store: ``where`` is a mapping (column -> value, or a list for IN) or
        a SQLAlchemy expression; ``start``/``end`` keep rows whose ``time_column`` (default:
        the entity's first datetime column) is in ``[start, end)``; ``order_by``,
        ``descending`` and ``limit`` as in SQL. Runs in SQL, using the table's indexes
        (``TableStore.query``)."""
        table = self._core.table_for_use()
        return table.query(
            where,
            order_by=order_by,
            descending=descending,
            limit=limit,
            start=start,
            end=end,
            time_column=time_column,
        )

    def count(self) -> int:
        """How many rows the table holds (in the store)."""
        return self._core.table_for_use().count()

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
        start: Any = None,
        end: Any = None,
        time_column: str | None = None,
    ) -> pl.DataFrame:
        return await run_sync_in_worker(
            functools.partial(
                self.query,
                where,
                order_by=order_by,
                descending=descending,
                limit=limit,
                start=start,
                end=end,
                time_column=time_column,
            )
        )

    async def acount(self) -> int:
        return await run_sync_in_worker(self.count)

    def _key_list(self, keys: Any) -> list[tuple[Any, ...]]:
        spec = self._core.spec
        if isinstance(keys, pl.DataFrame):
            return list(keys.select(list(spec.key)).iter_rows())
        if isinstance(keys, list | set | frozenset) or inspect.isgenerator(keys):
            return [tuple(spec.key_of(k)) for k in keys]
        return [tuple(spec.key_of(keys))]
