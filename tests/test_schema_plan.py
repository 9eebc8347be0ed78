"""The schema-change decision alone (``hubkit.store.evolve.plan``): no database involved."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hubkit.entity import reflect
from hubkit.store.evolve import (
    Stored,
    plan,
    refusal_message,
    same_columns,
    spec_stored,
    stored_of,
)


class Color(enum.Enum):
    RED = "red"


@dataclass
class V1:
    id: int
    n: int
    color: Color
    label: str


def stored_v1() -> Stored:
    return stored_of(spec_stored(reflect(V1, "id")).as_json())  # through its JSON form


def test_same_definition_plans_nothing() -> None:
    p = plan(stored_v1(), reflect(V1, "id"))
    assert (p.add, p.widen, p.relax, p.remove, p.refused, p.changes) == ((),) * 6
    assert p.result == stored_v1()


def test_each_safe_change_is_planned() -> None:
    @dataclass
    class V2:
        label: str | None  # Optional now, and moved first
        id: int
        n: float  # widened
        color: str  # an enum becoming its values' type
        extra: int = 3  # new, with a default

    p = plan(stored_v1(), reflect(V2, "id"))
    assert p.refused == ()
    assert [c.name for c in p.add] == ["extra"]
    assert p.widen == (("n", "float"),) and p.relax == ("label",) and p.rebuild
    assert p.reordered
    assert [c[0] for c in p.changes] == ["widened", "widened", "nullable", "added", "reordered"]
    assert [c.name for c in p.result.columns] == ["label", "id", "n", "color", "extra"]


def test_a_removed_field_is_kept_nullable_and_comes_back() -> None:
    @dataclass
    class V3:
        id: int
        n: int
        color: Color

    p = plan(stored_v1(), reflect(V3, "id", table="v1"))
    assert p.remove == ("label",) and p.relax == ("label",) and p.refused == ()
    assert [(k.name, k.nullable) for k in p.result.kept] == [("label", True)]
    back = plan(p.result, reflect(V1, "id"))
    assert back.restore == ("label",) and back.must_have_values == ("label",)
    assert back.result.kept == () and back.refused == ()


def test_everything_else_is_refused_with_one_entry_per_difference() -> None:
    @dataclass
    class V4:
        id: int
        n: str  # int -> str: a rewrite
        color: Color
        label: str
        needed: int  # new, required, no default

    p = plan(stored_v1(), reflect(V4, ("id", "n")))
    assert p.refused == (
        "key (stored ('id',), now ('id', 'n'))",
        "n (stored int, now str)",
        "needed (not stored; it is not Optional and has no default, so the stored rows have "
        "no value for it)",
    )


def test_same_columns_names_tables_of_another_class_only() -> None:
    @dataclass
    class Renamed:
        id: int
        n: int
        color: Color
        label: str

    tables = {"v1": stored_v1(), "other": spec_stored(reflect(Renamed, "id", table="other"))}
    assert same_columns(reflect(Renamed, "id"), "renamed", tables) == ["v1"]
    assert same_columns(reflect(Renamed, "id"), "chosen", tables) == []  # not its own name
    legacy = {"v1": Stored(stored_v1().columns, ("id",))}  # class not recorded: no guess
    assert same_columns(reflect(Renamed, "id"), "renamed", legacy) == []


def test_the_refusal_names_the_call_and_command_without_a_password() -> None:
    url = "postgresql+psycopg://hub:s3cret@db.example/market"
    text = refusal_message("v1", reflect(V1, "id"), ["n (stored int, now str)"], url)
    assert "s3cret" not in text
    assert "n (stored int, now str)" in text
    assert "hubkit.Store('postgresql+psycopg://hub:***@db.example/market').migrate(" in text
    assert "`hubkit migrate 'postgresql+psycopg://hub:***@db.example/market' v1`" in text
