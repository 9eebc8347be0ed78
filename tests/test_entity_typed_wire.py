"""The typed wire path (``EntitySpec.wire_decoder()``) against the general ``from_wire`` path.

The typed path may only accept what the general path accepts and must give the same frame;
everything else falls back to the general path, which converts it or names the field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
import polars as pl
import pytest

from hubkit.entity import EntitySpec, reflect, wire
from hubkit.errors import DecodeError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.Enum):
    ONE = 1
    TWO = 2


@dataclass
class Inner:
    a: float | None = None
    b: str | None = None


@dataclass
class Loose:
    k: str
    s: str | None = None
    i: int | None = None
    f: float | None = None
    b: bool | None = None
    t: datetime | None = None
    t_sec: Annotated[datetime | None, wire("tsec", unit="s")] = None
    t_ns: Annotated[datetime | None, wire("tns", unit="ns")] = None
    d: Decimal | None = None
    day: date | None = None
    c: Color | None = None
    n: Level | None = None
    j: list[int] | None = None
    inner: Inner | None = None
    deep: Annotated[int | None, wire("a.b.c")] = None


@dataclass
class Strict:
    k: str
    i: int
    f: float
    b: bool
    t: datetime
    c: Color


LOOSE = reflect(Loose, "k")
STRICT = reflect(Strict, "k")

VALUES = [
    '"1"', '"1.0"', '"1.5"', '" 1"', '"+1"', '"1e3"', '"1E3"', '"nan"', '"inf"', '"-0"',
    '"-0.0"', "1.0", "1.5", "true", "false", "1", "0", "2", "-1", '"true"', '"True"', '"0"',
    '"TRUE"', '"yes"', "9223372036854775807", "9223372036854775808", "18446744073709551615",
    '"9223372036854775808"', '""', "null", '"abc"', '"red"', '"blue"', "[1,2]", '{"a":1}',
    "[]", '"2024-01-02"', '"2024-01-02T03:04:05"', '"2024-01-02T03:04:05+02:00"',
    "1672304486865", '"1672304486865"', "1672304486865.5", '"0.10"', '"1.23e-5"', "0.1",
    "1e20", "-9223372036854775808", '"[1,2]"',
]  # fmt: skip
KEYS = ["s", "i", "f", "b", "t", "tsec", "tns", "d", "day", "c", "n", "j", "inner.a", "a.b.c"]


def _nest(path: str, value: str) -> str:
    head, _, rest = path.partition(".")
    return f'"{head}":' + ("{" + _nest(rest, value) + "}" if rest else value)


def _outcome(run: Any) -> Any:
    try:
        return run()
    except DecodeError as exc:
        return ("DecodeError", exc.field)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, pl.DataFrame) and isinstance(b, pl.DataFrame):
        return a.schema == b.schema and a.equals(b, null_equal=True)
    return not isinstance(a, pl.DataFrame) and not isinstance(b, pl.DataFrame) and a == b


def _check(spec: EntitySpec, text: bytes) -> None:
    items = msgspec.json.decode(text)
    general = _outcome(lambda: spec._from_wire_general(items))
    typed = _outcome(lambda: spec.from_wire(items))
    assert _same(general, typed), (text, general, typed)


@pytest.mark.parametrize("key", KEYS)
def test_typed_path_agrees_with_the_general_path(key: str) -> None:
    for value in VALUES:
        if key == "tns" and value.strip('"') in ("9223372036854775808", "18446744073709551615"):
            continue  # beyond int64 nanoseconds: both read it; the general path rounds via float
        _check(LOOSE, ('[{"k":"x",' + _nest(key, value) + "}]").encode())


@pytest.mark.parametrize("field", ["i", "f", "b", "t", "c"])
@pytest.mark.parametrize("variant", ["missing", "null", "empty"])
def test_required_fields_fail_alike(field: str, variant: str) -> None:
    item: dict[str, Any] = {"k": "x", "i": 1, "f": "1.5", "b": True, "t": 1, "c": "red"}
    if variant == "missing":
        del item[field]
    else:
        item[field] = None if variant == "null" else ""
    with pytest.raises(DecodeError) as caught:
        STRICT.from_wire([item])
    assert caught.value.field == field


def test_nested_objects() -> None:
    for body in [
        '{"k":"x","inner":{"a":"1.5"}}',
        '{"k":"x","inner":null}',
        '{"k":"x","inner":{"b":"q"},"a":{"b":{"c":"5"}}}',
        '{"k":"x","a":{"b":null}}',
        '{"k":"x","a":5}',
        '{"k":"x","a":{"b":{}}}',
        '{"k":"x","inner":5}',
        '{"k":"x","inner":{}}',
    ]:
        _check(LOOSE, f"[{body}]".encode())


def test_json_text_decodes_to_typed_rows() -> None:
    decoder = LOOSE.wire_decoder()
    assert decoder is LOOSE.wire_decoder()  # built once per spec
    rows = decoder.decode(b'[{"k":"a","f":"0.5","t":1000},{"k":"b","c":"blue"}]')
    rows += decoder.decode(b'{"k":"c","i":"7"}')  # one object is one row
    frame = decoder.frame(rows)
    assert frame.schema == LOOSE.schema
    assert frame["k"].to_list() == ["a", "b", "c"]
    assert frame["f"].to_list() == [0.5, None, None]
    assert frame["c"].to_list() == [None, "blue", None]
    assert frame["i"].to_list() == [None, None, 7]
    assert frame["t"].dt.epoch("ms").to_list() == [1000, None, None]
    assert decoder.frame([]).schema == LOOSE.schema
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'[{"k":"a","f":"x"}]')  # the caller falls back to from_wire
    with pytest.raises(DecodeError):
        decoder.frame(decoder.decode(b'[{"k":"a","c":"green"}]'))


def test_a_bad_value_in_a_big_batch_names_its_field() -> None:
    items = [{"k": str(i), "f": f"{i}.5"} for i in range(5000)]
    assert LOOSE.from_wire(items).height == 5000
    items[4321] = {"k": "bad", "f": "12,5"}
    with pytest.raises(DecodeError) as caught:
        LOOSE.from_wire(items)
    assert caught.value.field == "f" and "'12,5'" in str(caught.value)


def test_int_columns_read_whole_number_text() -> None:
    frame = LOOSE.from_wire([{"k": "a", "i": "5.0"}, {"k": "b", "i": "5e3"}, {"k": "c", "i": 7.0}])
    assert frame["i"].to_list() == [5, 5000, 7]
    with pytest.raises(DecodeError) as caught:
        LOOSE._from_wire_general([{"k": "a", "i": "5.5"}])
    assert caught.value.field == "i" and "'5.5'" in str(caught.value)


def test_out_of_range_epochs_are_decode_errors() -> None:
    with pytest.raises(DecodeError) as caught:
        LOOSE.from_wire([{"k": "a", "t": 2**63}])
    assert caught.value.field == "t"
