"""Polars predicate -> SQL WHERE clause: the part of a filter a database can apply.

``translate(predicate, table, rules)`` walks a Polars boolean expression and returns a
``Pushdown``: a SQLAlchemy clause over ``table``'s columns and whether it is exact. No I/O.

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
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import polars as pl
import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

from hubkit.errors import HubkitError

__all__ = ["ColumnRules", "Comparability", "Encoder", "Pushdown", "translate"]

Comparability = Literal["order", "equality"]
"""``order``: stored values sort like the values (ranges push); ``equality``: only ==/IN."""

Encoder = Callable[[str, Any], Any]
"""``encode(column_name, python_value) -> stored value`` (raise to refuse a value)."""

# SQL that keeps the rows where a comparison is true / false (non-null operands).
_OPS: Final[dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]]] = {
    "Eq": (operator.eq, operator.ne),
    "NotEq": (operator.ne, operator.eq),
    "Lt": (operator.lt, operator.ge),
    "LtEq": (operator.le, operator.gt),
    "Gt": (operator.gt, operator.le),
    "GtEq": (operator.ge, operator.lt),
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


@dataclass(frozen=True)
class ColumnRules:
    """How literals of each column may be pushed into SQL.

    ``encode(name, value)`` turns a Python value (as Polars hands it back: ``datetime``,
    ``date``, ``Decimal``, ``str`` ...) into the value stored in the column; ``compare``
    maps a column name to ``"order"`` or ``"equality"``; columns it does not name are never
    pushed.
    """

    encode: Encoder
    compare: Mapping[str, Comparability]


@dataclass(frozen=True)
class Pushdown:
    """A WHERE clause that keeps a superset of the predicate's rows (None: no clause).

    ``exact``: the clause keeps exactly the rows the predicate keeps.
    """

    where: ColumnElement[bool] | None
    exact: bool


class _Unpushable(Exception):
    """A node (or literal) that has no safe SQL form."""


@dataclass(frozen=True)
class _Clause:
    sql: ColumnElement[bool]
    exact: bool


def translate(predicate: pl.Expr, table: sa.Table, rules: ColumnRules) -> Pushdown:
    """The SQL clause for ``predicate`` over ``table`` (see the module docstring)."""
    tree = json.loads(predicate.meta.serialize(format="json"))
    clause = _Translator(table, rules).clause(tree, want=True)
    if clause is None:
        return Pushdown(None, exact=False)
    return Pushdown(clause.sql, clause.exact)


class _Translator:
    def __init__(self, table: sa.Table, rules: ColumnRules) -> None:
        self.table = table
        self.rules = rules

    # A clause for "rows where the node evaluates to `want`"; None when none is safe.
    def clause(self, node: Any, *, want: bool) -> _Clause | None:
        try:
            return self._clause(node, want)
        except _Unpushable:
            return None

    def _clause(self, node: Any, want: bool) -> _Clause | None:
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
            return _Clause(self.table.c[name] == self._encode(name, want, "equality"), True)
        if kind == "Literal":
            value = _literal_values(node)
            if len(value) != 1 or not isinstance(value[0], bool | None):
                raise _Unpushable
            # A constant: every row or no row has the value `want`.
            return _Clause(sa.true() if value[0] is want else sa.false(), True)
        raise _Unpushable

    def _logical(self, is_and: bool, left: Any, right: Any, want: bool) -> _Clause | None:
        a, b = self.clause(left, want=want), self.clause(right, want=want)
        # "all of them": AND wanted true, or OR wanted false; either side alone is a superset.
        if is_and == want:
            parts = [c for c in (a, b) if c is not None]
            if not parts:
                return None
            exact = a is not None and b is not None and a.exact and b.exact
            return _Clause(sa.and_(*(c.sql for c in parts)), exact)
        # "any of them": both sides must be bounded.
        if a is None or b is None:
            return None
        return _Clause(sa.or_(a.sql, b.sql), a.exact and b.exact)

    def _comparison(self, op: str, left: Any, right: Any, want: bool) -> _Clause:
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
        compare = _OPS[op][0 if want else 1]
        return _Clause(compare(self.table.c[name], stored), True)

    def _function(self, function: Any, inputs: list[Any], want: bool) -> _Clause | None:
        if not (isinstance(function, dict) and set(function) == {"Boolean"}):
            raise _Unpushable
        fn = function["Boolean"]
        if fn == "Not":
            (inner,) = inputs
            return self.clause(inner, want=not want)
        if fn in ("IsNull", "IsNotNull"):
            (inner,) = inputs
            col = self.table.c[self._column(inner)]
            null_wanted = (fn == "IsNull") == want
            return _Clause(col.is_(None) if null_wanted else col.is_not(None), True)
        if isinstance(fn, dict) and "IsIn" in fn:
            return self._is_in(inputs, bool(fn["IsIn"].get("nulls_equal")), want)
        if isinstance(fn, dict) and "IsBetween" in fn:
            return self._is_between(inputs, str(fn["IsBetween"]["closed"]), want)
        raise _Unpushable

    def _is_in(self, inputs: list[Any], nulls_equal: bool, want: bool) -> _Clause:
        column, listed = inputs
        name = self._column(column)
        col = self.table.c[name]
        values = _literal_values(listed)
        if len(values) == 1 and isinstance(values[0], list):
            values = values[0]  # a list literal arrives as one list-typed scalar
        has_null = any(v is None for v in values)
        present = [v for v in values if v is not None]
        # A null column value: null when not nulls_equal, else whether None was listed.
        null_is_want = nulls_equal and has_null == want
        if len(present) > MAX_IN_VALUES:
            if not want or self.rules.compare.get(name) != "order":
                raise _Unpushable
            low, high = min(present), max(present)
            sql: ColumnElement[bool] = col.between(
                self._encode(name, low, "order"), self._encode(name, high, "order")
            )
            exact = False
        elif not present:
            # Nothing listed: no value is in it, every non-null value is not.
            sql, exact = (sa.false() if want else col.is_not(None)), True
        else:
            stored = [self._encode(name, v, "equality") for v in present]
            sql = col.in_(stored) if want else col.not_in(stored)
            exact = True
        if null_is_want:
            sql = sa.or_(sql, col.is_(None))
        return _Clause(sql, exact)

    def _is_between(self, inputs: list[Any], closed: str, want: bool) -> _Clause:
        column, low_node, high_node = inputs
        name = self._column(column)
        col = self.table.c[name]
        (low,), (high,) = _literal_values(low_node), _literal_values(high_node)
        if low is None or high is None:
            raise _Unpushable
        lo, hi = self._encode(name, low, "order"), self._encode(name, high, "order")
        lo_in, hi_in = closed in ("Both", "Left"), closed in ("Both", "Right")
        if closed not in ("Both", "Left", "Right", "None"):
            raise _Unpushable
        if want:
            return _Clause(
                sa.and_(col >= lo if lo_in else col > lo, col <= hi if hi_in else col < hi), True
            )
        return _Clause(
            sa.or_(col < lo if lo_in else col <= lo, col > hi if hi_in else col >= hi), True
        )

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
        if stored is None:
            raise _Unpushable
        return sa.literal(stored, type_=_bind_type(stored))


def _bind_type(value: Any) -> sa.types.TypeEngine[Any]:
    """A plain SQL type for an already-encoded value (no column-type re-encoding)."""
    if isinstance(value, bool):
        return sa.Integer()
    if isinstance(value, int):
        return sa.BigInteger()
    if isinstance(value, float):
        return sa.Double()
    if isinstance(value, str):
        return sa.Text()
    if isinstance(value, bytes):
        return sa.LargeBinary()
    raise _Unpushable


def _is_literal(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"Literal"}


def _literal_values(node: Any) -> Sequence[Any]:
    """The Python values of a literal node (one for a scalar, several for a Series)."""
    if not _is_literal(node):
        raise _Unpushable
    try:
        expr = pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json")
        return pl.select(expr).to_series().to_list()
    except pl.exceptions.PolarsError as exc:
        raise _Unpushable from exc
