"""Entities <-> rows of column values: attribute getters and the plan that rebuilds
(nested) dataclasses from a row."""

from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hubkit.entity.column import MISSING, Column, unwrap

__all__ = ["Node", "build_plan", "value_getter"]


# ---------------------------------------------------------------------------------------
# rebuilding entities


@dataclasses.dataclass(frozen=True)
class Node:
    """How to build one dataclass from a row of column values."""

    cls: type
    fields: tuple[tuple[str, int | Node], ...]
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


def build_plan(
    cls: type, index: Mapping[tuple[str, ...], int], prefix: tuple[str, ...], optional: bool
) -> Node:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, int | Node]] = []
    leaves: list[int] = []
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        if path in index:
            fields.append((f.name, index[path]))
            leaves.append(index[path])
        else:
            hint, nullable, _ = unwrap(hints[f.name])
            sub = build_plan(hint, index, path, nullable)
            fields.append((f.name, sub))
            leaves += sub.leaves
    return Node(cls, tuple(fields), optional, tuple(leaves))


def value_getter(column: Column, nullable_path: bool) -> Callable[[Any], Any]:
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
            v = v.get(p, MISSING) if isinstance(v, Mapping) else getattr(v, p, MISSING)
            if v is MISSING:
                return MISSING
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


def key_sets(columns: Sequence[Column]) -> dict[tuple[str, ...], frozenset[str]]:
    """The keys a dict row may use, by nesting level: at the top, column names and field
    names; inside the dict of a nested dataclass at ``prefix``, its field names."""
    out: dict[tuple[str, ...], set[str]] = {(): {c.name for c in columns}}
    for c in columns:
        for depth in range(len(c.attr_path)):
            out.setdefault(c.attr_path[:depth], set()).add(c.attr_path[depth])
    return {prefix: frozenset(keys) for prefix, keys in out.items()}


def unknown_key(
    allowed: Mapping[tuple[str, ...], frozenset[str]],
    item: Mapping[Any, Any],
    prefix: tuple[str, ...] = (),
) -> str | None:
    """The first key of dict row ``item`` (dotted when nested) that names no field, or None."""
    keys = allowed[prefix]
    if not keys.issuperset(item):
        return ".".join((*prefix, str(next(k for k in item if k not in keys))))
    for key, value in item.items():
        inner = (*prefix, key)
        if isinstance(value, Mapping) and inner in allowed:
            bad = unknown_key(allowed, value, inner)
            if bad is not None:
                return bad
    return None
