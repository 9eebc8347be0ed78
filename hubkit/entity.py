"""Entity reflection: a plain ``@dataclass`` is the whole schema.

``reflect(Trade, key="id")`` reads a dataclass's fields and type hints once and returns an
immutable ``EntitySpec``: the columns (their Polars dtypes and kinds), the key, and the
mapping to and from JSON objects as a remote sends them ("the wire")::

    @dataclass
    class Instrument:
        symbol: str
        status: str
        tick_size: Annotated[Decimal, hubkit.wire("priceFilter.tickSize")]
        launch_time: datetime | None = None

    spec = hubkit.reflect(Instrument, key="symbol")
    frame = spec.from_wire(payload["result"]["list"])     # JSON objects -> Polars frame
    spec.from_frame(frame)                                 # -> [Instrument(...), ...]

Field types, the column kind, and how values look in the frames hubkit returns:

============================  =========  ===============================================
field type                    kind       frame dtype and value
============================  =========  ===============================================
``str``                       str        ``String``
``int``                       int        ``Int64``
``float``                     float      ``Float64``
``bool``                      bool       ``Boolean``
``Decimal``                   decimal    ``String`` holding the exact decimal text
                                         (``"0.10"``); Polars' ``Decimal`` has a fixed
                                         scale and at most 38 digits, text has neither
                                         limit. Cast in a query when you need arithmetic.
``datetime``                  datetime   ``Datetime("us", "UTC")``; entities get
                                         UTC-aware datetimes (``datetime.UTC``)
``date``                      date       ``Date``
``Enum`` subclass             enum       ``String`` (or ``Int64`` for int-valued enums)
                                         holding ``member.value``
``list[...]``, ``dict[...]``  json       ``String`` holding JSON text
                                         (``pl.col(c).str.json_decode()`` to unpack)
nested dataclass              (flat)     one column per leaf field, named
                                         ``outer__inner`` (``price_filter__tick_size``)
``X | None``, ``Optional[X]`` nullable   the same, with nulls allowed
============================  =========  ===============================================

Rules that hold everywhere:

- **Time zones.** Datetimes are instants, kept as UTC. Aware values in any zone are
  converted to the equal UTC instant. Naive datetimes from Python code or frames are
  *rejected* with ``ValidationError``: hubkit never guesses a zone, and a naive
  ``datetime.now()`` is local time, not UTC. On the wire, integers and numeric strings are
  epoch times (milliseconds unless ``wire(..., unit=...)`` says otherwise) and ISO text
  without an offset is read as UTC, because a remote's wire format defines its own zone.
- **Nested dataclasses** are flattened into ``outer__inner`` columns (recursively:
  ``a__b__c``). An ``Optional`` nested dataclass makes all its columns nullable; it comes
  back as ``None`` when all of its columns are null.
- **Wire names.** Each attribute maps to the camelCase of its name (``tick_size`` ->
  ``tickSize``; a nested field's path is its parent's path plus its own).
  ``Annotated[T, hubkit.wire("p")]`` renames a field, ``wire("priceFilter.tickSize")``
  gives a dotted path into nested objects; on a nested dataclass field it renames the
  prefix of all its leaves.
- **Keys** are one column name or a tuple of them (a flattened nested column such as
  ``"price_filter__tick_size"`` is allowed); key columns cannot be nullable or JSON.
- **Errors.** An unsupported definition raises ``SchemaError(field=...)`` from ``reflect``;
  a value that does not fit its column raises ``ValidationError(column=...)`` from
  ``to_frame`` (the whole batch is rejected); a wire object that does not decode raises
  ``DecodeError(field=<wire name>)`` from ``from_wire``. Messages name the field or column
  and the offending value.

Conversions are column-wise: values are gathered into one Python list per column and
Polars casts the whole column (``pl.Series(strings).cast(pl.Float64, strict=True)``).
``from_wire`` first tries a typed path (``EntitySpec.wire_decoder()``): msgspec converts the
wire objects into Structs shaped like the wire, typed from the columns, and the columns are
built from those; anything that path does not accept goes through the general conversion,
which gives the same frame or the same error.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import itertools
import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Union

import msgspec
import polars as pl

from hubkit.errors import DecodeError, SchemaError, ValidationError

__all__ = ["KINDS", "Column", "EntitySpec", "Wire", "WireDecoder", "reflect", "wire"]

KINDS: Final = ("str", "int", "float", "bool", "decimal", "datetime", "date", "enum", "json")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_UNITS: Final = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_DECIMAL_TEXT: Final = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_UTC_US: Final = pl.Datetime("us", "UTC")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class _Missing(enum.Enum):
    """Marks a value absent from a dict row or a wire object (distinct from ``None``)."""

    MISSING = 0


_MISSING: Final = _Missing.MISSING


@dataclasses.dataclass(frozen=True)
class Wire:
    """Wire metadata for one field; build it with ``hubkit.wire(...)``."""

    path: tuple[str, ...] | None = None
    unit: str = "ms"


def wire(path: str | None = None, *, unit: str = "ms") -> Wire:
    """Mark a field's wire name or dotted path: ``Annotated[float, hubkit.wire("p")]``.

    ``path`` replaces the default camelCase name; dots walk into nested objects
    (``"priceFilter.tickSize"``). ``unit`` is the epoch unit of integer or numeric-string
    datetimes on the wire (``"s"``, ``"ms"`` (default), ``"us"`` or ``"ns"``).
    """
    if unit not in _UNITS:
        raise SchemaError(f"wire unit must be one of {sorted(_UNITS)}, not {unit!r}")
    if path is None:
        return Wire(None, unit)
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        raise SchemaError(f"wire path {path!r} has an empty segment")
    return Wire(parts, unit)


@dataclasses.dataclass(frozen=True)
class Column:
    """One SQL/Polars column of an entity."""

    name: str  # "outer__inner" for nested dataclass fields
    attr_path: tuple[str, ...]  # attribute path on the entity: ("price_filter", "tick_size")
    wire_path: tuple[str, ...]  # JSON path on the wire: ("priceFilter", "tickSize")
    kind: str  # one of KINDS
    nullable: bool
    dtype: pl.DataType  # Polars dtype in frames
    py_type: Any  # the unwrapped hint; the Enum class for "enum"
    wire_unit: str = "ms"  # epoch unit of datetimes on the wire

    @property
    def wire_name(self) -> str:
        """The dotted wire path, as named in ``DecodeError.field``."""
        return ".".join(self.wire_path)


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    if not head and rest:  # keep a leading underscore's word as written
        return name
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _enum_dtype(cls: type[enum.Enum], field: str) -> pl.DataType:
    values = [m.value for m in cls]
    if not values:
        raise SchemaError(f"field {field!r}: enum {cls.__name__} has no members", field=field)
    if all(isinstance(v, str) for v in values):
        return pl.String()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pl.Int64()
    raise SchemaError(
        f"field {field!r}: enum {cls.__name__} must have all-str or all-int values",
        field=field,
    )


_SCALARS: Final[dict[Any, tuple[str, pl.DataType]]] = {
    str: ("str", pl.String()),
    bool: ("bool", pl.Boolean()),
    int: ("int", pl.Int64()),
    float: ("float", pl.Float64()),
    Decimal: ("decimal", pl.String()),
    datetime: ("datetime", _UTC_US),
    date: ("date", pl.Date()),
}


def _unwrap(hint: Any) -> tuple[Any, bool, Wire | None]:
    """Strip ``Annotated`` and ``Optional``: (inner hint, nullable, wire marker)."""
    marker: Wire | None = None
    nullable = False
    for _ in range(3):  # Annotated[Optional[Annotated[T, ...]], ...] at most
        if typing.get_origin(hint) is Annotated:
            base, *meta = typing.get_args(hint)
            for m in meta:
                if isinstance(m, Wire):
                    marker = m
            hint = base
            continue
        if typing.get_origin(hint) in (Union, types.UnionType):
            args = typing.get_args(hint)
            rest = [a for a in args if a is not type(None)]
            if len(rest) == len(args) or len(rest) != 1:
                return hint, nullable, marker  # a real union: reported as unsupported
            nullable = True
            hint = rest[0]
            continue
        break
    return hint, nullable, marker


def _resolve_hints(cls: type, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError as exc:
        missing = getattr(exc, "name", None)
        culprit = next(
            (
                f.name
                for f in dataclasses.fields(cls)
                if isinstance(f.type, str) and missing and missing in f.type
            ),
            None,
        )
        label = ".".join((*prefix, culprit)) if culprit else None
        raise SchemaError(
            f"field {label or '?'!r} of {cls.__name__}: cannot resolve its type hint ({exc}); "
            "define the types it names at module level",
            field=label,
        ) from exc


def _columns(
    cls: type,
    *,
    attr_prefix: tuple[str, ...],
    wire_prefix: tuple[str, ...],
    nullable_parent: bool,
    seen: tuple[type, ...],
) -> list[Column]:
    hints = _resolve_hints(cls, attr_prefix)
    out: list[Column] = []
    for f in dataclasses.fields(cls):
        attr_path = (*attr_prefix, f.name)
        label = ".".join(attr_path)
        if not f.init:
            raise SchemaError(
                f"field {label!r}: init=False fields are not supported (they cannot be "
                "restored from the store)",
                field=label,
            )
        hint, nullable, marker = _unwrap(hints[f.name])
        nullable = nullable or nullable_parent
        own = marker.path if marker and marker.path else (_camel(f.name),)
        wire_path = (*wire_prefix, *own)
        unit = marker.unit if marker else "ms"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint in seen:
                raise SchemaError(f"field {label!r}: recursive dataclass", field=label)
            out += _columns(
                hint,
                attr_prefix=attr_path,
                wire_prefix=wire_path,
                nullable_parent=nullable,
                seen=(*seen, hint),
            )
            continue
        kind: str
        dtype: pl.DataType
        if hint in _SCALARS:
            kind, dtype = _SCALARS[hint]
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            kind, dtype = "enum", _enum_dtype(hint, label)
        elif hint in (list, dict) or typing.get_origin(hint) in (list, dict):
            kind, dtype = "json", pl.String()
        else:
            raise SchemaError(
                f"field {label!r}: unsupported type {hints[f.name]!r}; use str, int, float, "
                "bool, Decimal, datetime, date, an Enum, list/dict, a dataclass, or X | None",
                field=label,
            )
        out.append(
            Column(
                name="__".join(attr_path),
                attr_path=attr_path,
                wire_path=wire_path,
                kind=kind,
                nullable=nullable,
                dtype=dtype,
                py_type=hint,
                wire_unit=unit,
            )
        )
    return out


def reflect(cls: type, key: str | Sequence[str], *, table: str | None = None) -> EntitySpec:
    """Reflect a dataclass into an ``EntitySpec`` (cached per class, key and table name).

    ``key`` is a column name or a sequence of them (a dotted attribute path such as
    ``"price_filter.tick_size"`` is accepted for a flattened column). ``table`` defaults to
    the snake_case class name. Raises ``SchemaError`` naming the field for a non-dataclass,
    an unsupported type, an unknown or nullable key field.
    """
    keys = (key,) if isinstance(key, str) else tuple(key)
    return _reflect(cls, keys, table)


@functools.lru_cache(maxsize=256)
def _reflect(cls: type, key: tuple[str, ...], table: str | None) -> EntitySpec:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise SchemaError(f"{cls!r} is not a dataclass; decorate it with @dataclass")
    columns = _columns(cls, attr_prefix=(), wire_prefix=(), nullable_parent=False, seen=(cls,))
    if not columns:
        raise SchemaError(f"{cls.__name__} has no fields")
    by_name: dict[str, Column] = {}
    for c in columns:
        if c.name in by_name:
            raise SchemaError(
                f"field {c.name!r}: two fields map to column {c.name!r}", field=c.name
            )
        by_name[c.name] = c
    paths = sorted(c.wire_path for c in columns)
    for a, b in itertools.pairwise(paths):
        if b[: len(a)] == a:
            name = next(c.name for c in columns if c.wire_path == b)
            raise SchemaError(
                f"field {name!r}: wire path {'.'.join(b)!r} clashes with {'.'.join(a)!r}",
                field=name,
            )
    if not key:
        raise SchemaError(f"{cls.__name__}: the key names no field")
    key_cols: list[str] = []
    for k in key:
        name = k.replace(".", "__")
        col = by_name.get(name)
        if col is None:
            raise SchemaError(
                f"key field {k!r} is not a column of {cls.__name__} "
                f"(columns: {', '.join(by_name)})",
                field=k,
            )
        if col.nullable:
            raise SchemaError(f"key field {k!r} is nullable; keys must always be set", field=k)
        if col.kind == "json":
            raise SchemaError(f"key field {k!r} is a JSON column; it cannot be a key", field=k)
        if name in key_cols:
            raise SchemaError(f"key field {k!r} is named twice", field=k)
        key_cols.append(name)
    return EntitySpec(
        cls=cls,
        table=table or _snake(cls.__name__),
        columns=tuple(columns),
        key=tuple(key_cols),
    )


# ---------------------------------------------------------------------------------------
# scalar conversions (one value at a time; used for rows, keys and error paths)


def _bad(column: Column, value: Any, why: str) -> ValidationError:
    return ValidationError(
        f"column {column.name!r}: {value!r} {why}",
        column=column.name,
    )


def _json_text(column: Column, value: Any) -> str:
    if isinstance(value, str):
        try:
            msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise _bad(column, value, "is not JSON text") from None
        return value
    want: type | tuple[type, ...] = (
        Mapping
        if column.py_type is dict or typing.get_origin(column.py_type) is dict
        else (list, tuple)
    )
    if not isinstance(value, want):
        raise _bad(column, value, f"is not a {column.py_type!r}")
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise _bad(column, value, f"cannot be encoded as JSON ({exc})") from None


def _decimal_text(column: Column, value: Any) -> str:
    if isinstance(value, bool):
        raise _bad(column, value, "is not a decimal")
    if isinstance(value, float):
        value = repr(value)
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise _bad(column, value, "is not a decimal") from None
    if not d.is_finite():
        raise _bad(column, value, "is not a finite decimal")
    return str(d)


def _utc(column: Column, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise _bad(column, value, "is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _bad(
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
        return value if isinstance(value, Decimal) else Decimal(_decimal_text(column, value))
    if kind == "enum":
        if isinstance(value, column.py_type):
            return value
        try:
            return column.py_type(value)
        except ValueError:
            raise _bad(column, value, f"is not a value of {column.py_type.__name__}") from None
    if kind == "json":
        if not isinstance(value, str | bytes):
            return value
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise _bad(column, value, "is not JSON text") from None
    if kind == "datetime":
        return _utc(column, value)
    if kind == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise _bad(column, value, "is not an ISO date") from None
    return value


def to_frame_value(column: Column, value: Any) -> Any:
    """A Python or frame value -> the value as it sits in a frame of ``column.dtype``."""
    if value is None:
        return None
    kind = column.kind
    if kind == "decimal":
        return _decimal_text(column, value)
    if kind == "enum":
        return to_python(column, value).value
    if kind == "json":
        return _json_text(column, value)
    if kind == "datetime":
        return _utc(column, value)
    if kind == "date":
        v = to_python(column, value)
        if isinstance(v, datetime) or not isinstance(v, date):
            raise _bad(column, value, "is not a date")
        return v
    return value


# ---------------------------------------------------------------------------------------
# column-wise conversions


def _first(values: pl.Series, mask: pl.Series) -> Any:
    hit = values.filter(mask.fill_null(False))
    return hit[0] if len(hit) else None


# Series methods that go through the expression engine cost ~100-200 µs a call whatever the
# length, which dominates small stream batches; below this many rows, check in Python.
_SMALL: Final = 4096
_DECIMAL_RE: Final = re.compile(_DECIMAL_TEXT)


def _bad_member(column: Column, s: pl.Series) -> Any:
    """The first non-null value of ``s`` that is not a value of the column's enum, or MISSING."""
    members = {m.value for m in column.py_type}
    if len(s) <= _SMALL:
        return next((v for v in s.to_list() if v is not None and v not in members), _MISSING)
    bad = ~s.is_in(pl.Series(list(members), dtype=column.dtype).implode()) & s.is_not_null()
    return _first(s, bad) if bad.any() else _MISSING


def _bad_decimal(s: pl.Series) -> Any:
    """The first non-null string of ``s`` that is not decimal text, or MISSING."""
    if len(s) <= _SMALL:
        match = _DECIMAL_RE.match
        return next((v for v in s.to_list() if v is not None and not match(v)), _MISSING)
    ok = s.str.contains(_DECIMAL_TEXT)
    return _MISSING if ok.fill_null(True).all() else _first(s, ~ok)


def _fits(value: Any, want: type | tuple[type, ...], kind: str) -> bool:
    if value is None:
        return True
    if not isinstance(value, want):
        return False
    if kind == "int" and isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return True


def _typed_series(column: Column, values: list[Any]) -> pl.Series:
    """Python values of one column (entities / dict rows) -> a Series of ``column.dtype``."""
    name, kind = column.name, column.kind
    if kind in ("str", "int", "float", "bool"):
        try:
            return pl.Series(name, values, dtype=column.dtype, strict=True)
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            wants: dict[str, type | tuple[type, ...]] = {
                "str": str,
                "int": int,
                "float": (int, float),
                "bool": bool,
            }
            want = wants[kind]
            bad = next((v for v in values if not _fits(v, want, kind)), values[0])
            raise _bad(column, bad, f"is not a valid {kind}") from None
    if kind == "datetime":
        micros = [None if v is None else (_utc(column, v) - _EPOCH) // _ONE_US for v in values]
        return pl.Series(name, micros, dtype=pl.Int64()).cast(_UTC_US)
    if kind == "date":
        for v in values:
            if v is not None and (isinstance(v, datetime) or not isinstance(v, date)):
                raise _bad(column, v, "is not a date")
        return pl.Series(name, values, dtype=pl.Date())
    convert: Callable[[Column, Any], Any] = {
        "decimal": _decimal_text,
        "json": _json_text,
        "enum": lambda c, v: to_frame_value(c, v),
    }[kind]
    out = [None if v is None else convert(column, v) for v in values]
    return pl.Series(name, out, dtype=column.dtype)


def _conform(column: Column, s: pl.Series) -> pl.Series:
    """A frame column of any dtype -> ``column.dtype``, or ``ValidationError``."""
    name, kind, dt = column.name, column.kind, s.dtype
    s = s.rename(name)
    if dt == column.dtype and kind not in ("decimal", "enum", "json"):
        return s
    if dt == pl.Null:
        return s.cast(column.dtype)

    def wrong() -> ValidationError:
        return ValidationError(
            f"column {name!r} has dtype {dt}, which cannot hold {kind} values",
            column=name,
        )

    def cast(target: pl.DataType) -> pl.Series:
        try:
            return s.cast(target, strict=True)
        except pl.exceptions.PolarsError:
            lost = s.cast(target, strict=False).is_null() & s.is_not_null()
            raise _bad(column, _first(s, lost), f"does not fit a {kind} column") from None

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
                raise _bad(column, _first(s, frac), "is not a whole number")
            return cast(pl.Int64())
        raise wrong()
    if kind == "float":
        if dt.is_numeric():
            return cast(pl.Float64())
        raise wrong()
    if kind == "bool":
        raise wrong()
    if kind == "decimal":
        if dt == pl.String:
            bad = _bad_decimal(s)
            if bad is not _MISSING:
                raise _bad(column, bad, "is not decimal text")
            return s
        if dt.is_numeric():
            return cast(pl.String())
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
                raise _bad(column, _first(s, lost), "is not an ISO date")
            return parsed
        raise wrong()
    if kind == "enum":
        if column.dtype == pl.String and (
            dt == pl.String or isinstance(dt, pl.Categorical | pl.Enum)
        ):
            s = s.cast(pl.String)
        elif column.dtype == pl.Int64 and dt.is_integer():
            s = cast(pl.Int64())
        else:
            raise wrong()
        bad = _bad_member(column, s)
        if bad is not _MISSING:
            raise _bad(column, bad, f"is not a value of {column.py_type.__name__}")
        return s
    # json
    if dt == pl.String:
        return pl.Series(
            name, [None if v is None else _json_text(column, v) for v in s], dtype=pl.String
        )
    if isinstance(dt, pl.List | pl.Struct | pl.Array | pl.Object):
        return pl.Series(
            name,
            [None if v is None else _json_text(column, v) for v in s.to_list()],
            dtype=pl.String,
        )
    raise wrong()


def _check_nulls(column: Column, s: pl.Series) -> None:
    if not column.nullable and s.null_count():
        row = int(s.is_null().arg_max() or 0)
        raise ValidationError(
            f"column {column.name!r} is not nullable but row {row} has no value (None)",
            column=column.name,
        )


# ---------------------------------------------------------------------------------------
# wire decoding


def _decode_error(column: Column, value: Any, items: Sequence[Any], why: str) -> DecodeError:
    raw = next((it for it in items if _wire_get(it, column.wire_path) is value), None)
    text = None if raw is None else msgspec.json.encode(raw).decode()[:500]
    return DecodeError(
        f"field {column.wire_name!r} (column {column.name!r}): {value!r} {why}",
        field=column.wire_name,
        raw=text,
    )


def _wire_get(item: Any, path: tuple[str, ...]) -> Any:
    v = item
    for p in path:
        if not isinstance(v, Mapping):
            return _MISSING if v is not None else None
        v = v.get(p, _MISSING)
        if v is _MISSING:
            return _MISSING
    return v


def _epoch_to_utc(s: pl.Series, unit: str) -> pl.Series:
    if unit == "ns":
        return (s // 1000).cast(pl.Int64).cast(_UTC_US)
    factor = _UNITS[unit]
    assert factor is not None
    if s.dtype.is_float():
        return (s * factor).round().cast(pl.Int64).cast(_UTC_US)
    return (s.cast(pl.Int64) * factor).cast(_UTC_US)


def _wire_series(column: Column, raw: list[Any], items: Sequence[Any]) -> pl.Series:
    """Raw wire values of one column -> a Series of ``column.dtype``, or ``DecodeError``."""
    name, kind = column.name, column.kind

    def fail(value: Any, why: str) -> DecodeError:
        return _decode_error(column, value, items, why)

    if kind == "json":
        out: list[str | None] = []
        for v in raw:
            try:
                out.append(None if v is None else _json_text(column, v))
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
            raise fail(_first(series, lost), f"is not a valid {kind}") from None

    if kind == "str":
        if dt == pl.String:
            return s
        if dt == pl.Boolean:
            raise fail(_first(s, s.is_not_null()), "is not text")
        return s.cast(pl.String)
    if kind == "float":
        if dt == pl.Boolean:
            raise fail(_first(s, s.is_not_null()), "is not a number")
        return cast(s, pl.Float64())
    if kind == "int":
        if dt == pl.Boolean:
            raise fail(_first(s, s.is_not_null()), "is not an integer")
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
                raise fail(_first(s, lost), "is not a valid int")
            frac = floats != floats.floor()
            if frac.any():
                raise fail(_first(s, frac), "is not a whole number")
            return cast(floats, pl.Int64())
        if dt.is_float():
            frac = s != s.floor()
            if frac.any():
                raise fail(_first(s, frac), "is not a whole number")
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
            raise fail(_first(s, s.is_not_null()), "is not a boolean")
        lost = out_b.is_null() & s.is_not_null()
        if lost.any():
            raise fail(_first(s, lost), "is not a boolean")
        return out_b.rename(name)
    if kind == "decimal":
        if dt == pl.String:
            bad = _bad_decimal(s)
            if bad is not _MISSING:
                raise fail(bad, "is not a decimal number")
            return s
        if dt.is_numeric():
            return s.cast(pl.String)
        raise fail(_first(s, s.is_not_null()), "is not a decimal number")
    if kind == "datetime":
        unit = column.wire_unit
        if dt.is_integer() or dt.is_float():
            try:
                return _epoch_to_utc(s, unit).rename(name)
            except pl.exceptions.PolarsError:
                raise fail(_first(s, s.is_not_null()), "is out of range for a datetime") from None
        if isinstance(dt, pl.Datetime):
            s = s if dt.time_zone else s.dt.replace_time_zone("UTC")
            return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if dt == pl.String:
            for target in (pl.Int64(), pl.Float64()):
                try:
                    return _epoch_to_utc(s.cast(target, strict=True), unit).rename(name)
                except pl.exceptions.PolarsError:
                    pass
            try:
                return s.str.to_datetime(time_unit="us", time_zone="UTC", strict=True)
            except pl.exceptions.PolarsError:
                parsed = s.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
                numeric = s.cast(pl.Float64, strict=False).is_not_null()
                lost = parsed.is_null() & s.is_not_null() & ~numeric
                if not lost.any():  # every value is readable, but as different kinds of time
                    raise fail(_first(s, numeric), "mixes epoch and ISO times") from None
                raise fail(_first(s, lost), "is not an epoch time or ISO datetime") from None
        raise fail(_first(s, s.is_not_null()), "is not a datetime")
    if kind == "date":
        if dt == pl.Date:
            return s
        if dt == pl.String:
            parsed = s.str.to_date("%Y-%m-%d", strict=False)
            lost = parsed.is_null() & s.is_not_null()
            if lost.any():
                raise fail(_first(s, lost), "is not an ISO date")
            return parsed
        raise fail(_first(s, s.is_not_null()), "is not a date")
    # enum
    if column.dtype == pl.Int64:
        s = cast(s, pl.Int64()) if dt != pl.Boolean else s
        if s.dtype != pl.Int64:
            raise fail(_first(s, s.is_not_null()), "is not an enum value")
    elif dt != pl.String:
        s = s.cast(pl.String)
    bad = _bad_member(column, s)
    if bad is not _MISSING:
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
                    factor = _UNITS[column.wire_unit]
                    if factor is None:
                        micros = [None if v is None else v // 1000 for v in values]
                    else:
                        micros = [None if v is None else v * factor for v in values]
                    s = pl.Series(column.name, micros, dtype=_UTC_US, strict=True)
                else:
                    epochs = pl.Series(column.name, values, dtype=pl.Int64, strict=True)
                    s = _epoch_to_utc(epochs, column.wire_unit).rename(column.name)
            else:
                s = _wire_series(column, values, ())
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


# ---------------------------------------------------------------------------------------
# rebuilding entities


@dataclasses.dataclass(frozen=True)
class _Node:
    """How to build one dataclass from a row of column values."""

    cls: type
    fields: tuple[tuple[str, int | _Node], ...]
    optional: bool
    leaves: tuple[int, ...]

    def build(self, values: Sequence[Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for attr, sub in self.fields:
            if isinstance(sub, int):
                kwargs[attr] = values[sub]
            elif sub.optional and all(values[i] is None for i in sub.leaves):
                kwargs[attr] = None
            else:
                kwargs[attr] = sub.build(values)
        return self.cls(**kwargs)


def _plan(
    cls: type, index: Mapping[tuple[str, ...], int], prefix: tuple[str, ...], optional: bool
) -> _Node:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, int | _Node]] = []
    leaves: list[int] = []
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        if path in index:
            fields.append((f.name, index[path]))
            leaves.append(index[path])
        else:
            hint, nullable, _ = _unwrap(hints[f.name])
            sub = _plan(hint, index, path, nullable)
            fields.append((f.name, sub))
            leaves += sub.leaves
    return _Node(cls, tuple(fields), optional, tuple(leaves))


def _getter(column: Column, nullable_path: bool) -> Callable[[Any], Any]:
    """attribute getter for entities and dict rows (by column name or nested field names)."""
    ag = operator.attrgetter(".".join(column.attr_path))
    name, path = column.name, column.attr_path

    def from_mapping(d: Mapping[str, Any]) -> Any:
        if name in d:
            return d[name]
        v: Any = d
        for p in path:
            if v is None:
                return None
            v = v.get(p, _MISSING) if isinstance(v, Mapping) else getattr(v, p, _MISSING)
            if v is _MISSING:
                return _MISSING
        return v

    if len(path) == 1 or not nullable_path:

        def get(o: Any) -> Any:
            if isinstance(o, Mapping):
                return from_mapping(o)
            return ag(o)

    else:

        def get(o: Any) -> Any:
            if isinstance(o, Mapping):
                return from_mapping(o)
            try:
                return ag(o)
            except AttributeError:
                return from_mapping({path[0]: getattr(o, path[0])})

    return get


@dataclasses.dataclass(frozen=True)
class EntitySpec:
    """How one dataclass maps to columns, frames and wire objects. Build with ``reflect``.

    Immutable and safe to share between threads.
    """

    cls: type
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # column names

    def __post_init__(self) -> None:
        root = _plan(self.cls, {c.attr_path: i for i, c in enumerate(self.columns)}, (), False)
        object.__setattr__(self, "_root", root)
        nested = {c.name for c in self.columns if len(c.attr_path) > 1}
        getters = tuple(_getter(c, c.name in nested) for c in self.columns)
        object.__setattr__(self, "_getters", getters)
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})
        # A frame already in this schema needs only a null check when no column's values
        # need checking beyond their dtype (decimal text, enum members and JSON text do).
        plain = all(c.kind not in ("decimal", "enum", "json") for c in self.columns)
        object.__setattr__(
            self, "_plain_dtypes", [c.dtype for c in self.columns] if plain else None
        )
        required = tuple(i for i, c in enumerate(self.columns) if not c.nullable)
        object.__setattr__(self, "_required", required)

    # -- shape --------------------------------------------------------------------------

    @property
    def schema(self) -> pl.Schema:
        """The Polars schema of every frame this spec returns (column order = ``columns``)."""
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column called ``name``; ``ValidationError`` if there is none."""
        col: Column | None = self._by_name.get(name)  # type: ignore[attr-defined]
        if col is None:
            raise ValidationError(
                f"{self.cls.__name__} has no column {name!r} (columns: {', '.join(self.names)})",
                column=name,
            )
        return col

    @property
    def fingerprint(self) -> str:
        """A stable hash of (column name, kind, nullable) for each column, plus the key.

        It changes exactly when stored rows would no longer read back as this entity.
        """
        return hashlib.sha256(msgspec.json.encode(self.describe())).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The facts the fingerprint covers, as JSON-ready data."""
        cols = [
            [c.name, c.kind if c.dtype != pl.Int64 or c.kind != "enum" else "enum:int", c.nullable]
            for c in self.columns
        ]
        return {"columns": cols, "key": list(self.key)}

    def empty(self) -> pl.DataFrame:
        """A frame with no rows and this spec's schema."""
        return pl.DataFrame(schema=self.schema)

    # -- frames -------------------------------------------------------------------------

    def to_frame(self, rows: Iterable[object] | pl.DataFrame) -> pl.DataFrame:
        """Entities, dict rows or a frame -> a frame with exactly ``schema``.

        Dict rows may be keyed by column names or by field names (with nested dicts for
        nested dataclasses). A frame must use column names; missing nullable columns are
        filled with nulls. Raises ``ValidationError`` naming the column and value for an
        unknown or missing column, a value of the wrong type, a null in a non-nullable
        column or a naive datetime; nothing of the batch is kept in that case.
        """
        if isinstance(rows, pl.DataFrame):
            return self._frame_from_frame(rows)
        items = rows if isinstance(rows, list) else list(rows)
        if not items:
            return self.empty()
        series = []
        getters: tuple[Callable[[Any], Any], ...] = self._getters  # type: ignore[attr-defined]
        cls = self.cls
        for item in items:
            if not isinstance(item, cls | Mapping):
                raise ValidationError(
                    f"cannot store {item!r}: expected {cls.__name__} instances or dict rows"
                )
        for col, get in zip(self.columns, getters, strict=True):
            try:
                values = [get(o) for o in items]
            except AttributeError as exc:
                raise ValidationError(f"column {col.name!r}: {exc}", column=col.name) from None
            if _MISSING in values:
                if not col.nullable:
                    row = values.index(_MISSING)
                    raise ValidationError(
                        f"column {col.name!r} is not nullable but row {row} has no value for it",
                        column=col.name,
                    )
                values = [None if v is _MISSING else v for v in values]
            s = _typed_series(col, values)
            _check_nulls(col, s)
            series.append(s)
        return pl.DataFrame(series)

    def _frame_from_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        dtypes: list[pl.DataType] | None = self._plain_dtypes  # type: ignore[attr-defined]
        if dtypes is not None and df.columns == list(self.names) and df.dtypes == dtypes:
            # Already this schema (e.g. decoded by from_wire): only nulls can be wrong.
            if df.height:
                nulls = df.null_count().row(0)
                for i in self._required:  # type: ignore[attr-defined]
                    if nulls[i]:
                        _check_nulls(self.columns[i], df.to_series(i))
            return df.clone()
        unknown = [c for c in df.columns if c not in self._by_name]  # type: ignore[attr-defined]
        if unknown:
            raise ValidationError(
                f"{self.cls.__name__} has no column {unknown[0]!r} "
                f"(columns: {', '.join(self.names)})",
                column=unknown[0],
            )
        out: list[pl.Series] = []
        for col in self.columns:
            if col.name in df.columns:
                s = _conform(col, df.get_column(col.name))
            elif col.nullable:
                s = pl.Series(col.name, [None] * df.height, dtype=col.dtype)
            else:
                raise ValidationError(
                    f"column {col.name!r} is missing from the frame and is not nullable",
                    column=col.name,
                )
            _check_nulls(col, s)
            out.append(s)
        return pl.DataFrame(out)

    def from_frame(self, df: pl.DataFrame) -> list[Any]:
        """A frame (any dtypes ``to_frame`` accepts) -> entity instances, in row order.

        Nested dataclasses are rebuilt, enums become members, decimals ``Decimal``,
        datetimes UTC-aware (``datetime.UTC``), JSON columns Python lists/dicts.
        """
        df = self._frame_from_frame(df)
        converters: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(self.columns):
            if c.kind == "decimal":
                converters.append((i, Decimal))
            elif c.kind == "enum":
                converters.append((i, c.py_type))
            elif c.kind == "json":
                converters.append((i, msgspec.json.decode))
            elif c.kind == "datetime":
                converters.append((i, _as_utc))
        root: _Node = self._root  # type: ignore[attr-defined]
        out = []
        for row in df.iter_rows():
            if converters:
                values: list[Any] = list(row)
                for i, conv in converters:
                    v = values[i]
                    if v is not None:
                        values[i] = conv(v)
                out.append(root.build(values))
            else:
                out.append(root.build(row))
        return out

    def to_entity(self, row: Mapping[str, Any]) -> Any:
        """A row keyed by column names (frame or Python values) -> an entity instance."""
        values: list[Any] = []
        for c in self.columns:
            if c.name not in row:
                if not c.nullable:
                    raise ValidationError(
                        f"column {c.name!r} is not nullable but the row has no value for it",
                        column=c.name,
                    )
                values.append(None)
                continue
            v = to_python(c, row[c.name])
            if v is None and not c.nullable:
                raise ValidationError(
                    f"column {c.name!r} is not nullable but the row has None", column=c.name
                )
            values.append(v)
        root: _Node = self._root  # type: ignore[attr-defined]
        return root.build(values)

    def to_row(self, entity: Any) -> dict[str, Any]:
        """An entity -> column-name keyed Python values (datetimes converted to UTC)."""
        getters: tuple[Callable[[Any], Any], ...] = self._getters  # type: ignore[attr-defined]
        row = {}
        for c, get in zip(self.columns, getters, strict=True):
            v = get(entity)
            row[c.name] = None if v is _MISSING else to_python(c, v)
        return row

    def key_of(self, obj: Any) -> tuple[Any, ...]:
        """An entity, a row (mapping), a key tuple or (single-column key) a scalar -> key tuple."""
        if isinstance(obj, self.cls):
            return tuple(self._getters[self.names.index(k)](obj) for k in self.key)  # type: ignore[attr-defined]
        if isinstance(obj, Mapping):
            try:
                return tuple(obj[k] for k in self.key)
            except KeyError as exc:
                raise ValidationError(
                    f"row has no value for key column {exc.args[0]!r}", column=exc.args[0]
                ) from None
        if isinstance(obj, tuple):
            if len(obj) != len(self.key):
                raise ValidationError(
                    f"key {obj!r} has {len(obj)} parts; {self.cls.__name__} keys are "
                    f"({', '.join(self.key)})",
                    column=self.key[0],
                )
            return obj
        if len(self.key) != 1:
            raise ValidationError(
                f"key {obj!r} is a single value; {self.cls.__name__} keys are "
                f"({', '.join(self.key)})",
                column=self.key[0],
            )
        return (obj,)

    # -- wire ---------------------------------------------------------------------------

    def from_wire(self, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        """Decode JSON objects (wire keys/paths) into a frame with exactly ``schema``.

        Numeric strings (``"0.10"``) become int/float/decimal values (an int column takes
        text spelling a whole number, ``"5"``, ``"5.0"``, ``"5e3"``, as it takes the JSON
        number ``5.0``); integer or numeric string epochs (ms unless ``wire(unit=...)``) and
        ISO text become UTC datetimes;
        ``""`` is a missing value for non-text columns. A missing or null value for a
        non-nullable column, or a value that does not convert, raises ``DecodeError`` whose
        ``field`` is the wire name and whose message shows the value.
        """
        if not items:
            return self.empty()
        decoder = self.wire_decoder()
        try:
            return decoder.frame(decoder.convert(items))
        except Exception:
            pass  # not in the typed shape: the general path decides (and names the field)
        return self._from_wire_general(items)

    def wire_decoder(self) -> WireDecoder:
        """The typed decoder of this spec's wire objects (built on first use, then kept)."""
        decoder: WireDecoder | None = self.__dict__.get("_wire_decoder")
        if decoder is None:
            decoder = WireDecoder(self)
            object.__setattr__(self, "_wire_decoder", decoder)
        return decoder

    def _from_wire_general(self, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        """``from_wire`` for any input: value by value checks, exact errors."""
        series = []
        for col in self.columns:
            path = col.wire_path
            if len(path) == 1:
                k = path[0]
                raw = [it.get(k, _MISSING) for it in items]
            else:
                raw = [_wire_get(it, path) for it in items]
            if _MISSING in raw:
                if not col.nullable:
                    at = raw.index(_MISSING)
                    raise DecodeError(
                        f"field {col.wire_name!r} (column {col.name!r}) is missing from "
                        f"object {at} and is not nullable",
                        field=col.wire_name,
                        raw=msgspec.json.encode(items[at]).decode()[:500],
                    )
                raw = [None if v is _MISSING else v for v in raw]
            s = _wire_series(col, raw, items)
            if not col.nullable and s.null_count():
                at = int(s.is_null().arg_max() or 0)
                raise _decode_error(col, raw[at], items, "is no value for a non-nullable field")
            series.append(s.rename(col.name))
        return pl.DataFrame(series)

    def to_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row keyed by column names -> a nested JSON-ready dict keyed by wire paths.

        Decimals become strings, datetimes epoch integers in the column's wire unit, dates
        ISO text, enums their values, JSON columns Python lists/dicts. Absent columns are
        left out.
        """
        out: dict[str, Any] = {}
        for c in self.columns:
            if c.name not in row:
                continue
            v = _wire_value(c, row[c.name])
            node = out
            for p in c.wire_path[:-1]:
                node = node.setdefault(p, {})
            node[c.wire_path[-1]] = v
        return out


def _as_utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC)


def _wire_value(c: Column, value: Any) -> Any:
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
        micros = (v - _EPOCH) // _ONE_US
        factor = _UNITS[c.wire_unit]
        return micros * 1000 if factor is None else micros // factor
    return v
