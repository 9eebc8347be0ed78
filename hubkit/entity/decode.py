"""Wire values -> columns: the one conversion every wire decoder of an entity uses.

A column's wire values are converted in two steps, whoever decoded the JSON:

1. **msgspec's lax conversion** for the kinds msgspec types (``LAX``): text, integers,
   floats, booleans, epoch datetimes. ``"0.10"`` -> 0.1, ``"5.0"`` and ``5e3`` -> an int,
   ``"true"``/``"1"``/``1`` -> True, numeric text in the JSON number grammar. The typed
   decoder (``WireDecoder``) has msgspec do this while it parses; for JSON objects already in
   Python, ``decode_column`` asks msgspec for the same conversion, column by column.
2. **the few additions** msgspec does not make, applied only to values it refused
   (``_extend``): ``""`` is no value for every non-text column; ``"+1"`` is 1; numbers are
   text for a text column; fractional or ISO-text datetimes. Anything else is a
   ``DecodeError`` whose ``field`` is the wire name and whose message shows the value.

Then the rules every way into a frame shares (``hubkit.entity.values``): NaN in a float
column is no value (``no_nan``); decimals become their canonical text (``decimal_text``, as
for entities and frames); date, enum and JSON columns have one conversion each here
(``_plain_series``), whatever decoded the JSON. So the typed and the general way in agree by
construction: the general way only ever adds step 2 for values step 1 refused.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import msgspec
import polars as pl

from hubkit.entity.column import (
    EPOCH,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    ONE_US,
    UNITS,
    UTC_US,
    Column,
)
from hubkit.entity.values import (
    conform,
    decimal_text,
    encodes,
    json_text,
    no_nan,
    to_python,
)
from hubkit.errors import DecodeError, ValidationError

__all__ = [
    "LAX",
    "Fail",
    "decode_column",
    "decode_error",
    "raw_text",
    "typed_column",
    "wire_get",
]

#: What msgspec converts each kind of column to (lax mode). Datetimes arrive as the epoch in
#: the column's wire unit.
LAX: Final[Mapping[str, Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "datetime": int,
}
_LAX_LISTS: Final[Mapping[str, Any]] = {
    k: types.GenericAlias(list, (t | None,)) for k, t in LAX.items()
}

# Below this many rows, epoch datetimes are scaled in Python (fewer Polars calls).
_SMALL_EPOCHS: Final = 256

Fail: TypeAlias = Callable[[Any, str], DecodeError]
"""Builds the ``DecodeError`` for a wire value and why it was refused."""


def decode_error(column: Column, value: Any, why: str, item: Any = None) -> DecodeError:
    """The ``DecodeError`` for ``value`` of ``column``; ``item`` is the wire object it came
    from (shown, shortened, as ``raw``)."""
    text = None if item is None else raw_text(item)
    return DecodeError(
        f"field {column.wire_name!r} (column {column.name!r}): {value!r} {why}",
        field=column.wire_name,
        raw=text,
    )


def raw_text(item: Any) -> str:
    """A wire object as JSON text for an error message (at most 500 characters)."""
    try:
        return msgspec.json.encode(item).decode()[:500]
    except (TypeError, ValueError):  # not JSON-ready, or text with a lone surrogate
        return repr(item)[:500]


def wire_get(item: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a wire object; ``MISSING`` when absent (None below a null)."""
    v = item
    for p in path:
        if not isinstance(v, Mapping):
            return MISSING if v is not None else None
        v = v.get(p, MISSING)
        if v is MISSING:
            return MISSING
    return v


# ---------------------------------------------------------------------------------------
# one column


def decode_column(column: Column, raw: list[Any], fail: Fail) -> pl.Series:
    """Raw JSON values of one column (None for null) -> a Series of ``column.dtype``.

    Raises ``DecodeError`` (built by ``fail``) for a value that does not convert or a null in
    a non-nullable column.
    """
    lax = LAX.get(column.kind)
    if lax is None:
        s = _plain_series(column, raw, fail)
    else:
        try:
            values = msgspec.convert(raw, _LAX_LISTS[column.kind], strict=False)
        except msgspec.ValidationError:
            s = typed_column(column, [_one(column, lax, v, fail) for v in raw], raw, fail, True)
        else:
            s = typed_column(column, values, raw, fail, False)
    _require(column, s, raw, fail)
    return s


def typed_column(
    column: Column, values: list[Any], raw: Sequence[Any], fail: Fail, micros: bool
) -> pl.Series:
    """Values of a ``LAX`` kind after msgspec's conversion -> a Series of ``column.dtype``.

    Datetimes are epochs in the wire unit, or microseconds when ``micros``. ``raw`` are the
    wire values (same positions), shown in errors.
    """
    name, kind = column.name, column.kind
    if kind == "datetime":
        if not micros:
            return _epochs(column, values, raw, fail)
        dtype: Any = UTC_US
    else:
        # Polars builds a Series faster from a dtype class than from an equal instance.
        dtype = type(column.dtype)
    try:
        s = pl.Series(name, values, dtype=dtype, strict=True)
    except UnicodeEncodeError:
        at = next(i for i, v in enumerate(values) if isinstance(v, str) and not encodes(v))
        raise fail(raw[at], "is not valid Unicode text (it holds a lone surrogate)") from None
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        at = next(
            (i for i, v in enumerate(values) if v is not None and not INT64_MIN <= v <= INT64_MAX),
            0,
        )
        why = "is out of range for a datetime" if kind == "datetime" else f"is not a valid {kind}"
        raise fail(raw[at], why) from None
    if kind == "float":
        try:
            return no_nan(column, s, values)
        except ValidationError:
            at = next(i for i, v in enumerate(values) if v != v)
            raise fail(raw[at], "is NaN, no value for a non-nullable field") from None
    return s


def _epochs(column: Column, values: list[Any], raw: Sequence[Any], fail: Fail) -> pl.Series:
    """Epochs in the wire unit -> UTC microseconds; ``DecodeError`` for any beyond 64 bits."""
    factor = UNITS[column.wire_unit]
    if factor is None:  # nanoseconds: any integer whose microseconds fit
        low, high = INT64_MIN * 1000, INT64_MAX * 1000
    else:
        low, high = INT64_MIN // factor, INT64_MAX // factor
    if len(values) <= _SMALL_EPOCHS or factor is None:  # few values: scale in Python
        try:
            inside = low <= min(values) and max(values) <= high
        except TypeError:  # None among them
            present = [v for v in values if v is not None]
            inside = not present or (low <= min(present) and max(present) <= high)
        if not inside:
            at = next(i for i, v in enumerate(values) if v is not None and not low <= v <= high)
            raise fail(raw[at], "is out of range for a datetime")
        if factor is None:
            out = [None if v is None else v // 1000 for v in values]
        else:
            out = [None if v is None else v * factor for v in values]
        # Built as integers, then cast: faster than building datetimes from integers.
        return pl.Series(column.name, out, dtype=pl.Int64, strict=True).cast(UTC_US)
    try:
        s = pl.Series(column.name, values, dtype=pl.Int64, strict=True)
        inside = s.null_count() == len(s) or (low <= s.min() and s.max() <= high)  # type: ignore[operator]
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        inside = False
    if not inside:
        at = next(i for i, v in enumerate(values) if v is not None and not low <= v <= high)
        raise fail(raw[at], "is out of range for a datetime")
    return (s * factor).cast(UTC_US)


def _one(column: Column, lax: Any, value: Any, fail: Fail) -> Any:
    """One wire value of a ``LAX`` kind -> its converted value (microseconds for datetimes)."""
    if value is None:
        return None
    try:
        out = msgspec.convert(value, lax, strict=False)
    except msgspec.ValidationError:
        return _extend(column, value, fail)
    if column.kind == "datetime":
        factor = UNITS[column.wire_unit]
        return out // 1000 if factor is None else out * factor
    return out


def _extend(column: Column, value: Any, fail: Fail) -> Any:
    """What the wire conversion adds to msgspec's, for a value msgspec refused."""
    kind = column.kind
    if kind != "str" and isinstance(value, str):
        if not value:
            return None  # "" means "no value" for every non-text column
        if kind != "bool" and value[0] == "+" and value[1:2] not in ("", "+", "-"):
            return _one(column, LAX[kind], value[1:], fail)  # "+1": an explicit sign
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        if number:
            return repr(value) if isinstance(value, float) else str(value)
        raise fail(value, "is not text")
    if kind == "bool":
        raise fail(value, "is not a boolean")
    if kind == "float":
        raise fail(value, "is not a valid float")
    real = _real(value)
    if kind == "int":
        if real is not None and math.isfinite(real) and real != math.floor(real):
            raise fail(value, "is not a whole number")
        raise fail(value, "is not a valid int")
    # datetime: a fractional epoch, or ISO text (read as UTC without an offset)
    if real is not None:
        if not math.isfinite(real):
            raise fail(value, "is not an epoch time or ISO datetime")
        factor = UNITS[column.wire_unit]
        # Nanoseconds are truncated to microseconds, as integer ones are; others rounded.
        return math.floor(real / 1000) if factor is None else round(real * factor)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return (parsed - EPOCH) // ONE_US
    raise fail(value, "is not an epoch time or ISO datetime")


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a number or numeric text (msgspec's grammar), else None."""
    if isinstance(value, bool):
        return None
    try:
        out: float = msgspec.convert(value, float, strict=False)
    except msgspec.ValidationError:
        return None
    return out


def _require(column: Column, s: pl.Series, raw: Sequence[Any], fail: Fail) -> None:
    if not column.nullable and s.null_count():
        at = int(s.is_null().arg_max() or 0)
        raise fail(raw[at], "is no value for a non-nullable field")


def _plain_series(column: Column, raw: list[Any], fail: Fail) -> pl.Series:
    """Decimal, date, enum and JSON wire values -> a Series of ``column.dtype``."""
    name, kind = column.name, column.kind
    if kind == "json":
        out: list[str | None] = []
        for v in raw:
            try:
                out.append(None if v is None else json_text(column, v))
            except ValidationError:
                raise fail(v, "is not a JSON list/object of the declared type") from None
        return pl.Series(name, out, dtype=pl.String)
    if "" in raw:  # "" means "no value" for every non-text column
        raw = [None if isinstance(v, str) and not v else v for v in raw]
    if kind == "decimal":
        texts: list[str | None] = []
        for v in raw:
            try:
                texts.append(None if v is None else decimal_text(column, v))
            except ValidationError:
                raise fail(v, "is not a decimal number") from None
        return pl.Series(name, texts, dtype=pl.String)
    try:
        s = pl.Series(name, raw, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        bad = next((v for v in raw if isinstance(v, Mapping | list)), raw[0])
        raise fail(bad, f"is not a {kind} value") from None
    dt = s.dtype
    nested = isinstance(dt, pl.Struct | pl.List | pl.Array | pl.Object)
    # Polars turns objects mixed with strings into text ("{1}"): look for them in that case.
    if nested or (dt == pl.String and any(isinstance(v, Mapping | list) for v in raw)):
        bad = next((v for v in raw if isinstance(v, Mapping | list)), raw[0])
        raise fail(bad, f"is not a {kind} value")
    # Date and enum values: the same checks as a frame's column (``conform``).
    return conform(column, s, fail)


# ---------------------------------------------------------------------------------------
# the way back


def wire_value(c: Column, value: Any) -> Any:
    """A column value -> its JSON-ready wire form (see ``EntitySpec.to_wire``)."""
    v = to_python(c, value)
    if v is None:
        return None
    if c.kind == "decimal":
        return str(v)
    if c.kind == "enum":
        return v.value
    if c.kind == "date":
        return v.isoformat()
    if c.kind == "datetime":
        micros = (v - EPOCH) // ONE_US
        factor = UNITS[c.wire_unit]
        return micros * 1000 if factor is None else micros // factor
    return v
