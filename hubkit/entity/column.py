"""Columns and wire markers: what one entity field becomes (``Column``), ``hubkit.wire``.

Also the constants every part of the entity package shares (units, the UTC dtype, the
``MISSING`` marker) and ``unwrap``, which strips ``Annotated``/``Optional`` from a hint.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Protocol, Union

import polars as pl

from hubkit.errors import SchemaError

__all__ = ["KINDS", "MISSING", "Column", "EntityShape", "Wire", "unwrap", "wire"]

KINDS: Final = ("str", "int", "float", "bool", "decimal", "datetime", "date", "enum", "json")

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US: Final = timedelta(microseconds=1)
UNITS: Final = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
UTC_US: Final = pl.Datetime("us", "UTC")
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class Missing(enum.Enum):
    """Marks a value absent from a dict row or a wire object (distinct from ``None``)."""

    MISSING = 0


MISSING: Final = Missing.MISSING


class EntityShape(Protocol):
    """What a decoder needs of an entity's spec: its class, its columns and an empty frame.

    ``EntitySpec`` satisfies it; the decoders depend on this instead of on the spec module,
    which builds them.
    """

    @property
    def cls(self) -> type[Any]: ...

    @property
    def columns(self) -> tuple[Column, ...]: ...

    def empty(self) -> pl.DataFrame: ...


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
    if unit not in UNITS:
        raise SchemaError(f"wire unit must be one of {sorted(UNITS)}, not {unit!r}")
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
    # Makes the field's default (the dataclass default or default_factory, or the value in
    # the default of the nested dataclass field holding it) for a dict row or frame without
    # the column; None when the field has no default.
    default: Callable[[], Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def wire_name(self) -> str:
        """The dotted wire path, as named in ``DecodeError.field``."""
        return ".".join(self.wire_path)


def unwrap(hint: Any) -> tuple[Any, bool, Wire | None]:
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
