"""Pushed conditions: a small tree form, its SQLAlchemy clause, and its shape.

A ``Condition`` is a tuple tree (built by ``hubkit.scan.predicate``); values in it are
already encoded for storage:

==============================  ==========================================
``("and", (c, ...))``           all of them
``("or", (c, ...))``            any of them
``("cmp", column, op, value)``  ``op``: ``eq ne lt le gt ge``
``("in", column, values)``      ``column IN (values)`` (``not_in``: NOT IN)
``("is_null", column)``         ``column IS NULL`` (``not_null``: IS NOT NULL)
``("between", column, lo, hi)`` ``column BETWEEN lo AND hi``
``("const", flag)``             true or false
==============================  ==========================================

``clause(condition, table)`` gives the SQLAlchemy clause with its values bound as
``p0, p1, ...`` in tree order, ``values(condition)`` those values alone (without building the
clause), and ``shape(condition)`` the same tree without the values:
two conditions of one shape compile to the same SQL text, so a reader can compile a shape
once and bind new values each time (compiling costs more than the query it runs).
Datetime and date values (pushed to a store of native types, PostgreSQL) are bound as ISO
text and cast in SQL to ``TIMESTAMP WITH TIME ZONE`` / ``DATE``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from datetime import date, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

__all__ = ["Condition", "clause", "shape", "values"]

Condition = tuple[Any, ...]

_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _bind_type(value: Any) -> sa.types.TypeEngine[Any]:
    """A plain SQL type for an encoded value: no column type re-encodes it."""
    if isinstance(value, bool):
        return sa.Integer()
    if isinstance(value, int):
        return sa.BigInteger()
    if isinstance(value, float):
        return sa.Double()
    if isinstance(value, bytes):
        return sa.LargeBinary()
    return sa.Text()


# Datetimes and dates (a store of native types, PostgreSQL) are bound as ISO text and cast
# in SQL: exact to the microsecond, and the same through every driver.
_CAST: Final[tuple[tuple[type, sa.types.TypeEngine[Any]], ...]] = (
    (datetime, sa.DateTime(timezone=True)),
    (date, sa.Date()),
)


def _bound(value: Any) -> Any:
    """The value a placeholder receives for an encoded ``value``."""
    return value.isoformat() if isinstance(value, date) else value


def shape(condition: Condition) -> Hashable:
    """``condition`` with each value replaced by its type: equal shapes, equal SQL text."""
    kind = condition[0]
    if kind in ("and", "or"):
        return (kind, tuple(shape(c) for c in condition[1]))
    if kind == "cmp":
        return (kind, condition[1], condition[2], type(condition[3]))
    if kind in ("in", "not_in"):
        return (kind, condition[1], tuple(type(v) for v in condition[2]))
    if kind == "between":
        return (kind, condition[1], type(condition[2]), type(condition[3]))
    return condition  # is_null / not_null / const: no values


def values(condition: Condition) -> dict[str, Any]:
    """The bound values of ``clause(condition, table)`` by name, without building it."""
    flat: list[Any] = []

    def walk(c: Condition) -> None:
        kind = c[0]
        if kind in ("and", "or"):
            for x in c[1]:
                walk(x)
        elif kind == "cmp":
            flat.append(c[3])
        elif kind in ("in", "not_in"):
            flat.extend(c[2])
        elif kind == "between":
            flat.extend((c[2], c[3]))

    walk(condition)
    return {f"p{i}": _bound(v) for i, v in enumerate(flat)}


def clause(condition: Condition, table: sa.Table) -> tuple[ColumnElement[bool], dict[str, Any]]:
    """The SQLAlchemy clause of ``condition`` over ``table`` and its bound values by name."""
    params: dict[str, Any] = {}

    def bind(value: Any) -> Any:
        name = f"p{len(params)}"
        params[name] = _bound(value)
        for kind, sql_type in _CAST:
            if isinstance(value, kind):
                return sa.cast(sa.bindparam(name, params[name], type_=sa.Text()), sql_type)
        return sa.bindparam(name, value, type_=_bind_type(value))

    def build(c: Condition) -> ColumnElement[bool]:
        kind = c[0]
        if kind == "and":
            return sa.and_(*(build(x) for x in c[1]))
        if kind == "or":
            return sa.or_(*(build(x) for x in c[1]))
        if kind == "const":
            return sa.true() if c[1] else sa.false()
        col = table.c[c[1]]
        if kind == "cmp":
            result: ColumnElement[bool] = _COMPARE[c[2]](col, bind(c[3]))
            return result
        if kind == "in":
            return col.in_([bind(v) for v in c[2]])
        if kind == "not_in":
            return col.not_in([bind(v) for v in c[2]])
        if kind == "is_null":
            return col.is_(None)
        if kind == "not_null":
            return col.is_not(None)
        if kind == "between":
            return col.between(bind(c[2]), bind(c[3]))
        raise ValueError(f"not a condition: {c!r}")

    return build(condition), params
