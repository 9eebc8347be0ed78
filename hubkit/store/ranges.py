"""Time ranges of queries and scans: ``start=``/``end=`` on an entity's time column (no I/O).

``query(start=..., end=...)`` and ``scan(start=..., end=...)`` keep the rows whose time is
in ``[start, end)`` (``start`` included, ``end`` excluded; either may be None for an open
side). The time column is ``time_column=`` when given, else the entity's first datetime
column (the one a stream policy follows, ``PublicTrade.time``, ``Kline.start``).

Bounds of a datetime column are aware datetimes, dates (midnight UTC) or ISO 8601 text
(``"2024-01-01"``, ``"2024-01-01T12:00:00Z"``; text without a zone is UTC). Bounds of
another column are values of that column. A range compares the stored values in SQL, so
an index on the time column, or on an equality column then the time column (``("symbol",
"time")``), serves it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

from hubkit.errors import SchemaError, ValidationError

if TYPE_CHECKING:
    from hubkit.entity import Column, EntitySpec

__all__ = ["range_clause", "range_expr", "range_values", "time_column"]

# Stored text that does not order like the values: no range on these.
_UNORDERED = ("decimal", "json")


def time_column(spec: EntitySpec, wanted: str | None = None) -> Column:
    """The column a range applies to: ``wanted``, else ``spec``'s first datetime column."""
    if wanted is not None:
        col = spec.column(wanted)  # ValidationError naming the columns if there is none
        if col.kind in _UNORDERED or (col.kind == "enum" and col.dtype != pl.Int64):
            raise SchemaError(
                f"time_column={wanted!r}: a {col.kind} column is stored as text that does not "
                "sort like its values; a range needs a datetime, date, number or text column"
            )
        return col
    for col in spec.columns:
        if col.kind == "datetime":
            return col
    raise SchemaError(
        f"{spec.cls.__name__} has no datetime column for start=/end=; "
        "name the column to range over with time_column=..."
    )


def _bound(col: Column, name: str, value: Any) -> Any:
    if col.kind != "datetime":
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"{name}={value!r} is not an ISO 8601 date or time "
                "(such as 2024-01-01 or 2024-01-01T12:00:00Z)",
                column=col.name,
            ) from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValidationError(
            f"{name}={value!r} is a naive datetime; hubkit keeps instants in UTC and never "
            "guesses a zone (use .replace(tzinfo=UTC))",
            column=col.name,
        )
    if not isinstance(value, datetime):
        raise ValidationError(
            f"{name}={value!r} is not a time: give an aware datetime, a date or ISO text",
            column=col.name,
        )
    return value


def range_values(col: Column, start: Any, end: Any) -> tuple[Any, Any]:
    """``(start, end)`` as values of ``col`` (None stays None); bad bounds raise
    ``ValidationError`` naming them."""
    lo = None if start is None else _bound(col, "start", start)
    hi = None if end is None else _bound(col, "end", end)
    return lo, hi


def range_clause(table: sa.Table, col: Column, start: Any, end: Any) -> ColumnElement[bool] | None:
    """``start <= col < end`` over ``table`` (None when both bounds are None)."""
    lo, hi = range_values(col, start, end)
    c = table.c[col.name]
    parts = ([c >= lo] if lo is not None else []) + ([c < hi] if hi is not None else [])
    return sa.and_(*parts) if parts else None


def range_expr(col: Column, start: Any, end: Any) -> pl.Expr | None:
    """``start <= col < end`` as a Polars filter (None when both bounds are None)."""
    lo, hi = range_values(col, start, end)
    c = pl.col(col.name)
    parts: list[pl.Expr] = [c >= lo] if lo is not None else []
    if hi is not None:
        parts.append(c < hi)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] & parts[1]
