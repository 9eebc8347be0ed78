"""Declared indexes: the declaration forms, stable names, creation on new and existing tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex

from hubkit.errors import SchemaError
from hubkit.indexes import (
    declared_indexes,
    index,
    index_name,
    missing_indexes,
    table_indexes,
)


@index("symbol", "time")
@index("side")
@dataclass
class Trade:
    id: str
    symbol: str
    side: str
    time: datetime


@dataclass
class TradeByAttribute:
    __hubkit_indexes__: ClassVar = ["side", ("symbol", "time")]
    id: str
    symbol: str
    side: str
    time: datetime


def trades_table(name: str = "trades") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("symbol", sa.Text),
        sa.Column("side", sa.Text),
        sa.Column("time", sa.BigInteger),
        sa.Column("fee__rate", sa.Text),
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'idx.db'}")
    yield engine
    engine.dispose()


def plan(conn: sa.Connection, sql: str) -> str:
    return " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))


def test_the_decorator_and_the_class_attribute_declare_the_same_indexes() -> None:
    assert set(declared_indexes(Trade)) == {("symbol", "time"), ("side",)}
    assert set(declared_indexes(TradeByAttribute)) == set(declared_indexes(Trade))


def test_a_subclass_adds_indexes_without_changing_its_base() -> None:
    @index("id", "time")
    class Sub(Trade):
        pass

    assert ("id", "time") in declared_indexes(Sub)
    assert ("id", "time") not in declared_indexes(Trade)


def test_an_undecorated_class_declares_none() -> None:
    @dataclass
    class Plain:
        id: str

    assert declared_indexes(Plain) == ()


def test_indexes_are_created_with_a_new_table_and_used(engine: sa.Engine) -> None:
    table = trades_table()
    made = table_indexes(table, declared_indexes(Trade), key=("id",))
    assert sorted(str(ix.name) for ix in made) == ["ix_trades__side", "ix_trades__symbol__time"]
    table.metadata.create_all(engine)
    with engine.connect() as conn:
        names = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list(trades)")}
        assert {"ix_trades__side", "ix_trades__symbol__time"} <= names
        detail = plan(conn, "SELECT * FROM trades WHERE symbol = 'A' AND time BETWEEN 1 AND 2")
        assert "USING INDEX ix_trades__symbol__time" in detail


def test_indexes_missing_from_an_existing_table_are_added_once(engine: sa.Engine) -> None:
    trades_table().metadata.create_all(engine)  # a table made before any index was declared
    with engine.begin() as conn:
        assert "USING INDEX" not in plan(conn, "SELECT * FROM trades WHERE symbol = 'A'")
        table = trades_table()  # reopened: a fresh Table object, as on every open
        wanted = table_indexes(table, declared_indexes(Trade), [("symbol", "time")])
        missing = missing_indexes(wanted, sa.inspect(conn).get_indexes("trades"))
        assert {str(ix.name) for ix in missing} == {"ix_trades__side", "ix_trades__symbol__time"}
        for ix in missing:
            conn.execute(CreateIndex(ix))
    with engine.connect() as conn:
        detail = plan(conn, "SELECT * FROM trades WHERE symbol = 'A' AND time > 5")
        assert "USING INDEX ix_trades__symbol__time" in detail
        again = table_indexes(trades_table(), declared_indexes(Trade))
        assert missing_indexes(again, sa.inspect(conn).get_indexes("trades")) == []


def test_an_index_made_by_hand_on_the_same_columns_counts_as_present(engine: sa.Engine) -> None:
    trades_table().metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX my_own ON trades (symbol, time)")
        wanted = table_indexes(trades_table(), declared_indexes(Trade))
        missing = missing_indexes(wanted, sa.inspect(conn).get_indexes("trades"))
    assert [str(ix.name) for ix in missing] == ["ix_trades__side"]


def test_names_are_stable_and_distinct() -> None:
    assert index_name("trades", ["symbol", "time"]) == "ix_trades__symbol__time"
    assert index_name("trades", ["symbol", "time"]) == index_name("trades", ("symbol", "time"))
    long_a = index_name("t" * 60, ["symbol", "time"])
    long_b = index_name("t" * 60, ["symbol", "side"])
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b
    # Characters SQL would need quoted are replaced, and the name stays distinct.
    assert index_name("my-trades", ["a"]) != index_name("my_trades", ["a"])
    # A nested column's "__" does not make it read like two columns.
    assert index_name("t", ["a__b"]) != index_name("t", ["a", "b"])
    assert len(index_name("t", ["fee__rate"])) <= 63


def test_declarations_merge_without_repeats_and_skip_the_key() -> None:
    table = trades_table()
    made = table_indexes(
        table, [("symbol", "time"), "id"], [("symbol", "time"), ("fee.rate",)], key=("id",)
    )
    assert [tuple(c.name for c in ix.columns) for ix in made] == [
        ("symbol", "time"),
        ("fee__rate",),
    ]
    # Asked again for the same table: the same, attached, objects.
    assert table_indexes(table, [("symbol", "time")]) == made[:1]
    assert len(table.indexes) == 2


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ([("symbol", "price")], "no column(s) ['price']"),
        ([()], "an index is a column name"),
        ([("symbol", "symbol")], "names a column twice"),
        ([("symbol", 3)], "an index is a column name"),
    ],
)
def test_bad_declarations_name_what_is_wrong(declared: list[object], message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        table_indexes(trades_table(), declared)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_a_class_attribute_that_is_not_a_list_is_refused() -> None:
    class Bad:
        __hubkit_indexes__ = "symbol"

    with pytest.raises(SchemaError, match="__hubkit_indexes__ must be a list"):
        declared_indexes(Bad)


def test_index_needs_columns() -> None:
    with pytest.raises(SchemaError, match="at least one column"):
        index()
