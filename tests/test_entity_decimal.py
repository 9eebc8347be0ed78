"""Decimals compare as numbers: one canonical text per value, in frames and in the store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import hubkit
from hubkit.entity import canonical_decimal, reflect
from hubkit.errors import ValidationError


@dataclass
class Quote:
    id: str
    price: Decimal
    tick: Decimal | None = None


@dataclass
class Level:
    price: Decimal  # a decimal key
    size: float


@pytest.fixture
def quotes(tmp_path: Path) -> Iterator[hubkit.Sink]:
    with hubkit.open_sink(Quote, key="id", store=tmp_path / "quotes.db") as sink:
        yield sink


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.1000"), "0.1"),
        (Decimal("1.0E-1"), "0.1"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.00"), "0"),
        (Decimal("0E-30"), "0"),
        (Decimal("-12.340"), "-12.34"),
        (Decimal("1E-30"), "0." + "0" * 29 + "1"),
        (Decimal("123456789012345678901234567890.000"), "123456789012345678901234567890"),
    ],
)
def test_one_text_per_value(value: Decimal, text: str) -> None:
    assert canonical_decimal(value) == text
    assert Decimal(text) == value


def test_equal_decimals_written_any_way_are_one_text() -> None:
    spec = reflect(Quote, "id")
    ways: list[object] = [
        [Quote("a", Decimal("0.1000"))],
        [{"id": "a", "price": "0.10"}],
        [{"id": "a", "price": 0.1}],
        pl.DataFrame({"id": ["a"], "price": ["1e-1"]}),
        pl.DataFrame({"id": ["a"], "price": pl.Series([Decimal("0.100")])}),
    ]
    for rows in ways:
        assert spec.to_frame(rows).item(0, "price") == "0.1", rows  # type: ignore[arg-type]
    assert spec.from_wire([{"id": "a", "price": "0.100"}]).item(0, "price") == "0.1"


def test_a_query_for_a_decimal_finds_rows_written_with_another_scale(
    quotes: hubkit.Sink,
) -> None:
    quotes.dao.upsert(
        [
            Quote("a", Decimal("0.1000"), tick=Decimal("0.010")),
            Quote("b", Decimal("0.10")),
            Quote("c", Decimal("0.2")),
        ]
    ).wait()
    found = quotes.dao.query({"price": Decimal("0.1")}).sort("id")
    assert found.get_column("id").to_list() == ["a", "b"]
    assert quotes.dao.query({"price": [Decimal("0.200"), Decimal("9")]}).height == 1
    assert quotes.dao.query({"tick": Decimal("0.01")}).get_column("id").to_list() == ["a"]
    # the value comes back equal; its written scale is not kept (documented)
    assert quotes.dao.get("a") == Quote("a", Decimal("0.1"), tick=Decimal("0.01"))


def test_equal_decimal_keys_are_one_row(tmp_path: Path) -> None:
    with hubkit.open_sink(Level, key="price", store=tmp_path / "book.db") as book:
        book.dao.upsert([Level(Decimal("100.50"), 1.0)]).wait()
        book.dao.upsert([Level(Decimal("100.5"), 2.0)]).wait()
        assert book.dao.count() == 1 and book.frame().height == 1
        assert book.dao.get(Decimal("100.500")) == Level(Decimal("100.5"), 2.0)
        book.dao.delete(Decimal("1.005E+2")).wait()
        assert book.dao.count() == 0


@pytest.mark.parametrize("bad", ["1_000", " 1", "NaN", "Infinity", "0x10", ""])
def test_text_outside_the_decimal_grammar_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        reflect(Quote, "id").to_frame([{"id": "a", "price": bad}])
    assert caught.value.column == "price"
