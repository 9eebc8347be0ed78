"""Reflection: a dataclass's fields and type hints -> columns, checked, -> ``EntitySpec``."""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import re
import typing
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import polars as pl

from hubkit.entity.column import UTC_US, Column, unwrap
from hubkit.entity.spec import EntitySpec
from hubkit.errors import SchemaError

__all__ = ["reflect"]


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
    datetime: ("datetime", UTC_US),
    date: ("date", pl.Date()),
}


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


def _default_of(
    f: dataclasses.Field[Any], parent: Callable[[], Any] | None
) -> Callable[[], Any] | None:
    """How to make field ``f``'s default: its own, else its value in the parent's default."""
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    if parent is None:
        return None
    name = f.name

    def from_parent() -> Any:
        holder = parent()
        return None if holder is None else getattr(holder, name)

    return from_parent


def _columns(
    cls: type,
    *,
    attr_prefix: tuple[str, ...],
    wire_prefix: tuple[str, ...],
    nullable_parent: bool,
    seen: tuple[type, ...],
    parent_default: Callable[[], Any] | None = None,
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
        hint, nullable, marker = unwrap(hints[f.name])
        nullable = nullable or nullable_parent
        own = marker.path if marker and marker.path else (_camel(f.name),)
        wire_path = (*wire_prefix, *own)
        unit = marker.unit if marker else "ms"
        default = _default_of(f, parent_default)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint in seen:
                raise SchemaError(f"field {label!r}: recursive dataclass", field=label)
            out += _columns(
                hint,
                attr_prefix=attr_path,
                wire_prefix=wire_path,
                nullable_parent=nullable,
                seen=(*seen, hint),
                parent_default=default,
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
                default=default,
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
