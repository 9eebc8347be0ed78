"""Filling a sink's cache from its store: the window only, never the whole table first.

A bounded ``FrameCache`` (``max_rows``, the default) gets the newest ``max_rows + 1`` rows
by its window column, straight from SQL; the extra row tells the cache whether the table
holds more than the window (``FrameCache.complete``). Without a window column the newest
rows are the last inserted on SQLite and the largest keys elsewhere. On SQLite the table gets
an index on the window column if none starts with it, so that the read costs the same at any
table size (``hubkit.store.window.ensure_window_index``; where it cannot be created, a read-only
file say, the window is read without it, logged as a warning). An unbounded one gets every
row.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hubkit.errors import StoreError

if TYPE_CHECKING:
    from hubkit.cache import FrameCache
    from hubkit.entity import EntitySpec
    from hubkit.store import TableStore

__all__ = ["bind_cache", "time_column", "warm_cache"]

_log = logging.getLogger("hubkit.sink")


def time_column(spec: EntitySpec) -> str | None:
    """The entity's time column: its first datetime column, if any."""
    return next((c.name for c in spec.columns if c.kind == "datetime"), None)


def bind_cache(cache: FrameCache, spec: EntitySpec) -> None:
    """Bind ``cache`` to the entity's key and schema, its window ordered by the time column."""
    cache.bind(spec.key, spec.schema, time_column=time_column(spec))


def warm_cache(cache: FrameCache, table: TableStore) -> None:
    """Load ``cache`` (bound) from ``table``: its window, read alone, or the whole table."""
    if cache.max_rows is None:
        cache.load(table.read_all())
        return
    from hubkit.store.window import ensure_window_index

    by = cache.window_by
    if by is not None:
        try:
            ensure_window_index(table, by)
        except StoreError as exc:  # a read-only file, a long write elsewhere: read without
            _log.warning("cache window of %r read without an index on %r: %s", table.name, by, exc)
    cache.load(table.read_newest(cache.max_rows + 1, by))
