"""Schema-change DDL as SQLAlchemy Core elements, compiled per dialect.

SQLAlchemy Core has no ``ALTER TABLE`` constructs; these few cover what hubkit's schema
evolution needs on SQLite and PostgreSQL: ``AddColumn``, ``RenameTable`` and, where the
database changes a column in place (not SQLite, where the table is rebuilt),
``AlterColumnType`` and ``DropNotNull``. Also the schema-history table and the column types
and defaults of stored kinds.
"""

from __future__ import annotations

import math
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

HISTORY_TABLE: Final = "hubkit_schema_history"


def history_table() -> sa.Table:
    """One row per schema change: when (µs since the epoch, UTC), which table, what changed
    (a short word) and a JSON detail."""
    return sa.Table(
        HISTORY_TABLE,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("change", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )


def kind_type(kind: str) -> sa.types.TypeEngine[Any]:
    """The SQL type a column of ``kind`` (as in ``EntitySpec.describe``) is stored in."""
    if kind in ("int", "datetime", "enum:int"):
        return sa.BigInteger()
    if kind == "float":
        return sa.Double()
    if kind == "bool":
        return sa.Boolean()
    return sa.Text()


def default_clause(kind: str, stored: Any) -> Any:
    """A ``server_default`` holding the stored value ``stored`` (None: no default).

    Plain literals, never parenthesised expressions: SQLite's ``ADD COLUMN`` takes only
    constants.
    """
    if stored is None:
        return None
    if kind == "bool":
        return sa.true() if stored else sa.false()
    if isinstance(stored, bool):
        stored = int(stored)
    if isinstance(stored, int):
        return sa.text(str(stored))
    if isinstance(stored, float):
        if not math.isfinite(stored):
            return None
        return sa.text(repr(stored))
    return str(stored)  # text: SQLAlchemy quotes it


class AddColumn(ExecutableDDLElement):
    """``ALTER TABLE <table> ADD COLUMN <column spec>``."""

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


class RenameTable(ExecutableDDLElement):
    """``ALTER TABLE <old> RENAME TO <new>``."""

    def __init__(self, old: str, new: str) -> None:
        self.old = old
        self.new = new


class AlterColumnType(ExecutableDDLElement):
    """``ALTER TABLE <table> ALTER COLUMN <column> TYPE <type> USING <column>::<type>``."""

    def __init__(self, table: str, column: str, type_: sa.types.TypeEngine[Any]) -> None:
        self.table = table
        self.column = column
        self.type = type_


class DropNotNull(ExecutableDDLElement):
    """``ALTER TABLE <table> ALTER COLUMN <column> DROP NOT NULL``."""

    def __init__(self, table: str, column: str) -> None:
        self.table = table
        self.column = column


class DropColumn(ExecutableDDLElement):
    """``ALTER TABLE <table> DROP COLUMN <column>``."""

    def __init__(self, table: str, column: str) -> None:
        self.table = table
        self.column = column


@compiles(DropColumn)
def _drop_column(element: DropColumn, compiler: DDLCompiler, **kw: Any) -> str:
    quote = compiler.preparer.quote
    return f"ALTER TABLE {quote(element.table)} DROP COLUMN {quote(element.column)}"


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    spec = compiler.get_column_specification(element.column)
    return f"ALTER TABLE {compiler.preparer.format_table(element.table)} ADD COLUMN {spec}"


@compiles(RenameTable)
def _rename_table(element: RenameTable, compiler: DDLCompiler, **kw: Any) -> str:
    quote = compiler.preparer.quote
    return f"ALTER TABLE {quote(element.old)} RENAME TO {quote(element.new)}"


@compiles(AlterColumnType)
def _alter_type(element: AlterColumnType, compiler: DDLCompiler, **kw: Any) -> str:
    quote = compiler.preparer.quote
    sql_type = compiler.dialect.type_compiler_instance.process(element.type)
    col = quote(element.column)
    return (
        f"ALTER TABLE {quote(element.table)} ALTER COLUMN {col} TYPE {sql_type} "
        f"USING {col}::{sql_type}"
    )


@compiles(DropNotNull)
def _drop_not_null(element: DropNotNull, compiler: DDLCompiler, **kw: Any) -> str:
    quote = compiler.preparer.quote
    return f"ALTER TABLE {quote(element.table)} ALTER COLUMN {quote(element.column)} DROP NOT NULL"
