"""Values <-> column dtypes: Python and frame values into the frame form of a column, back
into entity values, and whole frames conformed to an entity's schema.

Every conversion raises ``ValidationError(column=...)`` naming the column and the value.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec
import polars as pl

from hubkit.entity.column import EPOCH, INT64_MAX, INT64_MIN, MISSING, ONE_US, UTC_US, Column
from hubkit.errors import ValidationError

__all__ = ["canonical_decimal", "conform", "to_frame_value", "to_python", "typed_series"]

_DECIMAL_TEXT: Final = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_DECIMAL_RE: Final = re.compile(_DECIMAL_TEXT)
# The Python types a value of each simple kind may have (bool is not a number here).
_PY_TYPES: Final[Mapping[str, type | tuple[type, ...]]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
}
# Canonical decimal text (``canonical_decimal``): no sign on zero, no leading or trailing zeros.
_CANONICAL_RE: Final = re.compile(r"^(?:0|-?(?:0\.\d*[1-9]|[1-9]\d*(?:\.\d*[1-9])?))$")


# ---------------------------------------------------------------------------------------
# scalar conversions (one value at a time; used for rows, keys and error paths)


def bad_value(column: Column, value: Any, why: str) -> ValidationError:
    return ValidationError(
        f"column {column.name!r}: {value!r} {why}",
        column=column.name,
    )


def json_text(column: Column, value: Any) -> str:
    if isinstance(value, str):
        try:
            msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise bad_value(column, value, "is not JSON text") from None
        return value
    want: type | tuple[type, ...] = (
        Mapping
        if column.py_type is dict or typing.get_origin(column.py_type) is dict
        else (list, tuple)
    )
    if not isinstance(value, want):
        raise bad_value(column, value, f"is not a {column.py_type!r}")
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise bad_value(column, value, f"cannot be encoded as JSON ({exc})") from None


def decimal_text(column: Column, value: Any) -> str:
    """A decimal value (``Decimal``, int, float, or decimal text) -> its canonical text
    (``canonical_decimal``), or ``ValidationError``."""
    if isinstance(value, bool):
        raise bad_value(column, value, "is not a decimal")
    if isinstance(value, str):
        if _CANONICAL_RE.match(value):
            return value  # already the one text of its value
        # The decimal grammar, not Decimal()'s, which also takes " 1", "1_0" and "NaN".
        if not _DECIMAL_RE.match(value):
            raise bad_value(column, value, "is not a decimal")
    elif isinstance(value, float):
        value = repr(value)  # the shortest text that reads back as this float
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise bad_value(column, value, "is not a decimal") from None
    if not d.is_finite():
        raise bad_value(column, value, "is not a finite decimal")
    return canonical_decimal(d)


def canonical_decimal(value: Decimal) -> str:
    """The one text of a finite decimal's value: plain notation, no exponent, no trailing
    zeros, ``"0"`` for any zero. ``Decimal("0.1000")`` and ``Decimal("1.0E-1")`` -> ``"0.1"``,
    ``Decimal("1E+3")`` -> ``"1000"``, ``Decimal("-0.00")`` -> ``"0"``.

    Exact whatever the number of digits (no rounding to a context precision). Decimal
    columns store and compare this text, so equal values are equal in SQL too; the written
    scale (``"0.1000"``) is not kept.
    """
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def utc_instant(column: Column, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise bad_value(column, value, "is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise bad_value(
            column,
            value,
            "is a naive datetime; hubkit keeps instants in UTC and never guesses a zone "
            "(use datetime.now(UTC) or .replace(tzinfo=UTC))",
        )
    return value.astimezone(UTC)


def to_python(column: Column, value: Any) -> Any:
    """A column value (as in a frame row or an entity) -> the entity's Python value."""
    if value is None:
        return None
    kind = column.kind
    if kind == "decimal":
        return value if isinstance(value, Decimal) else Decimal(decimal_text(column, value))
    if kind == "enum":
        if isinstance(value, column.py_type):
            return value
        try:
            return column.py_type(value)
        except ValueError:
            raise bad_value(column, value, f"is not a value of {column.py_type.__name__}") from None
    if kind == "json":
        if not isinstance(value, str | bytes):
            return value
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise bad_value(column, value, "is not JSON text") from None
    if kind == "datetime":
        return utc_instant(column, value)
    if kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise bad_value(column, value, "is not an ISO date") from None
    return value


def to_frame_value(column: Column, value: Any) -> Any:
    """A Python or frame value -> the value as it sits in a frame of ``column.dtype``."""
    if value is None:
        return None
    kind = column.kind
    if kind == "decimal":
        return decimal_text(column, value)
    if kind == "enum":
        return to_python(column, value).value
    if kind == "json":
        return json_text(column, value)
    if kind == "datetime":
        return utc_instant(column, value)
    if kind == "date":
        v = to_python(column, value)
        if isinstance(v, datetime) or not isinstance(v, date):
            raise bad_value(column, value, "is not a date")
        return v
    return value


# ---------------------------------------------------------------------------------------
# column-wise conversions


def first_where(values: pl.Series, mask: pl.Series) -> Any:
    hit = values.filter(mask.fill_null(False))
    return hit[0] if len(hit) else None


# Series methods that go through the expression engine cost ~100-200 µs a call whatever the
# length, which dominates small stream batches; below this many rows, check in Python.
_SMALL: Final = 4096


def bad_member(column: Column, s: pl.Series) -> Any:
    """The first non-null value of ``s`` that is not a value of the column's enum, or MISSING."""
    members = {m.value for m in column.py_type}
    if len(s) <= _SMALL:
        return next((v for v in s.to_list() if v is not None and v not in members), MISSING)
    bad = ~s.is_in(pl.Series(list(members), dtype=column.dtype).implode()) & s.is_not_null()
    return first_where(s, bad) if bad.any() else MISSING


def _all_canonical(s: pl.Series) -> bool:
    """Whether every non-null string of ``s`` is already canonical decimal text."""
    if len(s) <= _SMALL:
        match = _CANONICAL_RE.match
        return all(v is None or match(v) for v in s.to_list())
    return bool(s.str.contains(_CANONICAL_RE.pattern).fill_null(True).all())


def _fits(value: Any, want: type | tuple[type, ...], kind: str) -> bool:
    if value is None:
        return True
    if not isinstance(value, want):
        return False
    if kind == "int" and isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return True


def typed_series(column: Column, values: list[Any]) -> pl.Series:
    """Python values of one column (entities / dict rows) -> a Series of ``column.dtype``.

    Follows ``no_nan`` for floats; refuses ``True``/``False`` for numbers and text that is
    not valid Unicode (a lone surrogate), naming the column.
    """
    name, kind = column.name, column.kind
    if kind in ("int", "float") and bool in set(map(type, values)):
        bad = next(v for v in values if type(v) is bool)
        raise bad_value(column, bad, f"is a bool, not a valid {kind}")
    if kind in ("str", "int", "float", "bool"):
        try:
            s = pl.Series(name, values, dtype=column.dtype, strict=True)
        except UnicodeEncodeError:
            raise _surrogate(column, values) from None
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            want = _PY_TYPES[kind]
            bad = next((v for v in values if not _fits(v, want, kind)), values[0])
            raise bad_value(column, bad, f"is not a valid {kind}") from None
        return no_nan(column, s, values)
    if kind == "datetime":
        micros = [None if v is None else (utc_instant(column, v) - EPOCH) // ONE_US for v in values]
        return pl.Series(name, micros, dtype=pl.Int64()).cast(UTC_US)
    if kind == "date":
        for v in values:
            if v is not None and (isinstance(v, datetime) or not isinstance(v, date)):
                raise bad_value(column, v, "is not a date")
        return pl.Series(name, values, dtype=pl.Date())
    convert: Callable[[Column, Any], Any] = {
        "decimal": decimal_text,
        "json": json_text,
        "enum": lambda c, v: to_frame_value(c, v),
    }[kind]
    out = [None if v is None else convert(column, v) for v in values]
    try:
        return pl.Series(name, out, dtype=column.dtype)
    except UnicodeEncodeError:
        raise _surrogate(column, out) from None


def _surrogate(column: Column, values: list[Any]) -> ValidationError:
    bad = next(
        (v for v in values if isinstance(v, str) and not encodes(v)),
        values[0],
    )
    return bad_value(
        column,
        bad,
        "is not valid Unicode text (it holds a lone surrogate, as a broken decode "
        "leaves); SQLite and Polars keep UTF-8 only",
    )


def encodes(text: str) -> bool:
    """Whether ``text`` is valid Unicode (encodes as UTF-8: no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_key(column: Column, value: Any) -> None:
    """Raise ``ValidationError`` naming ``column`` unless ``value`` can be one of its keys.

    A key of the wrong type would match no row and be ignored silently (``delete(5)`` on a
    text key), so it is refused instead.
    """
    if value is None:
        raise bad_value(column, value, "is no value for a key column")
    kind = column.kind
    want = _PY_TYPES.get(kind)
    if want is None:
        to_frame_value(column, value)  # raises for a value the column cannot hold
    elif not isinstance(value, want) or (kind != "bool" and isinstance(value, bool)):
        raise bad_value(column, value, f"is not a {kind} key")


def no_nan_in(values: list[Any], s: pl.Series | None = None) -> bool:
    """Whether a list of floats (and None) holds no NaN; ``s``, the same values as a
    Series, is asked instead when the list is long (one Polars call beats a Python sum)."""
    if s is not None and len(values) > 256:
        return not s.is_nan().any()
    try:
        total = sum(values)  # NaN spreads through a sum (inf - inf makes one too)
    except TypeError:  # None among them
        total = sum(v for v in values if v is not None)
    return bool(total == total) or not any(v != v for v in values)  # NaN != NaN


def no_nan(column: Column, s: pl.Series, values: list[Any] | None = None) -> pl.Series:
    """The rule for NaN in a float column: NaN is no value.

    A nullable column keeps it as null (in frames, the cache and the store alike: SQLite
    stores NaN as NULL, so a NaN kept in memory would disagree with what was stored); a
    non-nullable one refuses it with ``ValidationError`` naming the column. ``values``, when
    given, are the Python values of ``s`` (checked without a Polars call when few).
    """
    if column.kind != "float":
        return s
    if values is not None and len(values) <= _SMALL:
        if no_nan_in(values):
            return s
    elif not s.is_nan().any():
        return s
    if not column.nullable:
        row = int(s.is_nan().fill_null(False).arg_max() or 0)
        raise ValidationError(
            f"column {column.name!r} is not nullable but row {row} is NaN (no value); "
            "hubkit reads NaN as no value",
            column=column.name,
        )
    return s.fill_nan(None)


def conform(
    column: Column, s: pl.Series, fail: Callable[[Any, str], Exception] | None = None
) -> pl.Series:
    """A frame column of any dtype -> ``column.dtype``, or ``ValidationError``.

    ``fail(value, why)``, when given, builds the exception instead (the wire decoders pass
    one that makes a ``DecodeError`` naming the wire field).
    """
    name, kind, dt = column.name, column.kind, s.dtype

    def refuse(value: Any, why: str) -> Exception:
        return bad_value(column, value, why) if fail is None else fail(value, why)

    s = s.rename(name)
    if dt == column.dtype and kind not in ("decimal", "enum", "json"):
        return no_nan(column, s)
    if dt == pl.Null:
        return s.cast(column.dtype)

    def wrong() -> Exception:
        if fail is not None:
            return fail(first_where(s, s.is_not_null()), f"is not a valid {kind} value")
        return ValidationError(
            f"column {name!r} has dtype {dt}, which cannot hold {kind} values",
            column=name,
        )

    def cast(target: pl.DataType) -> pl.Series:
        try:
            return s.cast(target, strict=True)
        except pl.exceptions.PolarsError:
            lost = s.cast(target, strict=False).is_null() & s.is_not_null()
            raise refuse(first_where(s, lost), f"does not fit a {kind} column") from None

    if kind == "str":
        if dt == pl.String or isinstance(dt, pl.Categorical | pl.Enum):
            return s.cast(pl.String)
        raise wrong()
    if kind == "int":
        if dt.is_integer():
            return cast(pl.Int64())
        if dt.is_float():
            frac = s != s.floor()
            if frac.any():
                raise refuse(first_where(s, frac), "is not a whole number")
            return cast(pl.Int64())
        raise wrong()
    if kind == "float":
        if dt.is_numeric():
            return no_nan(column, cast(pl.Float64()))
        raise wrong()
    if kind == "bool":
        raise wrong()
    if kind == "decimal":
        if dt == pl.String or dt.is_numeric():
            text = s if dt == pl.String else s.cast(pl.String)
            if _all_canonical(text):
                return text
            values = [None if v is None else decimal_text(column, v) for v in text.to_list()]
            return pl.Series(name, values, dtype=pl.String)
        raise wrong()
    if kind == "datetime":
        if isinstance(dt, pl.Datetime):
            if dt.time_zone is None:
                raise ValidationError(
                    f"column {name!r} holds naive datetimes; hubkit keeps instants in UTC and "
                    f"never guesses a zone (use pl.col({name!r}).dt.replace_time_zone('UTC'))",
                    column=name,
                )
            return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        raise wrong()
    if kind == "date":
        if dt == pl.String:
            parsed = s.str.to_date("%Y-%m-%d", strict=False)
            lost = parsed.is_null() & s.is_not_null()
            if lost.any():
                raise refuse(first_where(s, lost), "is not an ISO date")
            return parsed
        raise wrong()
    if kind == "enum":
        if column.dtype == pl.String and (
            dt == pl.String or isinstance(dt, pl.Categorical | pl.Enum)
        ):
            s = s.cast(pl.String)
        elif column.dtype == pl.Int64 and (dt.is_integer() or dt == pl.String):
            s = cast(pl.Int64())  # text spelling an integer is that integer
        elif column.dtype == pl.Int64 and dt.is_float():
            frac = s != s.floor()
            if frac.any():  # not truncated to a member that was never sent
                raise refuse(first_where(s, frac), "is not a whole number")
            s = cast(pl.Int64())
        else:
            raise wrong()
        bad = bad_member(column, s)
        if bad is not MISSING:
            raise refuse(bad, f"is not a value of {column.py_type.__name__}")
        return s
    # json
    if dt == pl.String:
        return pl.Series(
            name, [None if v is None else json_text(column, v) for v in s], dtype=pl.String
        )
    if isinstance(dt, pl.List | pl.Struct | pl.Array | pl.Object):
        return pl.Series(
            name,
            [None if v is None else json_text(column, v) for v in s.to_list()],
            dtype=pl.String,
        )
    raise wrong()


def check_nulls(column: Column, s: pl.Series) -> None:
    if not column.nullable and s.null_count():
        row = int(s.is_null().arg_max() or 0)
        raise ValidationError(
            f"column {column.name!r} is not nullable but row {row} has no value (None)",
            column=column.name,
        )


def as_utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC)
