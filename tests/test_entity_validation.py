"""Bad values are refused by the entity, naming the column, before anything reaches a store.

And the values hubkit does accept are kept the same way everywhere: a NaN in an optional
float column is no value (null) in the frame, the cache and the store alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

import hubkit
from hubkit.entity import reflect
from hubkit.errors import DecodeError, ValidationError


@dataclass
class Reading:
    id: str
    value: float
    spread: float | None = None
    count: int = 0
    note: str = "-"
    tags: list[str] = field(default_factory=list)


SPEC = reflect(Reading, "id")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[hubkit.Sink]:
    with hubkit.open_sink(Reading, key="id", store=tmp_path / "readings.db") as opened:
        yield opened


def _refused(rows: object, column: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        SPEC.to_frame(rows)  # type: ignore[arg-type]
    assert caught.value.column == column, caught.value
    assert column in str(caught.value)
    return caught.value


# -- NaN -------------------------------------------------------------------------------------


def test_nan_in_an_optional_float_is_null_in_frame_cache_and_store(sink: hubkit.Sink) -> None:
    sink.dao.upsert([Reading("a", 1.0, spread=math.nan), Reading("b", 2.0, spread=0.5)]).wait()
    assert sink.frame().sort("id").get_column("spread").to_list() == [None, 0.5]
    assert sink.dao.query().sort("id").get_column("spread").to_list() == [None, 0.5]
    assert sink.dao.get("a") == Reading("a", 1.0, spread=None)
    frame = pl.DataFrame({"id": ["x"], "value": [1.0], "spread": [math.nan]})
    assert SPEC.to_frame(frame).item(0, "spread") is None


@pytest.mark.parametrize(
    "rows",
    [
        [Reading("a", math.nan)],
        [{"id": "a", "value": math.nan}],
        pl.DataFrame({"id": ["a", "b"], "value": [1.0, math.nan]}),
    ],
    ids=["entity", "dict", "frame"],
)
def test_nan_in_a_required_float_is_a_validation_error(rows: object) -> None:
    error = _refused(rows, "value")
    assert "NaN" in str(error)


def test_nan_in_a_required_float_leaves_the_store_as_it_was(sink: hubkit.Sink) -> None:
    sink.dao.upsert([Reading("a", 1.0)]).wait()
    with pytest.raises(ValidationError) as caught:
        sink.dao.upsert([Reading("b", 2.0), Reading("c", math.nan)])
    assert caught.value.column == "value"
    assert sink.dao.count() == 1 and sink.frame().height == 1


# -- text ------------------------------------------------------------------------------------


def test_a_lone_surrogate_is_a_validation_error_naming_the_column() -> None:
    error = _refused([Reading("a", 1.0, note="ok \ud800 not")], "note")
    assert "surrogate" in str(error)
    _refused([{"id": "\udfff", "value": 1.0}], "id")


# -- dict rows -------------------------------------------------------------------------------


def test_dict_rows_with_an_unknown_key_are_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        SPEC.to_frame([{"id": "a", "value": 1.0}, {"id": "b", "value": 2.0, "valeu": 3.0}])
    assert caught.value.column == "valeu" and "valeu" in str(caught.value)


def test_dict_rows_take_dataclass_defaults_for_missing_fields() -> None:
    frame = SPEC.to_frame([{"id": "a", "value": 1.0}])
    assert frame.row(0, named=True) == {
        "id": "a",
        "value": 1.0,
        "spread": None,
        "count": 0,
        "note": "-",
        "tags": "[]",
    }
    assert SPEC.from_frame(frame) == [Reading("a", 1.0)]


# -- bool is not a number --------------------------------------------------------------------


@pytest.mark.parametrize("column", ["count", "value"])
def test_true_is_not_a_number(column: str) -> None:
    row = {"id": "a", "value": 1.0, column: True}
    _refused([row], column)
    _refused([Reading(**row)], column)  # type: ignore[arg-type]


# -- keys of the wrong type ------------------------------------------------------------------


@dataclass
class Sample:
    sensor: str
    seq: int
    value: float


def test_deleting_a_key_of_the_wrong_type_is_refused_not_ignored(tmp_path: Path) -> None:
    with hubkit.open_sink(Sample, key=("sensor", "seq"), store=tmp_path / "s.db") as sink:
        sink.dao.upsert([Sample("a", 1, 0.5)]).wait()
        for wrong, column in [(("a", "1"), "seq"), ((1, 1), "sensor"), (("a", True), "seq")]:
            with pytest.raises(ValidationError) as caught:
                sink.dao.delete(wrong)
            assert caught.value.column == column, wrong
        assert sink.dao.count() == 1
        sink.dao.delete(("a", 1)).wait()
        assert sink.dao.count() == 0


def test_a_single_key_of_the_wrong_type_is_refused(sink: hubkit.Sink) -> None:
    with pytest.raises(ValidationError) as caught:
        sink.dao.delete(5)
    assert caught.value.column == "id" and "5" in str(caught.value)
    with pytest.raises(ValidationError):
        sink.dao.get(5)


def test_a_lone_surrogate_on_the_wire_is_a_decode_error_naming_the_field() -> None:
    # stdlib json (unlike msgspec) decodes "\ud800" escapes into lone surrogates
    items = json.loads('[{"id": "a", "value": 1, "count": 0, "tags": [], "note": "x\\ud800"}]')
    with pytest.raises(DecodeError) as caught:
        SPEC.from_wire(items)
    assert caught.value.field == "note" and "surrogate" in str(caught.value)
    del items[0]["count"]  # the error about another field still shows the object
    with pytest.raises(DecodeError) as caught:
        SPEC.from_wire(items)
    assert caught.value.field == "count" and caught.value.raw is not None
