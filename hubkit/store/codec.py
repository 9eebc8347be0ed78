"""How entity values are stored: column kinds <-> SQL types and stored values (no I/O).

See ``hubkit.store`` for the table of kinds. Frames convert with Series casts (``to_storage``,
``from_storage``); single values with ``storage_value``/``python_value``.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import msgspec
import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from hubkit.entity import Column, to_frame_value, to_python
from hubkit.errors import ValidationError

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def storage_kind(col: Column) -> pl.DataType:
    if col.kind in ("int", "datetime") or (col.kind == "enum" and col.dtype == pl.Int64):
        return pl.Int64()
    if col.kind == "float":
        return pl.Float64()
    if col.kind == "bool":
        return pl.Boolean()
    return pl.String()


def sql_type(col: Column) -> sa.types.TypeEngine[Any]:
    storage = storage_kind(col)
    if col.kind in ("datetime", "date", "decimal", "enum", "json"):
        return _Encoded(col)
    if storage == pl.Int64:
        return sa.BigInteger()
    if storage == pl.Float64:
        return sa.Double()
    if storage == pl.Boolean:
        return sa.Boolean()
    return sa.Text()


def storage_value(col: Column, value: Any) -> Any:
    """A Python or frame value of ``col`` -> the value stored in SQL."""
    if value is None:
        return None
    kind = col.kind
    if kind == "datetime":
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # already microseconds
        return (to_frame_value(col, value) - EPOCH) // _ONE_US
    if kind == "date":
        d = to_frame_value(col, value)
        return d.isoformat() if isinstance(d, date) else d
    if kind in ("decimal", "enum", "json"):
        return to_frame_value(col, value)
    return value


def python_value(col: Column, value: Any) -> Any:
    """A stored SQL value of ``col`` -> the entity's Python value."""
    if value is None:
        return None
    if col.kind == "datetime":
        return EPOCH + timedelta(microseconds=value)
    if col.kind == "bool":
        return bool(value)
    return to_python(col, value)


class _Encoded(TypeDecorator[Any]):
    """A column whose Python values are encoded for storage (datetime, decimal, enum ...).

    Results are left as stored; hubkit decodes whole frames at once.
    """

    impl = sa.Text
    cache_ok = True

    def __init__(self, column: Column) -> None:
        super().__init__()
        self.column = column

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        base = sa.BigInteger() if storage_kind(self.column) == pl.Int64 else sa.Text()
        return dialect.type_descriptor(base)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return storage_value(self.column, value)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def now_us() -> int:
    return time.time_ns() // 1000


def from_us(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def to_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"last_sync {value!r} is a naive datetime; pass an aware one")
    return (value - EPOCH) // _ONE_US


def to_storage(c: Column, s: pl.Series) -> pl.Series:
    if c.kind == "datetime":
        return s.cast(pl.Int64)  # Datetime("us", "UTC") is µs since the epoch underneath
    if c.kind == "date":
        return s.cast(pl.String)  # ISO YYYY-MM-DD
    return s


def from_storage(c: Column, s: pl.Series) -> pl.Series:
    if c.kind == "bool":
        return s.cast(pl.Boolean)  # SQLite hands booleans back as integers
    if c.kind == "datetime":
        return s.cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    if c.kind == "date":
        return s.cast(pl.String).str.to_date("%Y-%m-%d")
    return s.cast(c.dtype)
