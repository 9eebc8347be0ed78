"""A recursive comparison of JSON shapes (keys and JSON types), for simulator-vs-sample tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def shape_diff(
    sample: Any,
    actual: Any,
    *,
    extra_ok: Iterable[str] = (),
    stringified: Iterable[str] = (),
    path: str = "$",
) -> list[str]:
    """Differences between the shape of ``sample`` and of ``actual``; empty when they agree.

    Rules: objects must have the same keys (``actual`` may also have the keys in ``extra_ok``)
    and each common key must match recursively; an empty object or array in the sample stands
    for any object / array; every element of an ``actual`` array must match the sample's first
    element (a sample array mixing JSON types is a tuple and is compared position by
    position); scalars must have the same JSON type, except that a key named in ``stringified``
    may be a string in the sample where ``actual`` has a number (ccxt fixtures stringify
    numbers, SOURCES.md caveat 1).
    """
    extra = frozenset(extra_ok)
    strs = frozenset(stringified)
    out: list[str] = []
    _diff(sample, actual, extra, strs, path, "", out)
    return sorted(set(out))


def _diff(
    sample: Any,
    actual: Any,
    extra: frozenset[str],
    strs: frozenset[str],
    path: str,
    key: str,
    out: list[str],
) -> None:
    st, at = json_type(sample), json_type(actual)
    if st != at:
        if not (key in strs and st == "string" and at == "number"):
            out.append(f"{path}: sample has {st}, simulator has {at}")
        return
    if st == "object":
        if not sample:
            return
        missing = sample.keys() - actual.keys()
        added = actual.keys() - sample.keys() - extra
        out.extend(f"{path}.{k}: missing in simulator" for k in sorted(missing))
        out.extend(f"{path}.{k}: not in sample" for k in sorted(added))
        for k in sample.keys() & actual.keys():
            _diff(sample[k], actual[k], extra, strs, f"{path}.{k}", k, out)
    elif st == "array":
        if not sample or not actual:
            return
        if len({json_type(x) for x in sample}) > 1:  # a tuple such as [number, "text"]
            if len(sample) != len(actual):
                out.append(f"{path}: sample has {len(sample)} items, simulator {len(actual)}")
                return
            for i, (s, a) in enumerate(zip(sample, actual, strict=True)):
                _diff(s, a, extra, strs, f"{path}[{i}]", key, out)
            return
        for item in actual:
            _diff(sample[0], item, extra, strs, f"{path}[]", key, out)
