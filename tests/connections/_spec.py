"""A small stand-in for ``hubkit.entity.EntitySpec`` with the contract the connections use.

``from_wire`` takes JSON objects (wire keys, numeric strings) and returns a frame, raising
``DecodeError(field=wire name)``; ``to_wire`` turns a column-keyed row back into JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from hubkit.errors import DecodeError

_DTYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
}


@dataclass(frozen=True)
class StubColumn:
    name: str
    wire_path: tuple[str, ...]
    kind: str
    nullable: bool = False


class StubSpec:
    def __init__(
        self, cls: type, table: str, columns: Sequence[tuple[str, str, str]], key: Sequence[str]
    ) -> None:
        self.cls = cls
        self.table = table
        self.columns = tuple(
            StubColumn(name, tuple(wire.split(".")), kind) for name, wire, kind in columns
        )
        self.key = tuple(key)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({column.name: _DTYPES[column.kind] for column in self.columns})

    def from_wire(self, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        data: dict[str, list[Any]] = {column.name: [] for column in self.columns}
        for item in items:
            if not isinstance(item, Mapping):
                raise DecodeError("an item is not an object", field=None)
            for column in self.columns:
                wire = ".".join(column.wire_path)
                node: Any = item
                for part in column.wire_path:
                    if not isinstance(node, Mapping) or part not in node:
                        raise DecodeError(f"missing {wire!r}", field=wire)
                    node = node[part]
                data[column.name].append(_convert(node, column.kind, wire))
        return pl.DataFrame(data, schema=self.schema)

    def to_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in self.columns:
            node = out
            for part in column.wire_path[:-1]:
                node = node.setdefault(part, {})
            value = row[column.name]
            node[column.wire_path[-1]] = str(value) if column.kind == "float" else value
        return out


def _convert(value: Any, kind: str, wire: str) -> Any:
    try:
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {value!r}")
            return value
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError("bool is not an int")
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError("bool is not a float")
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"expected a bool, got {value!r}")
            return value
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{wire}: {exc}", field=wire) from exc
    raise AssertionError(kind)


class Instrument:
    """Marker class standing in for an entity dataclass."""


class Trade:
    pass


class Kline:
    pass


INSTRUMENT = StubSpec(
    Instrument,
    "instrument",
    [
        ("symbol", "symbol", "str"),
        ("status", "status", "str"),
        ("tick_size", "priceFilter.tickSize", "float"),
    ],
    ["symbol"],
)

TRADE = StubSpec(
    Trade,
    "trade",
    [
        ("trade_id", "i", "str"),
        ("symbol", "s", "str"),
        ("price", "p", "float"),
        ("size", "v", "float"),
        ("side", "S", "str"),
        ("time", "T", "int"),
    ],
    ["trade_id"],
)

KLINE = StubSpec(
    Kline,
    "kline",
    [
        ("start", "startTime", "int"),
        ("open", "open", "float"),
        ("high", "high", "float"),
        ("low", "low", "float"),
        ("close", "close", "float"),
        ("volume", "volume", "float"),
        ("turnover", "turnover", "float"),
    ],
    ["start"],
)
