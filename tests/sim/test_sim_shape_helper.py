from __future__ import annotations

from simshape import shape_diff


def test_equal_shapes_have_no_diff() -> None:
    assert shape_diff({"a": "1", "b": [[1, "x"]]}, {"a": "2", "b": [[3, "y"], [4, "z"]]}) == []


def test_reports_missing_extra_and_type_changes() -> None:
    diff = shape_diff({"a": "1", "b": 2}, {"b": "2", "c": 3})
    assert diff == [
        "$.a: missing in simulator",
        "$.b: sample has number, simulator has string",
        "$.c: not in sample",
    ]


def test_allowances() -> None:
    assert shape_diff({"a": 1}, {"a": 1, "new": 2}, extra_ok={"new"}) == []
    assert shape_diff({"time": "17"}, {"time": 17}, stringified={"time"}) == []
    assert shape_diff({"time": 17}, {"time": "17"}, stringified={"time"}) != []
    assert shape_diff({"result": {}}, {"result": {"x": 1}}) == []
    assert shape_diff({"x": True}, {"x": 1}) == ["$.x: sample has boolean, simulator has number"]
