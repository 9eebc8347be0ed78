"""Entity reflection: schema from a dataclass, frames, rows, keys and the wire mapping."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Optional
from zoneinfo import ZoneInfo

import polars as pl
import pytest

import hubkit
from hubkit.entity import Column, EntitySpec, reflect, wire
from hubkit.errors import DecodeError, SchemaError, ValidationError


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class PriceFilter:
    tick_size: Decimal
    min_price: float | None = None


@dataclass
class Everything:
    id: str
    count: int
    ratio: float
    active: bool
    amount: Decimal
    at: datetime
    day: date
    side: Side
    level: Level
    tags: list[str]
    meta: dict[str, Any]
    price_filter: PriceFilter
    note: str | None = None
    maybe_at: Optional[datetime] = None  # noqa: UP045 - the Optional spelling is supported too
    extra: PriceFilter | None = None


@dataclass
class Instrument:
    symbol: str
    status: str
    tick_size: Annotated[float, hubkit.wire("priceFilter.tickSize")]
    base_coin: str


@dataclass
class Trade:
    id: Annotated[str, wire("i")]
    price: Annotated[float, wire("p")]
    size: Annotated[Decimal, wire("v")]
    side: Annotated[Side, wire("S")]
    time: Annotated[datetime, wire("T")]
    block_trade: Annotated[bool, wire("BT")]
    seq: int | None = None


def everything(i: int = 1, **changes: Any) -> Everything:
    base = Everything(
        id=f"e{i}",
        count=i,
        ratio=i / 3,
        active=i % 2 == 0,
        amount=Decimal("12345678901234567890.123456789012345678901234567890"),
        at=datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=ZoneInfo("America/New_York")),
        day=date(2024, 2, 29),
        side=Side.SELL,
        level=Level.HIGH,
        tags=["a", "b"],
        meta={"nested": {"x": [1, 2.5, None]}, "ok": True},
        price_filter=PriceFilter(Decimal("0.10"), 1.5),
    )
    for k, v in changes.items():
        setattr(base, k, v)
    return base


# -- reflection ------------------------------------------------------------------------------


def test_columns_kinds_dtypes_and_names() -> None:
    spec = reflect(Everything, key="id")
    by = {c.name: c for c in spec.columns}
    assert spec.table == "everything"
    assert spec.key == ("id",)
    assert [c.kind for c in spec.columns] == [
        "str", "int", "float", "bool", "decimal", "datetime", "date", "enum", "enum",
        "json", "json", "decimal", "float", "str", "datetime", "decimal", "float",
    ]  # fmt: skip
    assert by["price_filter__tick_size"].attr_path == ("price_filter", "tick_size")
    assert by["price_filter__tick_size"].wire_path == ("priceFilter", "tickSize")
    assert not by["price_filter__tick_size"].nullable
    assert by["price_filter__min_price"].nullable
    assert by["extra__tick_size"].nullable  # an optional nested dataclass makes all nullable
    assert by["maybe_at"].nullable and by["note"].nullable and not by["at"].nullable
    assert by["at"].dtype == pl.Datetime("us", "UTC")
    assert by["level"].dtype == pl.Int64 and by["side"].dtype == pl.String
    assert by["side"].py_type is Side
    assert spec.schema == pl.Schema({c.name: c.dtype for c in spec.columns})


def test_reflect_is_cached_and_accepts_sequences() -> None:
    assert reflect(Everything, "id") is reflect(Everything, "id")
    assert reflect(Everything, ["id"]) == reflect(Everything, ("id",))
    assert reflect(Everything, "id", table="other").table == "other"


def test_wire_paths_default_camel_case_alias_and_dotted() -> None:
    inst = reflect(Instrument, "symbol")
    assert [c.wire_path for c in inst.columns] == [
        ("symbol",),
        ("status",),
        ("priceFilter", "tickSize"),
        ("baseCoin",),
    ]
    assert reflect(Trade, "id").columns[0].wire_path == ("i",)


def test_key_may_name_a_flattened_column_and_be_composite() -> None:
    spec = reflect(Everything, ("id", "price_filter.tick_size"))
    assert spec.key == ("id", "price_filter__tick_size")
    assert reflect(Everything, ["id", "price_filter__tick_size"]).key == spec.key


class NotADataclass:
    x: int


@dataclass
class WithSet:
    id: str
    members: set[int]


@dataclass
class WithUnion:
    id: str
    value: int | str


@dataclass
class WithBytes:
    id: str
    blob: bytes


@dataclass
class WithInitFalse:
    id: str
    derived: int = field(init=False, default=0)


class Mixed(enum.Enum):
    A = 1
    B = "b"


@dataclass
class WithMixedEnum:
    id: str
    m: Mixed


@dataclass
class WithUnknownName:
    id: str
    other: Unknown  # type: ignore[name-defined]  # noqa: F821


@dataclass
class Inner:
    deep: set[str]


@dataclass
class WithBadNested:
    id: str
    inner: Inner


@pytest.mark.parametrize(
    ("cls", "key", "field_name"),
    [
        (WithSet, "id", "members"),
        (WithUnion, "id", "value"),
        (WithBytes, "id", "blob"),
        (WithInitFalse, "id", "derived"),
        (WithMixedEnum, "id", "m"),
        (WithUnknownName, "id", "other"),
        (WithBadNested, "id", "inner.deep"),
        (Everything, "nope", "nope"),
        (Everything, "note", "note"),  # nullable key
        (Everything, "tags", "tags"),  # JSON key
        (Everything, ("id", "id"), "id"),
    ],
)
def test_bad_definitions_raise_schema_error_naming_the_field(
    cls: type, key: str | tuple[str, ...], field_name: str
) -> None:
    with pytest.raises(SchemaError) as info:
        reflect(cls, key)
    assert info.value.field == field_name
    assert repr(field_name) in str(info.value)


def test_not_a_dataclass_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="not a dataclass"):
        reflect(NotADataclass, "x")


def test_wire_marker_rejects_empty_segments_and_unknown_units() -> None:
    with pytest.raises(SchemaError):
        wire("a..b")
    with pytest.raises(SchemaError):
        wire("t", unit="minutes")


@dataclass
class ClashingWire:
    a: Annotated[str, wire("x")]
    b: Annotated[str, wire("x.y")]


def test_clashing_wire_paths_are_schema_errors() -> None:
    with pytest.raises(SchemaError) as info:
        reflect(ClashingWire, "a")
    assert info.value.field == "b"


@dataclass
class TradeV2:  # the same columns as Trade except the type of "size"
    id: str
    price: float
    size: float
    side: Side
    time: datetime
    block_trade: bool
    seq: int | None = None


def test_fingerprint_is_stable_and_tracks_columns_kinds_and_key() -> None:
    fp = reflect(Trade, "id").fingerprint
    assert fp == reflect(Trade, "id", table="elsewhere").fingerprint  # names of tables don't count
    assert len(fp) == 16 and fp == reflect(Trade, "id").fingerprint
    assert reflect(TradeV2, "id").fingerprint != fp  # size: decimal -> float
    assert reflect(Trade, ("id", "time")).fingerprint != fp


# -- frames and rows ---------------------------------------------------------------------------


def test_entities_round_trip_through_frames_exactly() -> None:
    spec = reflect(Everything, "id")
    items = [
        everything(1),
        everything(
            2, note="n", maybe_at=datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-3)))
        ),
        everything(3, extra=PriceFilter(Decimal("1E-30"), None), meta={}, tags=[]),
    ]
    frame = spec.to_frame(items)
    assert frame.schema == spec.schema
    # exact digits, in the one canonical text of the value (no trailing zero)
    assert frame["amount"][0] == "12345678901234567890.12345678901234567890123456789"
    assert frame["at"][0] == datetime(2024, 3, 1, 17, 30, 15, 123456, tzinfo=UTC)
    assert frame["side"][0] == "Sell" and frame["level"][0] == 2
    back = spec.from_frame(frame)
    assert back == items
    assert back[0].at.tzinfo is UTC
    assert back[0].extra is None and back[2].extra == PriceFilter(Decimal("1E-30"), None)


def test_dict_rows_by_field_names_or_column_names() -> None:
    spec = reflect(Everything, "id")
    e = everything(1)
    nested = {
        **{k: getattr(e, k) for k in ("id", "count", "ratio", "active", "amount", "at", "day")},
        "side": "Sell",
        "level": 2,
        "tags": ["a", "b"],
        "meta": e.meta,
        "price_filter": {"tick_size": "0.10", "min_price": 1.5},
    }
    flat = spec.to_row(e)
    assert spec.to_frame([nested]).equals(spec.to_frame([e]))
    assert spec.to_frame([flat]).equals(spec.to_frame([e]))
    assert spec.to_entity(flat) == e
    assert spec.to_entity(spec.to_frame([e]).row(0, named=True)) == e


def test_frames_are_conformed_to_the_schema() -> None:
    spec = reflect(Trade, "id")
    frame = pl.DataFrame(
        {
            "id": ["a", "b"],
            "price": [1, 2],  # ints are fine for a float column
            "size": pl.Series([Decimal("0.5"), Decimal("1.25")]),
            "side": pl.Series(["Buy", "Sell"], dtype=pl.Categorical),
            "time": pl.Series([datetime(2024, 1, 1), datetime(2024, 1, 2)]).dt.replace_time_zone(
                "Europe/Berlin"
            ),
            "block_trade": [False, True],
        }
    )  # "seq" (nullable) is missing: filled with nulls
    out = spec.to_frame(frame)
    assert out.schema == spec.schema
    assert out["time"][0] == datetime(2023, 12, 31, 23, tzinfo=UTC)
    assert out["seq"].null_count() == 2
    assert out["size"].to_list() == ["0.5", "1.25"]  # canonical text, not Polars' scale


@pytest.mark.parametrize(
    ("row", "column", "shown"),
    [
        ({"price": "1.5"}, "price", "'1.5'"),
        ({"id": 7}, "id", "7"),
        ({"block_trade": 1}, "block_trade", "1"),
        ({"side": "Hold"}, "side", "'Hold'"),
        ({"size": "1.2.3"}, "size", "'1.2.3'"),
        ({"time": datetime(2024, 1, 1)}, "time", "datetime.datetime(2024, 1, 1, 0, 0)"),
        ({"price": None}, "price", "None"),
        ({"seq": 2**70}, "seq", str(2**70)),
    ],
)
def test_bad_values_raise_validation_error_naming_column_and_value(
    row: dict[str, Any], column: str, shown: str
) -> None:
    spec = reflect(Trade, "id")
    good = {
        "id": "x",
        "price": 1.0,
        "size": Decimal("1"),
        "side": Side.BUY,
        "time": datetime(2024, 1, 1, tzinfo=UTC),
        "block_trade": False,
    }
    with pytest.raises(ValidationError) as info:
        spec.to_frame([good, {**good, **row}])
    assert info.value.column == column
    assert repr(column) in str(info.value)
    assert shown in str(info.value)


def test_bad_frames_raise_validation_errors() -> None:
    spec = reflect(Trade, "id")
    ok = spec.to_frame(
        [Trade("a", 1.0, Decimal("1"), Side.BUY, datetime(2024, 1, 1, tzinfo=UTC), False)]
    )
    with pytest.raises(ValidationError, match="'nope'") as info:
        spec.to_frame(ok.with_columns(nope=pl.lit(1)))
    assert info.value.column == "nope"
    with pytest.raises(ValidationError, match="'price' is missing") as info:
        spec.to_frame(ok.drop("price"))
    with pytest.raises(ValidationError, match="naive") as info:
        spec.to_frame(ok.with_columns(pl.col("time").dt.replace_time_zone(None)))
    assert info.value.column == "time"
    with pytest.raises(ValidationError, match=r"1\.5") as info:
        spec.to_frame(ok.with_columns(seq=pl.lit(1.5)))
    assert info.value.column == "seq"
    with pytest.raises(ValidationError, match="'Hold'"):
        spec.to_frame(ok.with_columns(side=pl.lit("Hold")))
    with pytest.raises(ValidationError, match="row 0"):
        spec.to_frame(ok.with_columns(price=pl.lit(None, dtype=pl.Float64)))


def test_missing_dict_values_are_null_or_errors() -> None:
    spec = reflect(Trade, "id")
    row = {"id": "a", "price": 1.0, "size": "1", "side": "Buy", "block_trade": True}
    with pytest.raises(ValidationError, match="'time'"):
        spec.to_frame([row])
    out = spec.to_frame([{**row, "time": datetime(2024, 1, 1, tzinfo=UTC)}])
    assert out["seq"].to_list() == [None]


def test_empty_input_gives_an_empty_frame_with_the_schema() -> None:
    spec = reflect(Everything, "id")
    assert spec.to_frame([]).schema == spec.schema
    assert spec.from_wire([]).schema == spec.schema
    assert spec.from_frame(spec.empty()) == []


def test_key_of_entities_rows_tuples_and_scalars() -> None:
    spec = reflect(Everything, ("id", "price_filter__tick_size"))
    e = everything(4)
    assert spec.key_of(e) == ("e4", Decimal("0.10"))
    assert spec.key_of({"id": "x", "price_filter__tick_size": "1"}) == ("x", "1")
    assert spec.key_of(("x", "1")) == ("x", "1")
    with pytest.raises(ValidationError):
        spec.key_of("x")
    single = reflect(Everything, "id")
    assert single.key_of("x") == ("x",)


def test_to_wire_nests_by_wire_path() -> None:
    spec = reflect(Instrument, "symbol")
    row = {"symbol": "BTCUSDT", "status": "Trading", "tick_size": 0.1, "base_coin": "BTC"}
    assert spec.to_wire(row) == {
        "symbol": "BTCUSDT",
        "status": "Trading",
        "priceFilter": {"tickSize": 0.1},
        "baseCoin": "BTC",
    }
    trade = reflect(Trade, "id")
    out = trade.to_wire(
        {"time": datetime(2024, 1, 1, tzinfo=UTC), "size": Decimal("0.5"), "side": Side.BUY}
    )
    assert out == {"T": 1704067200000, "v": "0.5", "S": "Buy"}


# -- wire --------------------------------------------------------------------------------------


BYBIT_TRADES = [
    {
        "T": 1672304486865,
        "s": "BTCUSDT",
        "S": "Buy",
        "v": "0.001",
        "p": "16578.50",
        "L": "PlusTick",
        "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
        "BT": False,
        "seq": 1783284617,
    },
    {
        "T": "1672304486866",
        "S": "Sell",
        "v": "2",
        "p": "16578",
        "i": "20f43950-d8dd-5b31-9112-a178eb6023b0",
        "BT": False,
        "seq": "",
    },
]


def test_from_wire_decodes_bybit_trades() -> None:
    spec = reflect(Trade, "id")
    frame = spec.from_wire(BYBIT_TRADES)
    assert frame.schema == spec.schema
    assert frame.row(0, named=True) == {
        "id": "20f43950-d8dd-5b31-9112-a178eb6023af",
        "price": 16578.5,
        "size": "0.001",
        "side": "Buy",
        "time": datetime(2022, 12, 29, 9, 1, 26, 865000, tzinfo=UTC),
        "block_trade": False,
        "seq": 1783284617,
    }
    assert frame["time"][1] == datetime(2022, 12, 29, 9, 1, 26, 866000, tzinfo=UTC)
    assert frame["seq"][1] is None  # "" is no value for a non-text column
    assert spec.from_frame(frame)[1].size == Decimal("2")


def test_from_wire_default_camel_case_and_dotted_paths() -> None:
    spec = reflect(Instrument, "symbol")
    frame = spec.from_wire(
        [
            {
                "symbol": "BTCUSDT",
                "status": "Trading",
                "priceFilter": {"tickSize": "0.10", "minPrice": "0.1"},
                "baseCoin": "BTC",
            }
        ]
    )
    assert frame.row(0) == ("BTCUSDT", "Trading", 0.1, "BTC")


@dataclass
class Wide:
    key: int
    flag: bool | None
    amount: Decimal | None
    when: datetime | None
    day: date | None
    level: Level | None
    tags: list[str] | None
    label: str | None
    price_filter: PriceFilter | None = None
    seconds: Annotated[datetime | None, wire("epochSeconds", unit="s")] = None


def test_from_wire_conversions() -> None:
    spec = reflect(Wide, "key")
    frame = spec.from_wire(
        [
            {
                "key": "1",
                "flag": "true",
                "amount": 0.25,
                "when": "2024-01-01T10:00:00+02:00",
                "day": "2024-02-29",
                "level": "2",
                "tags": ["x"],
                "label": "",
                "priceFilter": {"tickSize": "5"},
                "epochSeconds": 1700000000,
            },
            {
                "key": 2,
                "flag": "",
                "amount": "",
                "when": "",
                "day": "",
                "level": "",
                "tags": None,
                "label": None,
            },
        ]
    )
    first, second = spec.from_frame(frame)
    assert first == Wide(
        key=1,
        flag=True,
        amount=Decimal("0.25"),
        when=datetime(2024, 1, 1, 8, tzinfo=UTC),
        day=date(2024, 2, 29),
        level=Level.HIGH,
        tags=["x"],
        label="",  # text keeps ""
        price_filter=PriceFilter(Decimal("5"), None),
        seconds=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    )
    assert second == Wide(2, None, None, None, None, None, None, None)


def test_from_wire_missing_field_is_a_decode_error_naming_it() -> None:
    spec = reflect(Trade, "id")
    broken = [dict(BYBIT_TRADES[0]), {k: v for k, v in BYBIT_TRADES[0].items() if k != "p"}]
    with pytest.raises(DecodeError) as info:
        spec.from_wire(broken)
    assert info.value.field == "p"
    assert "'p'" in str(info.value)
    assert info.value.raw is not None and '"T"' in info.value.raw

    inst = reflect(Instrument, "symbol")
    with pytest.raises(DecodeError) as info:
        inst.from_wire([{"symbol": "X", "status": "s", "baseCoin": "B", "priceFilter": {}}])
    assert info.value.field == "priceFilter.tickSize"


@pytest.mark.parametrize(
    ("change", "field_name", "shown"),
    [
        ({"p": "12,5"}, "p", "'12,5'"),
        ({"p": ""}, "p", "''"),
        ({"p": None}, "p", "None"),
        ({"v": "abc"}, "v", "'abc'"),
        ({"S": "Hold"}, "S", "'Hold'"),
        ({"T": "yesterday"}, "T", "'yesterday'"),
        ({"BT": "maybe"}, "BT", "'maybe'"),
        ({"seq": "1.5"}, "seq", "'1.5'"),
        ({"i": {"nested": 1}}, "i", "{'nested': 1}"),
    ],
)
def test_from_wire_bad_values_are_decode_errors(
    change: dict[str, Any], field_name: str, shown: str
) -> None:
    spec = reflect(Trade, "id")
    with pytest.raises(DecodeError) as info:
        spec.from_wire([BYBIT_TRADES[0], {**BYBIT_TRADES[0], **change}])
    assert info.value.field == field_name
    assert shown in str(info.value)


def test_from_wire_large_batches_match_small_ones() -> None:
    spec = reflect(Trade, "id")
    items = [
        {**BYBIT_TRADES[0], "i": f"id-{n}", "p": str(n / 4), "S": "Buy" if n % 2 else "Sell"}
        for n in range(10_000)
    ]
    big = spec.from_wire(items)
    small = pl.concat([spec.from_wire(items[i : i + 100]) for i in range(0, 10_000, 100)])
    assert big.equals(small)
    with pytest.raises(DecodeError, match="'Hold'"):
        spec.from_wire([*items, {**items[0], "S": "Hold"}])


def test_column_helpers() -> None:
    spec: EntitySpec = reflect(Trade, "id")
    col: Column = spec.column("time")
    assert col.wire_name == "T" and col.wire_unit == "ms"
    with pytest.raises(ValidationError):
        spec.column("nope")
    assert spec.names[0] == "id"


@dataclass
class Listing:
    symbol: str
    lot: Annotated[PriceFilter, wire("lotSizeFilter")]  # renames the prefix of its leaves
    listed: Annotated[datetime, wire("launchTime")]


def test_wire_alias_on_a_nested_dataclass_and_to_wire_round_trip() -> None:
    spec = reflect(Listing, "symbol")
    assert [c.wire_path for c in spec.columns] == [
        ("symbol",),
        ("lotSizeFilter", "tickSize"),
        ("lotSizeFilter", "minPrice"),
        ("launchTime",),
    ]
    wire_rows = [
        {
            "symbol": "BTCUSDT",
            "lotSizeFilter": {"tickSize": "0.001", "minPrice": "5"},
            "launchTime": "1585526400000",
        }
    ]
    frame = spec.from_wire(wire_rows)
    assert spec.from_frame(frame) == [
        Listing(
            "BTCUSDT",
            PriceFilter(Decimal("0.001"), 5.0),
            datetime(2020, 3, 30, tzinfo=UTC),
        )
    ]
    again = spec.from_wire([spec.to_wire(r) for r in frame.iter_rows(named=True)])
    assert again.equals(frame)
