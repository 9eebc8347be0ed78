"""The bounded window of a ``FrameCache``: which rows are the newest, and how to say so.

A cache with ``max_rows`` keeps the ``max_rows`` *newest* rows. Newest means the largest
values of the window column (``by``: a sink passes its entity's first datetime column) or,
without one, the most recently written rows. Rows with a null window value count as the
oldest; among rows with the same value, the later written one is the newer.

Decisions only (no I/O, no state): ``newest_positions`` picks the rows to keep and
``describe`` words the window for reprs and statuses.
"""

from __future__ import annotations

from typing import Final

import polars as pl

__all__ = ["DEFAULT_WINDOW", "describe", "newest_positions"]

DEFAULT_WINDOW: Final = 100_000
"""Rows a ``FrameCache()`` keeps (and so a sink opened with the default cache loads)."""


def newest_positions(frame: pl.DataFrame, limit: int, by: str | None) -> pl.Series | None:
    """Row numbers of ``frame``'s ``limit`` newest rows, ascending; None to keep them all.

    ``frame`` is in write order (oldest write first). ``by``: the window column, or None
    for write order (then the result is the last ``limit`` rows).
    """
    if frame.height <= limit:
        return None
    tail = pl.int_range(frame.height - limit, frame.height, eager=True)
    if by is None:
        return tail
    column = frame.get_column(by)
    # Written in order of time (a stream): the newest are the last rows, found in one pass.
    if column.null_count() == 0 and column.is_sorted():
        return tail
    written = pl.int_range(pl.len())
    newest = written.sort_by([column, written], descending=True, nulls_last=True)
    return frame.select(newest.head(limit).sort()).to_series()


def describe(max_rows: int | None, by: str | None, *, complete: bool) -> str:
    """``"whole table"``, or the window in words, e.g. ``"newest 100,000 by 'time' (partial)"``.

    ``complete``: the window holds every row of its source (nothing was left out).
    """
    if max_rows is None:
        return "whole table"
    order = f"by {by!r}" if by is not None else "by write order"
    state = "complete" if complete else "partial"
    return f"newest {max_rows:,} {order} ({state})"
