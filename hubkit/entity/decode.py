"""Wire decoding: JSON objects as a remote sends them -> frames of an entity's schema.

``WireDecoder`` is the typed path (msgspec Structs shaped like the wire); ``wire_series``
converts the raw values of one column; ``wire_value`` is the way back (``to_wire``).
"""

from __future__ import annotations

import itertools
import operator
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
import polars as pl

from hubkit.entity.column import EPOCH, MISSING, ONE_US, UNITS, UTC_US, Column
from hubkit.entity.values import bad_decimal, bad_member, first_where, json_text, to_python
from hubkit.errors import DecodeError, ValidationError

if TYPE_CHECKING:
    from hubkit.entity.spec import EntitySpec

__all__ = ["WireDecoder", "wire_get", "wire_series", "wire_value"]


# ---------------------------------------------------------------------------------------
# wire decoding


def decode_error(column: Column, value: Any, items: Sequence[Any], why: str) -> DecodeError:
    raw = next((it for it in items if wire_get(it, column.wire_path) is value), None)
    text = None if raw is None else msgspec.json.encode(raw).decode()[:500]
    return DecodeError(
        f"field {column.wire_name!r} (column {column.name!r}): {value!r} {why}",
        field=column.wire_name,
        raw=text,
    )


def wire_get(item: Any, path: tuple[str, ...]) -> Any:
    v = item
    for p in path:
        if not isinstance(v, Mapping):
            return MISSING if v is not None else None
        v = v.get(p, MISSING)
        if v is MISSING:
            return MISSING
    return v


def epoch_to_utc(s: pl.Series, unit: str) -> pl.Series:
    if unit == "ns":
        return (s // 1000).cast(pl.Int64).cast(UTC_US)
    factor = UNITS[unit]
    assert factor is not None
    if s.dtype.is_float():
        return (s * factor).round().cast(pl.Int64).cast(UTC_US)
    return (s.cast(pl.Int64) * factor).cast(UTC_US)


def wire_series(column: Column, raw: list[Any], items: Sequence[Any]) -> pl.Series:
    """Raw wire values of one column -> a Series of ``column.dtype``, or ``DecodeError``."""
    name, kind = column.name, column.kind

    def fail(value: Any, why: str) -> DecodeError:
        return decode_error(column, value, items, why)

    if kind == "json":
        out: list[str | None] = []
        for v in raw:
            try:
                out.append(None if v is None else json_text(column, v))
            except ValidationError:
                raise fail(v, "is not a JSON list/object of the declared type") from None
        return pl.Series(name, out, dtype=pl.String)
    if kind != "str" and "" in raw:  # "" means "no value" for every non-text column
        raw = [None if isinstance(v, str) and not v else v for v in raw]
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
    if dt == pl.Null:
        return s.cast(column.dtype)

    def cast(series: pl.Series, target: pl.DataType) -> pl.Series:
        try:
            return series.cast(target, strict=True)
        except pl.exceptions.PolarsError:
            lost = series.cast(target, strict=False).is_null() & series.is_not_null()
            raise fail(first_where(series, lost), f"is not a valid {kind}") from None

    if kind == "str":
        if dt == pl.String:
            return s
        if dt == pl.Boolean:
            raise fail(first_where(s, s.is_not_null()), "is not text")
        return s.cast(pl.String)
    if kind == "float":
        if dt == pl.Boolean:
            raise fail(first_where(s, s.is_not_null()), "is not a number")
        return cast(s, pl.Float64())
    if kind == "int":
        if dt == pl.Boolean:
            raise fail(first_where(s, s.is_not_null()), "is not an integer")
        if dt == pl.String:
            try:
                return s.cast(pl.Int64, strict=True)
            except pl.exceptions.PolarsError:
                pass
            # Text spelling a whole number ("5.0", "5e3") is that integer, as the JSON numbers
            # 5.0 and 5e3 are (and as the typed path reads them).
            floats = s.cast(pl.Float64, strict=False)
            lost = floats.is_null() & s.is_not_null()
            if lost.any():
                raise fail(first_where(s, lost), "is not a valid int")
            frac = floats != floats.floor()
            if frac.any():
                raise fail(first_where(s, frac), "is not a whole number")
            return cast(floats, pl.Int64())
        if dt.is_float():
            frac = s != s.floor()
            if frac.any():
                raise fail(first_where(s, frac), "is not a whole number")
        return cast(s, pl.Int64())
    if kind == "bool":
        if dt == pl.Boolean:
            return s
        if dt == pl.String:
            out_b = s.str.to_lowercase().replace_strict(
                {"true": True, "false": False, "1": True, "0": False, "-0": False},
                default=None,
                return_dtype=pl.Boolean,
            )
        elif dt.is_integer():
            out_b = s.replace_strict({1: True, 0: False}, default=None, return_dtype=pl.Boolean)
        else:
            raise fail(first_where(s, s.is_not_null()), "is not a boolean")
        lost = out_b.is_null() & s.is_not_null()
        if lost.any():
            raise fail(first_where(s, lost), "is not a boolean")
        return out_b.rename(name)
    if kind == "decimal":
        if dt == pl.String:
            bad = bad_decimal(s)
            if bad is not MISSING:
                raise fail(bad, "is not a decimal number")
            return s
        if dt.is_numeric():
            return s.cast(pl.String)
        raise fail(first_where(s, s.is_not_null()), "is not a decimal number")
    if kind == "datetime":
        unit = column.wire_unit
        if dt.is_integer() or dt.is_float():
            try:
                return epoch_to_utc(s, unit).rename(name)
            except pl.exceptions.PolarsError:
                raise fail(
                    first_where(s, s.is_not_null()), "is out of range for a datetime"
                ) from None
        if isinstance(dt, pl.Datetime):
            s = s if dt.time_zone else s.dt.replace_time_zone("UTC")
            return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if dt == pl.String:
            for target in (pl.Int64(), pl.Float64()):
                try:
                    return epoch_to_utc(s.cast(target, strict=True), unit).rename(name)
                except pl.exceptions.PolarsError:
                    pass
            try:
                return s.str.to_datetime(time_unit="us", time_zone="UTC", strict=True)
            except pl.exceptions.PolarsError:
                parsed = s.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
                numeric = s.cast(pl.Float64, strict=False).is_not_null()
                lost = parsed.is_null() & s.is_not_null() & ~numeric
                if not lost.any():  # every value is readable, but as different kinds of time
                    raise fail(first_where(s, numeric), "mixes epoch and ISO times") from None
                raise fail(first_where(s, lost), "is not an epoch time or ISO datetime") from None
        raise fail(first_where(s, s.is_not_null()), "is not a datetime")
    if kind == "date":
        if dt == pl.Date:
            return s
        if dt == pl.String:
            parsed = s.str.to_date("%Y-%m-%d", strict=False)
            lost = parsed.is_null() & s.is_not_null()
            if lost.any():
                raise fail(first_where(s, lost), "is not an ISO date")
            return parsed
        raise fail(first_where(s, s.is_not_null()), "is not a date")
    # enum
    if column.dtype == pl.Int64:
        s = cast(s, pl.Int64()) if dt != pl.Boolean else s
        if s.dtype != pl.Int64:
            raise fail(first_where(s, s.is_not_null()), "is not an enum value")
    elif dt != pl.String:
        s = s.cast(pl.String)
    bad = bad_member(column, s)
    if bad is not MISSING:
        raise fail(bad, f"is not a value of {column.py_type.__name__}")
    return s


# ---------------------------------------------------------------------------------------
# typed wire decoding: the fast path of ``from_wire``

#: What msgspec decodes each kind of column as. These kinds need nothing beyond msgspec's own
#: checks and conversions (with ``strict=False``: ``"0.10"`` -> 0.1, ``"1"``/``"true"`` ->
#: True); the other kinds arrive as plain JSON values and take the general column conversion.
_TYPED: Final[Mapping[str, Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "datetime": int,  # epoch in the column's wire unit
}


# Below this many rows, epoch datetimes are scaled in Python (fewer Polars calls).
_SMALL_EPOCHS: Final = 256


class WireDecoder:
    """Decodes wire objects into typed rows with msgspec, then the rows into a frame.

    Made by ``EntitySpec.wire_decoder()`` (once per spec). A msgspec ``Struct`` type mirrors the
    wire shape: one field per wire key (nested objects as nested Structs), typed from the
    column kinds, so msgspec checks and converts text, integers, floats, booleans and epoch
    datetimes while it parses; decimal, date, enum and JSON columns arrive as plain JSON values
    and go through the same conversion as ``from_wire``'s general path. ``frame`` then builds
    each column from one list of values.

    This path accepts a subset of what the general path accepts, and gives the same frame for
    it. Everything else raises here (a missing or null non-nullable field, ``""`` for a
    missing number, a number for a text column, ISO datetimes, ...); callers then run the
    general path, which either converts the value or raises ``DecodeError`` naming the field.
    Thread-safe.
    """

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        paths: dict[str, tuple[str, ...]] = {}
        names = itertools.count()
        self.row_type = _row_struct(
            f"{spec.cls.__name__}Wire", [(c.wire_path, c) for c in spec.columns], names, paths
        )
        self._list_type = types.GenericAlias(list, (self.row_type,))
        self._json = msgspec.json.Decoder(self._list_type | self.row_type, strict=False)
        plan = []
        for c in spec.columns:
            path = paths[c.name]
            get = operator.attrgetter(path[0]) if len(path) == 1 else _nested_getter(path)
            # Polars builds a Series faster from a dtype class than from an equal instance.
            dtype = type(c.dtype) if c.kind in ("str", "int", "float", "bool") else c.dtype
            plan.append((c, get, c.kind in _TYPED, dtype))
        self._plan: tuple[tuple[Column, Callable[[Any], Any], bool, Any], ...] = tuple(plan)

    def decode(self, data: bytes | str) -> list[Any]:
        """JSON text of an array of wire objects, or of one object -> typed rows.

        Raises ``msgspec.DecodeError`` (or its ``ValidationError``) when the text is not in
        the typed shape; the general path then decides."""
        rows = self._json.decode(data)
        return rows if type(rows) is list else [rows]

    def convert(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Wire objects as Python mappings -> typed rows (raises like ``decode``)."""
        rows: list[Any] = msgspec.convert(items, self._list_type, strict=False)
        return rows

    def frame(self, rows: Sequence[Any]) -> pl.DataFrame:
        """Typed rows (from ``decode``/``convert``, possibly of several calls) -> a frame with
        exactly the spec's schema. Raises (any exception) for a value a column refuses."""
        if not rows:
            return self.spec.empty()
        series = []
        small = len(rows) <= _SMALL_EPOCHS
        for column, get, typed, dtype in self._plan:
            values = list(map(get, rows))
            if typed:
                if column.kind != "datetime":
                    s = pl.Series(column.name, values, dtype=dtype, strict=True)
                elif small:  # a few values: scale in Python, one Series call
                    factor = UNITS[column.wire_unit]
                    if factor is None:
                        micros = [None if v is None else v // 1000 for v in values]
                    else:
                        micros = [None if v is None else v * factor for v in values]
                    s = pl.Series(column.name, micros, dtype=UTC_US, strict=True)
                else:
                    epochs = pl.Series(column.name, values, dtype=pl.Int64, strict=True)
                    s = epoch_to_utc(epochs, column.wire_unit).rename(column.name)
            else:
                s = wire_series(column, values, ())
                if not column.nullable and s.null_count():
                    raise ValueError(f"column {column.name!r} has a null")
            series.append(s)
        return pl.DataFrame(series)


def _row_struct(
    name: str,
    entries: Sequence[tuple[tuple[str, ...], Column]],
    names: Iterator[int],
    paths: dict[str, tuple[str, ...]],
) -> type[msgspec.Struct]:
    """A Struct type for wire objects holding ``entries`` (path below this object, column);
    records each column's attribute path on the rows in ``paths``."""
    groups: dict[str, list[tuple[tuple[str, ...], Column]]] = {}
    for path, column in entries:
        groups.setdefault(path[0], []).append((path[1:], column))
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for key, members in groups.items():
        attr = f"f{next(names)}"
        rename[attr] = key
        if not members[0][0]:  # a leaf (reflect refuses paths that are prefixes of others)
            column = members[0][1]
            kind_type = _TYPED.get(column.kind, Any)
            if not column.nullable:
                fields.append((attr, kind_type))
            elif kind_type is Any:
                fields.append((attr, Any, None))
            else:
                fields.append((attr, kind_type | None, None))
            paths[column.name] = (attr,)
            continue
        below: dict[str, tuple[str, ...]] = {}
        sub = _row_struct(f"{name}_{key}", members, names, below)
        if all(column.nullable for _, column in members):
            fields.append((attr, sub | None, None))
        else:
            fields.append((attr, sub))
        for column_name, path in below.items():
            paths[column_name] = (attr, *path)
    return msgspec.defstruct(name, fields, rename=rename, kw_only=True, gc=False)


def _nested_getter(path: tuple[str, ...]) -> Callable[[Any], Any]:
    def get(row: Any) -> Any:
        value = row
        for attr in path:
            if value is None:  # an absent optional object: its fields are null
                return None
            value = getattr(value, attr)
        return value

    return get


def wire_value(c: Column, value: Any) -> Any:
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
