"""The SQL of a cache window: the newest rows of a table, read without reading the rest.

``newest_select(table, limit, by)`` orders by the window column descending (an index whose
first column is ``by`` lets the database read just ``limit`` rows; without one it still
returns only ``limit`` rows, keeping the best ones as it scans), by SQLite's ``rowid`` (the
insertion order) when there is no window column, or by the primary key on other databases.
Null window values come last, as the oldest rows. Decisions only: ``TableStore.read_newest``
runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["newest_select"]


def newest_select(
    table: sa.Table, key: Sequence[str], limit: int, by: str | None, *, dialect: str
) -> sa.Select[Any]:
    """``SELECT * FROM table ORDER BY <newest first> LIMIT limit`` for the ``dialect`` name."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if by is not None:
        column = table.c[by]
        # SQLite already puts NULLs last when descending; an explicit NULLS LAST would keep
        # it from walking an index on the column.
        order = [column.desc() if dialect == "sqlite" else column.desc().nulls_last()]
    elif dialect == "sqlite":
        order = [sa.literal_column("rowid").desc()]
    else:
        order = [table.c[name].desc() for name in key]
    return sa.select(table).order_by(*order).limit(limit)
