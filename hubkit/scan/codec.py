"""hubkit's storage conventions, by Polars dtype: the defaults ``scan_table`` uses.

A store that knows more about its columns (which text column holds decimals in canonical
form, say) passes its own ``ColumnRules`` and decoder instead. Conventions (as written by
``hubkit.store``):

===============  ==================================  ===================================
Polars dtype     stored value                        pushed comparisons
===============  ==================================  ===================================
integers, floats the number                          order
String           the text                            order (byte order on both sides)
Boolean          0 / 1                               order
Datetime         integer since the epoch, its unit   order
Date             ISO ``YYYY-MM-DD`` text             order
Enum/Categorical the member's text                   equality
Decimal          decimal text                        none (text order is not numeric)
anything else    JSON or other text                  none
===============  ==================================  ===================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import polars as pl

from hubkit.scan.predicate import ColumnRules, Comparability

__all__ = ["Decoder", "default_decoder", "default_rules"]

Decoder = Callable[[pl.DataFrame], pl.DataFrame]
"""Stored values (any subset of the columns, as the driver typed them) -> the wanted dtypes."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PER_UNIT: Final = {"us": timedelta(microseconds=1), "ms": timedelta(milliseconds=1)}


def _comparability(dtype: pl.DataType) -> Comparability | None:
    if dtype.is_numeric() and not isinstance(dtype, pl.Decimal):
        return "order"
    if isinstance(dtype, pl.String | pl.Boolean | pl.Datetime | pl.Date):
        return "order"
    if isinstance(dtype, pl.Enum | pl.Categorical):
        return "equality"
    return None


def _encode(dtype: pl.DataType, value: Any) -> Any:
    if isinstance(dtype, pl.Datetime):
        if not isinstance(value, datetime):
            raise TypeError(f"not a datetime: {value!r}")
        if (value.tzinfo is None) != (dtype.time_zone is None):
            raise ValueError("naive and aware datetimes do not compare")
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        since = value - _EPOCH
        if dtype.time_unit == "ns":
            return (since // timedelta(microseconds=1)) * 1000
        return since // _PER_UNIT[dtype.time_unit]
    if isinstance(dtype, pl.Date):
        if not isinstance(value, date) or isinstance(value, datetime):
            raise TypeError(f"not a date: {value!r}")
        return value.isoformat()
    if isinstance(dtype, pl.Boolean):
        return int(bool(value))
    if isinstance(dtype, pl.Enum | pl.Categorical | pl.String) and not isinstance(value, str):
        raise TypeError(f"not a text value: {value!r}")
    return value


def default_rules(schema: pl.Schema) -> ColumnRules:
    """Push rules for columns stored by hubkit's conventions (see the module table)."""
    compare = {name: c for name, dtype in schema.items() if (c := _comparability(dtype))}

    def encode(name: str, value: Any) -> Any:
        return _encode(schema[name], value)

    return ColumnRules(encode=encode, compare=compare)


def _decode_series(dtype: pl.DataType, s: pl.Series) -> pl.Series:
    if isinstance(dtype, pl.Datetime):
        return s.cast(pl.Int64).cast(dtype)
    if isinstance(dtype, pl.Date):
        return s.cast(pl.String).str.to_date("%Y-%m-%d")
    return s.cast(dtype)


def default_decoder(schema: pl.Schema) -> Decoder:
    """A decoder for columns stored by hubkit's conventions (see the module table)."""

    def decode(frame: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame([_decode_series(schema[s.name], s) for s in frame.iter_columns()])

    return decode
