"""One wire conversion, every way in (``hubkit.entity.decode``).

JSON text through the typed decoder (as the WebSocket connection decodes a frame), JSON
objects through ``from_wire`` (as REST and JSON-RPC do) and through ``decode_objects`` (any
shape) must give the same frame or the same ``DecodeError`` field for every value; and the
conversion itself does what ``from_wire`` documents.
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

from hubkit.connections.wsdecode import TopicDecoder, frame_of
from hubkit.entity import EntitySpec, reflect, wire
from hubkit.entity.decoder import decode_objects
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


def _from_text(spec: EntitySpec, text: bytes) -> pl.DataFrame:
    """JSON text the way a WebSocket frame's data is decoded."""
    rows = TopicDecoder(spec).rows(msgspec.Raw(text))
    return frame_of(spec, [rows])


def _check(spec: EntitySpec, text: bytes) -> Any:
    items = msgspec.json.decode(text)
    by_text = _outcome(lambda: _from_text(spec, text))
    by_objects = _outcome(lambda: spec.from_wire(items))
    any_shape = _outcome(lambda: decode_objects(spec, items))
    assert _same(by_text, by_objects), (text, by_text, by_objects)
    assert _same(any_shape, by_objects), (text, any_shape, by_objects)
    return by_objects


@pytest.mark.parametrize("key", KEYS)
def test_every_way_in_converts_alike(key: str) -> None:
    for value in VALUES:
        _check(LOOSE, ('[{"k":"x",' + _nest(key, value) + "}]").encode())


def _one(key: str, value: str) -> Any:
    outcome = _check(LOOSE, ('[{"k":"x",' + _nest(key, value) + "}]").encode())
    if isinstance(outcome, pl.DataFrame):
        column = {"tsec": "t_sec", "tns": "t_ns", "a.b.c": "deep"}.get(key, key)
        return outcome.get_column(column.replace(".", "__"))[0]
    return outcome


def test_documented_conversions() -> None:
    utc = datetime.fromisoformat
    assert _one("i", '"5.0"') == 5 and _one("i", "5e3") == 5000 and _one("i", '"+1"') == 1
    assert _one("i", "1.5") == ("DecodeError", "i")
    assert _one("f", '"0.10"') == 0.1 and _one("f", '""') is None
    assert _one("f", '" 1"') == ("DecodeError", "f")  # numeric text: the JSON grammar
    assert _one("s", "1.5") == "1.5" and _one("s", "7") == "7"
    assert _one("s", "true") == ("DecodeError", "s")
    assert [_one("b", v) for v in ('"TRUE"', '"0"', "1", '""')] == [True, False, True, None]
    assert _one("b", "2") == ("DecodeError", "b")
    assert _one("t", "1672304486865.5") == utc("2022-12-29T09:01:26.865500+00:00")
    assert _one("t", '"2024-01-02T03:04:05"') == utc("2024-01-02T03:04:05+00:00")
    assert _one("t", '"2024-01-02T03:04:05+02:00"') == utc("2024-01-02T01:04:05+00:00")
    assert _one("tsec", '"1.5"') == utc("1970-01-01T00:00:01.500000+00:00")
    assert _one("tns", "1672304486865999123") == utc("2022-12-29T09:01:26.865999+00:00")
    assert _one("d", '"0.10"') == "0.1" and _one("d", '"1.5e3"') == "1500"
    assert _one("d", '"abc"') == ("DecodeError", "d")


@pytest.mark.parametrize("key", ["t", "tsec"])
@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 2**63])
def test_epochs_beyond_64_bit_microseconds_are_decode_errors_not_wrapped(
    key: str, value: int
) -> None:
    # 2**63 - 1 milliseconds once came back as 1969-12-31 (the microseconds wrapped around).
    assert _one(key, str(value)) == ("DecodeError", key)
    big = [{"k": str(i), key: 1000} for i in range(1000)] + [{"k": "x", key: value}]
    with pytest.raises(DecodeError) as caught:
        LOOSE.from_wire(big)
    assert caught.value.field == key and str(value) in str(caught.value)


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
        decode_objects(LOOSE, [{"k": "a", "i": "5.5"}])
    assert caught.value.field == "i" and "'5.5'" in str(caught.value)


def test_out_of_range_epochs_are_decode_errors() -> None:
    with pytest.raises(DecodeError) as caught:
        LOOSE.from_wire([{"k": "a", "t": 2**63}])
    assert caught.value.field == "t"


def test_int_enums_take_whole_numbers_only() -> None:
    assert _one("n", "1.0") == 1 and _one("n", '"2"') == 2
    # 1.5 was once read as 1: a member the remote never sent
    assert _one("n", "1.5") == ("DecodeError", "n")
    assert _one("n", "true") == ("DecodeError", "n")
