"""Polars predicate -> SQL WHERE clause: the part of a filter a database can apply.

``translate(predicate, table, rules)`` walks a Polars boolean expression and returns a
``Pushdown``: a condition over ``table``'s columns (``hubkit.scan.condition``), its
SQLAlchemy clause, and whether it is exact. No I/O.

What is translated (a column on one side, a literal on the other):

- comparisons ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (literal on either side);
- ``is_in`` (a literal list or Series), ``is_between`` (any ``closed``);
- ``is_null`` / ``is_not_null``, a Boolean column used as a predicate;
- ``&``, ``|`` and ``~`` over the above, nested freely.

Anything else (arithmetic, string functions, two columns compared, casts, window
expressions ...) is left to Polars.

The promise is one of safety, not completeness: every row for which Polars evaluates the
predicate to true also satisfies the clause (the clause selects a superset). So the reader
must still apply the full predicate to what it reads; the clause only keeps rows that could
never pass from leaving the database. ``exact`` says the clause selects exactly the rows the
predicate keeps, which is what makes pushing a row limit into SQL safe too.

How each part is pushed follows from that promise and from Polars' three-valued logic
(null compares to null; a filter keeps only true rows). Translating "rows where ``e`` is
false" is needed below a ``~``: ``~(a & b)`` keeps rows where ``a`` or ``b`` is false, so
``a & b`` with only ``a`` translatable can be pushed as ``a``, while ``~(a & b)`` cannot be
pushed at all; ``a | b`` is pushed when both sides are.

Which literals may be pushed for which column is the caller's ``ColumnRules``: how a
Python value is stored (``encode``) and whether the stored form keeps the values' order
(``order``; text-stored decimals and enums do not) or only equality (``equality``). A value
``encode`` refuses (it raises ``ValueError``, ``TypeError`` or a ``HubkitError``) leaves that
part of the predicate to Polars.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any, Final, Literal

import polars as pl
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

from hubkit.errors import HubkitError
from hubkit.scan.condition import Condition, clause, shape, values

__all__ = ["ColumnRules", "Comparability", "Encoder", "Pushdown", "translate"]

Comparability = Literal["order", "equality"]
"""``order``: stored values sort like the values (ranges push); ``equality``: only ==/IN."""

Encoder = Callable[[str, Any], Any]
"""``encode(column_name, python_value) -> stored value`` (raise to refuse a value)."""

# Polars operator -> the condition keeping rows where it is true / where it is false
# (operands non-null).
_OPS: Final = {
    "Eq": ("eq", "ne"),
    "NotEq": ("ne", "eq"),
    "Lt": ("lt", "ge"),
    "LtEq": ("le", "gt"),
    "Gt": ("gt", "le"),
    "GtEq": ("ge", "lt"),
}
# `lit op col` is `col flipped(op) lit`.
_FLIPPED: Final = {
    "Eq": "Eq",
    "NotEq": "NotEq",
    "Lt": "Gt",
    "LtEq": "GtEq",
    "Gt": "Lt",
    "GtEq": "LtEq",
}
_EQUALITY_OPS: Final = frozenset({"Eq", "NotEq"})
_AND: Final = frozenset({"And", "LogicalAnd"})
_OR: Final = frozenset({"Or", "LogicalOr"})
# More IN values than this are pushed as a range (ordered columns) or not at all: SQLite
# caps the bound parameters of one statement.
MAX_IN_VALUES: Final = 1_000

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE: Final = date(1970, 1, 1)
_US_PER: Final = {"Microseconds": 1, "Milliseconds": 1_000}


@dataclass(frozen=True)
class ColumnRules:
    """How literals of each column may be pushed into SQL.

    ``encode(name, value)`` turns a Python value (as Polars hands it back: ``datetime``,
    ``date``, ``Decimal``, ``str`` ...) into the value stored in the column; ``compare``
    maps a column name to ``"order"`` or ``"equality"``; columns it does not name are never
    pushed. ``native_times``: ``encode`` may return ``datetime`` and ``date`` values, bound
    as ISO text and cast in SQL (for a database with those types, such as PostgreSQL);
    otherwise such a value is not pushed.
    """

    encode: Encoder
    compare: Mapping[str, Comparability]
    native_times: bool = False


@dataclass(frozen=True)
class Pushdown:
    """A condition that keeps a superset of the predicate's rows (None: no condition).

    ``exact``: it keeps exactly the rows the predicate keeps. ``where``: its SQLAlchemy
    clause over ``table`` (values bound as ``p0, p1, ...``); ``params``: those values;
    ``shape``: the condition without its values (equal shapes compile to equal SQL).
    """

    condition: Condition | None
    exact: bool
    table: sa.Table = field(repr=False, compare=False)

    @cached_property
    def _built(self) -> tuple[ColumnElement[bool] | None, dict[str, Any]]:
        if self.condition is None:
            return None, {}
        return clause(self.condition, self.table)

    @property
    def where(self) -> ColumnElement[bool] | None:
        return self._built[0]

    @cached_property
    def params(self) -> dict[str, Any]:
        # Without the clause: a reader with the shape's SQL compiled needs only these.
        return {} if self.condition is None else values(self.condition)

    @property
    def shape(self) -> Hashable:
        return None if self.condition is None else shape(self.condition)


class _Unpushable(Exception):
    """A node (or literal) that has no safe SQL form."""


# A condition and whether it is exact.
_Part = tuple[Condition, bool]


def translate(predicate: pl.Expr, table: sa.Table, rules: ColumnRules) -> Pushdown:
    """The pushable condition of ``predicate`` over ``table`` (see the module docstring)."""
    tree = json.loads(predicate.meta.serialize(format="json"))
    part = _Translator(table, rules).part(tree, want=True)
    if part is None:
        return Pushdown(None, exact=False, table=table)
    return Pushdown(part[0], exact=part[1], table=table)


class _Translator:
    def __init__(self, table: sa.Table, rules: ColumnRules) -> None:
        self.table = table
        self.rules = rules

    # A condition for "rows where the node evaluates to `want`"; None when none is safe.
    def part(self, node: Any, *, want: bool) -> _Part | None:
        try:
            return self._part(node, want)
        except _Unpushable:
            return None

    def _part(self, node: Any, want: bool) -> _Part | None:
        if not isinstance(node, dict) or len(node) != 1:
            raise _Unpushable
        ((kind, body),) = node.items()
        if kind == "BinaryExpr":
            op = body["op"]
            if op in _AND or op in _OR:
                return self._logical(op in _AND, body["left"], body["right"], want)
            return self._comparison(op, body["left"], body["right"], want)
        if kind == "Function":
            return self._function(body["function"], body["input"], want)
        if kind == "Column":
            # A Boolean column used as a predicate.
            name = self._column(node)
            return ("cmp", name, "eq", self._encode(name, want, "equality")), True
        if kind == "Literal":
            value = _literal_values(node)
            if len(value) != 1 or not isinstance(value[0], bool | None):
                raise _Unpushable
            # A constant: every row or no row has the value `want`.
            return ("const", value[0] is want), True
        raise _Unpushable

    def _logical(self, is_and: bool, left: Any, right: Any, want: bool) -> _Part | None:
        a, b = self.part(left, want=want), self.part(right, want=want)
        # "all of them": AND wanted true, or OR wanted false; either side alone is a superset.
        if is_and == want:
            parts = [p for p in (a, b) if p is not None]
            if not parts:
                return None
            exact = a is not None and b is not None and a[1] and b[1]
            return ("and", tuple(p[0] for p in parts)), exact
        # "any of them": both sides must be bounded.
        if a is None or b is None:
            return None
        return ("or", (a[0], b[0])), a[1] and b[1]

    def _comparison(self, op: str, left: Any, right: Any, want: bool) -> _Part:
        if op not in _OPS:
            raise _Unpushable
        if _is_literal(left) and not _is_literal(right):
            left, right, op = right, left, _FLIPPED[op]
        name = self._column(left)
        need: Comparability = "equality" if op in _EQUALITY_OPS else "order"
        values = _literal_values(right)
        if len(values) != 1 or values[0] is None:
            raise _Unpushable  # a comparison with null is never true
        stored = self._encode(name, values[0], need)
        return ("cmp", name, _OPS[op][0 if want else 1], stored), True

    def _function(self, function: Any, inputs: list[Any], want: bool) -> _Part | None:
        if not (isinstance(function, dict) and set(function) == {"Boolean"}):
            raise _Unpushable
        fn = function["Boolean"]
        if fn == "Not":
            (inner,) = inputs
            return self.part(inner, want=not want)
        if fn in ("IsNull", "IsNotNull"):
            (inner,) = inputs
            name = self._column(inner)
            return ("is_null" if (fn == "IsNull") == want else "not_null", name), True
        if isinstance(fn, dict) and "IsIn" in fn:
            return self._is_in(inputs, bool(fn["IsIn"].get("nulls_equal")), want)
        if isinstance(fn, dict) and "IsBetween" in fn:
            return self._is_between(inputs, str(fn["IsBetween"]["closed"]), want)
        raise _Unpushable

    def _is_in(self, inputs: list[Any], nulls_equal: bool, want: bool) -> _Part:
        column, listed = inputs
        name = self._column(column)
        values = _literal_values(listed)  # a list literal arrives as one list scalar
        has_null = any(v is None for v in values)
        present = [v for v in values if v is not None]
        # A null column value: null when not nulls_equal, else whether None was listed.
        null_is_want = nulls_equal and has_null == want
        cond: Condition
        if len(present) > MAX_IN_VALUES:
            if not want or self.rules.compare.get(name) != "order":
                raise _Unpushable
            low, high = min(present), max(present)
            lo, hi = self._encode(name, low, "order"), self._encode(name, high, "order")
            cond, exact = ("between", name, lo, hi), False
        elif not present:
            # Nothing listed: no value is in it, every non-null value is not.
            cond, exact = (("const", False) if want else ("not_null", name)), True
        else:
            stored = tuple(self._encode(name, v, "equality") for v in present)
            cond, exact = ("in" if want else "not_in", name, stored), True
        if null_is_want:
            cond = ("or", (cond, ("is_null", name)))
        return cond, exact

    def _is_between(self, inputs: list[Any], closed: str, want: bool) -> _Part:
        column, low_node, high_node = inputs
        name = self._column(column)
        (low,), (high,) = _literal_values(low_node), _literal_values(high_node)
        if low is None or high is None or closed not in ("Both", "Left", "Right", "None"):
            raise _Unpushable
        lo, hi = self._encode(name, low, "order"), self._encode(name, high, "order")
        lo_in, hi_in = closed in ("Both", "Left"), closed in ("Both", "Right")
        if want:
            inside = (
                ("cmp", name, "ge" if lo_in else "gt", lo),
                ("cmp", name, "le" if hi_in else "lt", hi),
            )
            return ("and", inside), True
        outside = (
            ("cmp", name, "lt" if lo_in else "le", lo),
            ("cmp", name, "gt" if hi_in else "ge", hi),
        )
        return ("or", outside), True

    def _column(self, node: Any) -> str:
        if not (isinstance(node, dict) and set(node) == {"Column"}):
            raise _Unpushable
        name = node["Column"]
        if not isinstance(name, str) or name not in self.table.c or name not in self.rules.compare:
            raise _Unpushable
        return name

    def _encode(self, name: str, value: Any, need: Comparability) -> Any:
        have = self.rules.compare.get(name)
        if have is None or (need == "order" and have != "order"):
            raise _Unpushable
        try:
            stored = self.rules.encode(name, value)
        except (ValueError, TypeError, ArithmeticError, HubkitError) as exc:
            raise _Unpushable from exc
        native = self.rules.native_times and isinstance(stored, date)
        if not (native or isinstance(stored, int | float | str | bytes)):
            raise _Unpushable  # None, or a value no plain SQL type binds
        if isinstance(stored, float) and math.isnan(stored):
            raise _Unpushable  # SQL binds NaN as NULL; Polars orders NaN above all numbers
        if isinstance(stored, int) and not _INT64_MIN <= stored <= _INT64_MAX:
            raise _Unpushable  # SQLite integers are 64-bit
        return stored


def _is_literal(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"Literal"}


def _scalar(node: Any) -> tuple[bool, Any]:
    """(True, value) for the common scalar literals, read without asking Polars."""
    literal = node["Literal"]
    if not isinstance(literal, dict) or len(literal) != 1:
        return False, None
    ((form, body),) = literal.items()
    if form == "Dyn" and isinstance(body, dict) and len(body) == 1:
        ((kind, value),) = body.items()
        if kind in ("Int", "Float", "Str") and isinstance(value, int | float | str):
            return True, value
        return False, None
    if form != "Scalar" or not isinstance(body, dict) or len(body) != 1:
        return False, None
    ((dtype, value),) = body.items()
    if dtype in ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"):
        return isinstance(value, int) and not isinstance(value, bool), value
    if dtype in ("Float32", "Float64"):
        return isinstance(value, float | int) and not isinstance(value, bool), value
    if dtype in ("String", "Boolean") or value is None:
        return isinstance(value, str | bool | None), value
    if dtype == "Date" and isinstance(value, int):
        return True, _EPOCH_DATE + timedelta(days=value)
    if dtype == "Datetime" and isinstance(value, list) and len(value) == 3:
        count, unit, zone = value
        if isinstance(count, int) and unit in _US_PER and zone in (None, {"inner": "UTC"}):
            moment = _EPOCH + timedelta(microseconds=count * _US_PER[unit])
            return True, moment if zone else moment.replace(tzinfo=None)
    return False, None


def _literal_values(node: Any) -> Sequence[Any]:
    """The Python values of a literal node (one for a scalar, several for a Series)."""
    if not _is_literal(node):
        raise _Unpushable
    known, value = _scalar(node)
    if known:
        return [value]
    try:
        expr = pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json")
        series = pl.select(expr).to_series()
        if series.dtype.is_nested():
            series = series.explode()
        # Python datetimes stop at microseconds: a finer literal would move its bound.
        dtype = series.dtype
        if (
            isinstance(dtype, pl.Datetime | pl.Duration)
            and dtype.time_unit == "ns"
            and not (series.drop_nulls().cast(pl.Int64) % 1000 == 0).all()
        ):
            raise _Unpushable
        values: list[Any] = series.to_list()
        return values
    except pl.exceptions.PolarsError as exc:
        raise _Unpushable from exc
