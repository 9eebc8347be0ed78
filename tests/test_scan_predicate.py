"""Polars filter -> SQL WHERE: what is pushed, what is left to Polars, and exactness."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from hubkit.scan import (
    Pushdown,
    ReadPlan,
    SqliteStatements,
    compile_sqlite,
    default_rules,
    plan_read,
    translate,
    typed_first_row,
)
from hubkit.scan.condition import clause

SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "price": pl.Float64,
        "qty": pl.Int64,
        "time": pl.Datetime("us", "UTC"),
        "day": pl.Date,
        "block": pl.Boolean,
        "side": pl.Enum(["Buy", "Sell"]),
        "fee": pl.Decimal(20, 4),
    }
)
TABLE = sa.Table(
    "trades",
    sa.MetaData(),
    sa.Column("symbol", sa.Text),
    sa.Column("price", sa.Double),
    sa.Column("qty", sa.BigInteger),
    sa.Column("time", sa.BigInteger),
    sa.Column("day", sa.Text),
    sa.Column("block", sa.Boolean),
    sa.Column("side", sa.Text),
    sa.Column("fee", sa.Text),
)
RULES = default_rules(SCHEMA)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_US = 1_704_067_200_000_000


def where(expr: pl.Expr) -> tuple[str | None, tuple[object, ...], bool]:
    """(WHERE text, parameters, exact) of ``expr``'s pushdown."""
    pushed = translate(expr, TABLE, RULES)
    if pushed.where is None:
        return None, (), pushed.exact
    assert pushed.condition is not None
    # A reader with the shape's SQL compiled binds ``params``, taken without the clause:
    # they must be the clause's own values, by the same names.
    assert pushed.params == clause(pushed.condition, TABLE)[1]
    sql, params = compile_sqlite(sa.select(TABLE.c.symbol).where(pushed.where))
    return sql.split("WHERE ", 1)[1], params, pushed.exact


def test_symbol_and_time_range_push_whole_and_exact() -> None:
    expr = (pl.col("symbol") == "BTCUSDT") & pl.col("time").is_between(
        T0, datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    )
    assert where(expr) == (
        "trades.symbol = ? AND trades.time >= ? AND trades.time <= ?",
        ("BTCUSDT", T0_US, T0_US + 60_000_000),
        True,
    )


@pytest.mark.parametrize(
    ("expr", "sql", "params"),
    [
        (pl.col("qty") != 3, "trades.qty != ?", (3,)),
        (pl.col("price") < 1.5, "trades.price < ?", (1.5,)),
        (pl.col("price") >= 2, "trades.price >= ?", (2,)),
        (pl.lit(5) < pl.col("qty"), "trades.qty > ?", (5,)),  # literal on the left: flipped
        (pl.col("day") <= date(2024, 2, 3), "trades.day <= ?", ("2024-02-03",)),
        (pl.col("block"), "trades.block = ?", (1,)),
        (~pl.col("block"), "trades.block = ?", (0,)),
        (pl.col("side") == "Buy", "trades.side = ?", ("Buy",)),
        (pl.col("symbol").is_null(), "trades.symbol IS NULL", ()),
        (pl.col("symbol").is_not_null(), "trades.symbol IS NOT NULL", ()),
        (~pl.col("symbol").is_null(), "trades.symbol IS NOT NULL", ()),
        (pl.col("qty").is_in([1, 2]), "trades.qty IN (?, ?)", (1, 2)),
        (~pl.col("qty").is_in([1, 2]), "(trades.qty NOT IN (?, ?))", (1, 2)),
        (
            pl.col("qty").is_between(1, 9, closed="none"),
            "trades.qty > ? AND trades.qty < ?",
            (1, 9),
        ),
        (
            ~pl.col("qty").is_between(1, 9),
            "trades.qty < ? OR trades.qty > ?",
            (1, 9),
        ),
        (~(pl.col("qty") < 4), "trades.qty >= ?", (4,)),
        (
            (pl.col("qty") == 1) | (pl.col("symbol") == "A"),
            "trades.qty = ? OR trades.symbol = ?",
            (1, "A"),
        ),
        (
            ~((pl.col("qty") == 1) & (pl.col("symbol") == "A")),
            "trades.qty != ? OR trades.symbol != ?",
            (1, "A"),
        ),
    ],
)
def test_exact_translations(expr: pl.Expr, sql: str, params: tuple[object, ...]) -> None:
    assert where(expr) == (sql, params, True)


def test_the_pushable_side_of_an_and_is_pushed_alone_and_is_not_exact() -> None:
    expr = (pl.col("qty") > 3) & pl.col("symbol").str.starts_with("BTC")
    assert where(expr) == ("trades.qty > ?", (3,), False)


def test_an_or_with_an_unpushable_side_is_not_pushed() -> None:
    assert where((pl.col("qty") > 3) | pl.col("symbol").str.starts_with("BTC"))[0] is None


def test_the_negation_of_a_partly_pushable_and_is_not_pushed() -> None:
    # ~(a & x) keeps rows where a is false OR x is false: a alone does not bound it.
    assert where(~((pl.col("qty") > 3) & pl.col("symbol").str.starts_with("B")))[0] is None


def test_the_negation_of_a_partly_pushable_or_pushes_the_known_side() -> None:
    # ~(a | x) keeps rows where both are false, so where a is false.
    expr = ~((pl.col("qty") > 3) | pl.col("symbol").str.starts_with("B"))
    assert where(expr) == ("trades.qty <= ?", (3,), False)


@pytest.mark.parametrize(
    "expr",
    [
        pl.col("fee") == Decimal("0.1"),  # decimals are text: equal numbers, different text
        pl.col("side") < "Sell",  # enum order is the category order, not the text's
        pl.col("time") > datetime(2024, 1, 1),  # naive literal against an aware column
        pl.col("qty") > pl.col("price"),  # two columns
        (pl.col("qty") + 1) > 3,  # arithmetic
        pl.col("qty") == pl.lit(None, pl.Int64),  # a comparison with null is never true
        pl.col("missing") == 1,  # not a column of the table
        pl.col("price") != float("nan"),  # SQL binds NaN as NULL: no row would match
    ],
)
def test_unpushable_filters_are_left_to_polars(expr: pl.Expr) -> None:
    assert translate(expr, TABLE, RULES) == Pushdown(None, exact=False, table=TABLE)


def test_is_in_with_null_follows_nulls_equal() -> None:
    assert where(pl.col("symbol").is_in(["A", None])) == ("trades.symbol IN (?)", ("A",), True)
    assert where(pl.col("symbol").is_in(["A", None], nulls_equal=True)) == (
        "trades.symbol IN (?) OR trades.symbol IS NULL",
        ("A",),
        True,
    )
    assert where(~pl.col("symbol").is_in(["A"], nulls_equal=True)) == (
        "(trades.symbol NOT IN (?)) OR trades.symbol IS NULL",
        ("A",),
        True,
    )


def test_a_long_is_in_list_on_an_ordered_column_is_bounded_by_its_range() -> None:
    values = list(range(10, 5_010))
    assert where(pl.col("qty").is_in(values)) == (
        "trades.qty BETWEEN ? AND ?",
        (10, 5_009),
        False,
    )
    assert where(pl.col("side").is_in(["Buy"] * 2_000))[0] is None


def test_rules_decide_which_columns_push() -> None:
    rules = default_rules(SCHEMA)
    only_symbol = type(rules)(encode=rules.encode, compare={"symbol": "equality"})
    expr = (pl.col("symbol") == "A") & (pl.col("qty") == 1) & (pl.col("symbol") > "B")
    pushed = translate(expr, TABLE, only_symbol)
    assert pushed.where is not None and not pushed.exact
    assert compile_sqlite(sa.select(TABLE.c.qty).where(pushed.where))[1] == ("A",)


def test_datetimes_and_dates_push_as_themselves_only_where_rules_allow_native_times() -> None:
    def encode(name: str, value: object) -> object:
        return value  # a store of native types: the datetime and the date themselves

    expr = (pl.col("time") >= T0) & (pl.col("day") < date(2024, 2, 3))
    plain = translate(expr, TABLE, type(RULES)(encode=encode, compare=RULES.compare))
    assert plain.where is None  # no plain SQL type binds them: left to Polars
    native = type(RULES)(encode=encode, compare=RULES.compare, native_times=True)
    pushed = translate(expr, TABLE, native)
    assert pushed.exact and pushed.where is not None
    sql = str(sa.select(TABLE.c.qty).where(pushed.where).compile(dialect=postgresql.dialect()))
    assert "trades.time >= CAST(" in sql and "AS TIMESTAMP WITH TIME ZONE)" in sql
    assert "trades.day < CAST(" in sql and "AS DATE)" in sql
    # bound as ISO text, exact to the microsecond, by the names the clause uses
    assert pushed.params == {"p0": "2024-01-01T00:00:00+00:00", "p1": "2024-02-03"}
    assert pushed.params == clause(pushed.condition, TABLE)[1]


def test_a_literal_the_encoder_refuses_is_left_to_polars() -> None:
    def encode(name: str, value: object) -> object:
        raise ValueError(f"cannot store {value!r} in {name}")

    rules = type(RULES)(encode=encode, compare=RULES.compare)
    pushed = translate((pl.col("qty") == 1) & pl.col("symbol").is_null(), TABLE, rules)
    assert pushed.where is not None and not pushed.exact
    assert "IS NULL" in compile_sqlite(sa.select(TABLE.c.qty).where(pushed.where))[0]


@pytest.mark.parametrize(
    "value",
    [
        pl.lit(3),
        pl.lit(-(2**62), pl.Int64),
        pl.lit(7, pl.UInt8),
        pl.lit(1.25),
        pl.lit(2.5, pl.Float32),
        pl.lit("BTC"),
        pl.lit(True),
        pl.lit(None, pl.Int64),
        pl.lit(date(1969, 12, 31)),
        pl.lit(datetime(2024, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)),
        pl.lit(datetime(1960, 1, 1, 0, 0, 0, 1)),
        pl.lit(datetime(2024, 5, 6, 7, 8, 9, 10_000, tzinfo=UTC), dtype=pl.Datetime("ms", "UTC")),
        pl.lit(datetime(2024, 5, 6, 7, 8, 9, 10_001), dtype=pl.Datetime("ns")),
        pl.lit(datetime(2024, 5, 6, 7, 8, 9, tzinfo=ZoneInfo("Asia/Tokyo"))),
    ],
)
def test_literals_read_directly_equal_what_polars_evaluates(value: pl.Expr) -> None:
    from hubkit.scan.predicate import _literal_values

    node = json.loads(value.meta.serialize(format="json"))
    assert _literal_values(node) == pl.select(value).to_series().to_list()


def plan_for(expr: pl.Expr) -> ReadPlan:
    return plan_read(TABLE, SCHEMA, RULES, predicate=expr, n_rows=10)


def test_plans_of_one_shape_compile_once_and_bind_their_own_values() -> None:
    statements = SqliteStatements(size=2)
    first = plan_for((pl.col("symbol") == "A") & (pl.col("qty").is_in([1, 2])))
    second = plan_for((pl.col("symbol") == "B") & (pl.col("qty").is_in([3, 4])))
    other = plan_for((pl.col("symbol") == "B") & (pl.col("qty").is_in([3, 4, 5])))
    assert first.shape == second.shape != other.shape
    for plan in (first, second, other, first):
        # Each read runs exactly what compiling its own statement gives.
        assert statements.sql(plan) == compile_sqlite(typed_first_row(plan.statement))
    assert "LIMIT" in statements.sql(first)[0]


def test_a_literal_finer_than_microseconds_is_left_to_polars() -> None:
    # Python datetimes hold microseconds: 500 ns would be cut and `time < t` lose rows.
    def ns(value: int) -> pl.Expr:
        return pl.lit(pl.Series([value]).cast(pl.Datetime("ns", "UTC")))

    assert translate(pl.col("time") < ns(T0_US * 1000 + 500), TABLE, RULES).where is None
    assert where(pl.col("time") < ns(T0_US * 1000)) == ("trades.time < ?", (T0_US,), True)


def test_a_stored_integer_beyond_64_bits_is_left_to_polars() -> None:
    rules = type(RULES)(encode=lambda name, value: value * 2**40, compare=RULES.compare)
    assert translate(pl.col("qty") < 2**30, TABLE, rules).where is None
    assert translate(pl.col("qty") < 2**20, TABLE, rules).where is not None
