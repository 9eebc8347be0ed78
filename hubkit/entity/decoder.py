"""Wire objects -> frames: ``WireDecoder`` (JSON text or objects, typed by msgspec) and
``decode_objects`` (JSON objects already in Python, any shape).

Both build every column with ``hubkit.entity.decode``; they differ only in how a column's
values are taken out of the objects. ``EntitySpec.from_wire`` tries the decoder first and
falls back to ``decode_objects`` when msgspec refuses the objects' shape or a value.
"""

from __future__ import annotations

import itertools
import operator
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import msgspec
import polars as pl

from hubkit.entity.column import MISSING, Column, EntityShape
from hubkit.entity.decode import (
    LAX,
    decode_column,
    decode_error,
    raw_text,
    typed_column,
    wire_get,
)
from hubkit.entity.values import no_nan_in
from hubkit.errors import DecodeError

__all__ = ["WireDecoder", "decode_objects"]


class WireDecoder:
    """Decodes wire objects into typed rows with msgspec, then the rows into a frame.

    Made by ``EntitySpec.wire_decoder()`` (once per spec). A msgspec ``Struct`` type mirrors the
    wire shape: one field per wire key (nested objects as nested Structs), typed from the
    column kinds (``hubkit.entity.decode.LAX``), so msgspec checks and converts text,
    integers, floats, booleans and epoch datetimes while it parses; decimal, date, enum and
    JSON columns arrive as plain JSON values. ``frame`` then builds each column from one list
    of values, with the same conversion as every other wire decoder.

    ``decode``/``convert`` raise msgspec's errors for objects not in the typed shape (a missing
    or null non-nullable field, ``""`` for a missing number, a number for a text column, ISO
    datetimes, ...): ``decode_objects`` then decides, and gives the same frame for whatever
    this path accepts. ``frame`` raises ``DecodeError`` naming the field. Thread-safe.
    """

    def __init__(self, spec: EntityShape) -> None:
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
            # Text, int, bool and (NaN-free) float values from msgspec only need their Series
            # built (by dtype class: faster than from an equal instance); the rest go through
            # the conversion.
            direct = type(c.dtype) if c.kind in ("str", "int", "bool", "float") else None
            plan.append((c, get, c.kind in LAX, direct))
        self._plan: tuple[tuple[Column, Callable[[Any], Any], bool, Any], ...] = tuple(plan)

    def decode(self, data: bytes | str) -> list[Any]:
        """JSON text of an array of wire objects, or of one object -> typed rows.

        Raises ``msgspec.DecodeError`` (or its ``ValidationError``) when the text is not in
        the typed shape; ``decode_objects`` then decides."""
        rows = self._json.decode(data)
        return rows if type(rows) is list else [rows]

    def convert(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Wire objects as Python mappings -> typed rows (raises like ``decode``)."""
        rows: list[Any] = msgspec.convert(items, self._list_type, strict=False)
        return rows

    def frame(self, rows: Sequence[Any]) -> pl.DataFrame:
        """Typed rows (from ``decode``/``convert``, possibly of several calls) -> a frame with
        exactly the spec's schema. Raises ``DecodeError`` naming the field for a value its
        column refuses (an int beyond 64 bits, a decimal that is not a number, ...)."""
        if not rows:
            return self.spec.empty()
        series = []
        for column, get, typed, direct in self._plan:
            values = list(map(get, rows))
            if direct is not None:
                try:
                    s = pl.Series(column.name, values, dtype=direct, strict=True)
                except (TypeError, ValueError, pl.exceptions.PolarsError):
                    pass  # an int beyond 64 bits, a lone surrogate: the conversion names it
                else:
                    if column.kind != "float" or no_nan_in(values, s):
                        series.append(s)
                        continue
            fail = _fail(column, values, lambda i: msgspec.to_builtins(rows[i]))
            if typed:
                series.append(typed_column(column, values, values, fail, False))
            else:
                series.append(decode_column(column, values, fail))
        return pl.DataFrame(series)


def _fail(
    column: Column, values: list[Any], item_at: Callable[[int], Any]
) -> Callable[[Any, str], DecodeError]:
    """Builds the column's ``DecodeError``s, showing the wire object the value came from
    (``item_at(i)`` for the value at ``values[i]``)."""

    def fail(value: Any, why: str) -> DecodeError:
        at = next((i for i, v in enumerate(values) if v is value), None)
        return decode_error(column, value, why, None if at is None else item_at(at))

    return fail


def decode_objects(spec: EntityShape, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """JSON objects (wire keys and paths) -> a frame with exactly ``spec.schema``.

    Takes any shape: a missing key, or a non-object where an object should be, is no value.
    Raises ``DecodeError`` naming the field for a missing non-nullable value or a value that
    does not convert.
    """
    if not items:
        return spec.empty()
    series = []
    for col in spec.columns:
        path = col.wire_path
        if len(path) == 1:
            k = path[0]
            raw = [it.get(k, MISSING) for it in items]
        else:
            raw = [wire_get(it, path) for it in items]
        if MISSING in raw:
            if not col.nullable:
                at = raw.index(MISSING)
                raise DecodeError(
                    f"field {col.wire_name!r} (column {col.name!r}) is missing from "
                    f"object {at} and is not nullable",
                    field=col.wire_name,
                    raw=raw_text(items[at]),
                )
            raw = [None if v is MISSING else v for v in raw]
        series.append(decode_column(col, raw, _fail(col, raw, items.__getitem__)))
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
            kind_type = LAX.get(column.kind, Any)
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
