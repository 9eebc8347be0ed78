"""Applying schema evolution inside the transaction that opens a table (see ``evolve``).

``reconcile`` runs in ``Store.table``'s write transaction when the table is recorded in
the sync state: it applies a ``Plan`` (added columns, widenings, kept columns), rewrites
decimal text written before decimals were canonical, records each change in
``hubkit_schema_history`` and the table's new description in the sync state. A refused
change is recorded too (the definition asked for, which ``hubkit migrate`` applies) and
returned as the error text.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable, DropTable
from sqlalchemy.types import TypeDecorator

from hubkit.entity import Column, EntitySpec, canonical_decimal
from hubkit.errors import HubkitWarning
from hubkit.store.codec import json_text, now_us, storage_value
from hubkit.store.engine import KEY_CHUNK, Tx, chunks
from hubkit.store.evolve import (
    Plan,
    Stored,
    StoredColumn,
    plan,
    refusal_message,
    renamed_warning,
    same_columns,
    spec_stored,
    stored_of,
    with_canonical_decimals,
)
from hubkit.store.evolve_ddl import (
    AddColumn,
    AlterColumnType,
    DropNotNull,
    RenameTable,
    default_clause,
    history_table,
    kind_type,
)

HISTORY = history_table()

# The store's SQL type of an entity column (``Store._sql_type``).
ColumnType = Callable[[Column], sa.types.TypeEngine[Any]]


def record(tx: Tx, table: str, change: str, detail: Any) -> None:
    """Add one row to the schema history (creating the history table if needed)."""
    tx.ddl(CreateTable(HISTORY, if_not_exists=True))
    tx.run(
        sa.insert(HISTORY).values(
            at=now_us(), table_name=table, change=change, detail=json_text(detail)
        )
    )


def wanted(spec: EntitySpec) -> dict[str, Any]:
    """What ``hubkit migrate`` needs to rebuild ``spec`` without its class: the described
    columns and key, each default as stored, each enum's member values."""
    out = spec.describe()
    defaults: dict[str, Any] = {}
    members: dict[str, list[Any]] = {}
    for c in spec.columns:
        if c.default is not None:
            defaults[c.name] = storage_value(c, c.default())
        if c.kind == "enum":
            members[c.name] = [m.value for m in c.py_type]
    out.update(defaults=defaults, members=members, fingerprint=spec.fingerprint)
    out["class"] = spec.cls.__name__
    return out


def created(tx: Tx, state: sa.Table, spec: EntitySpec, name: str) -> str:
    """Record the creation of table ``name`` for ``spec`` in the history; warn when
    another table holds the same columns (a renamed class). Returns the description JSON
    to record in the sync state."""
    tables: dict[str, Stored] = {}
    for sink, described in tx.rows(sa.select(state.c.sink, state.c.columns)):
        try:
            tables[str(sink)] = stored_of(json.loads(described))
        except (ValueError, TypeError, IndexError, AttributeError):
            continue
    others = [o for o in same_columns(spec, name, tables) if tx.column_names(o) is not None]
    record(tx, name, "created", {"class": spec.cls.__name__, **spec.describe()})
    if others:
        warnings.warn(renamed_warning(spec, name, others), HubkitWarning, stacklevel=4)
    return json_text(spec_stored(spec).as_json())


def reconcile(
    tx: Tx,
    dialect: Dialect,
    state: sa.Table,
    store_url: str,
    name: str,
    spec: EntitySpec,
    fingerprint: str,
    described: str,
    column_type: ColumnType | None = None,
) -> str | None:
    """Bring the recorded table ``name`` to ``spec`` (see the module doc).

    ``column_type``: the store's SQL type of an entity column, where the store keeps columns
    in types of the database's own (PostgreSQL's timestamptz, numeric, jsonb); None for
    hubkit's portable storage types.

    Returns None when the table now fits ``spec``, else the refusal text (nothing of the
    table changed; the refusal is recorded in the history).
    """
    stored = stored_of(json.loads(described))
    cls = spec.cls.__name__
    if fingerprint == spec.fingerprint and stored.canonical_decimals and stored.cls == cls:
        return None
    before = stored
    if fingerprint != spec.fingerprint:
        p = plan(stored, spec)
        refused = list(p.refused) + _nulls_left(tx, name, p)
        if refused:
            attempt = {"differences": refused, "wanted": wanted(spec)}
            if _last_change(tx, name) != ("refused", json_text(attempt)):  # once per attempt
                record(tx, name, "refused", attempt)
            return refusal_message(name, spec, refused, store_url)
        _apply(tx, dialect, name, spec, stored, p, column_type)
        for what, column, detail in p.changes:
            record(tx, name, what, {"column": column, "detail": detail})
        if p.remove:
            warnings.warn(
                f"table {name!r}: {', '.join(p.remove)} no longer in {spec.cls.__name__}; "
                "the column and its data are kept (adding the field back brings them back; "
                f"store.drop_column({name!r}, COLUMN) deletes one)",
                HubkitWarning,
                stacklevel=4,
            )
        stored = p.result
    if not stored.canonical_decimals:
        fixed, left = canonicalize_decimals(tx, name, spec)
        if fixed:
            record(tx, name, "canonical", {"rewritten": fixed})
        if not left:
            stored = with_canonical_decimals(stored)
    stored = dataclasses.replace(stored, cls=cls)  # the class that last opened the table
    if stored != before or fingerprint != spec.fingerprint:
        st = state.c
        tx.run(
            sa.update(state)
            .where(st.sink == name)
            .values(fingerprint=spec.fingerprint, columns=json_text(stored.as_json()))
        )
    return None


def _last_change(tx: Tx, name: str) -> tuple[str, str] | None:
    """The (change, detail) last recorded for table ``name``, if any."""
    if tx.column_names(HISTORY.name) is None:
        return None
    h = HISTORY.c
    stmt = sa.select(h.change, h.detail).where(h.table_name == name).order_by(h.id.desc())
    found = tx.rows(stmt.limit(1))
    return (str(found[0][0]), str(found[0][1])) if found else None


def _nulls_left(tx: Tx, name: str, p: Plan) -> list[str]:
    """Restored fields that must have a value but whose kept column holds NULLs."""
    out = []
    for column in p.must_have_values:
        col: sa.ColumnClause[Any] = sa.column(column)
        stmt = sa.select(sa.func.count()).select_from(sa.table(name, col)).where(col.is_(None))
        n = int(tx.rows(stmt)[0][0])
        if n:
            out.append(f"{column} (kept column has {n} rows without a value; now required)")
    return out


def _apply(
    tx: Tx,
    dialect: Dialect,
    name: str,
    spec: EntitySpec,
    stored: Stored,
    p: Plan,
    column_type: ColumnType | None,
) -> None:
    target = sa.Table(name, sa.MetaData())
    for col in p.add:
        if column_type is not None:
            _add_native(tx, dialect, target, col, column_type)
            continue
        kind = spec.describe()["columns"][spec.names.index(col.name)][1]
        default = None if col.default is None else storage_value(col, col.default())
        new = sa.Column(
            col.name,
            kind_type(kind),
            nullable=col.nullable or default is None,
            server_default=default_clause(col.kind, default),
        )
        target.append_column(new)
        tx.ddl(AddColumn(target, new))
    if not p.rebuild:
        return
    if dialect.name != "sqlite":
        for column, kind in p.widen:
            tx.ddl(AlterColumnType(name, column, kind_type(kind)))
        for column in p.relax:
            tx.ddl(DropNotNull(name, column))
        return
    _rebuild_sqlite(tx, name, p.result, dict(p.widen))


def _add_native(
    tx: Tx, dialect: Dialect, target: sa.Table, col: Column, column_type: ColumnType
) -> None:
    """Add ``col`` in the store's own type; a default is written into the existing rows as
    text the database casts (a datetime, a decimal or a JSON value has no portable literal)."""
    sql_type = column_type(col)
    new = sa.Column(col.name, sql_type, nullable=True)
    target.append_column(new)
    tx.ddl(AddColumn(target, new))
    if col.default is None:
        return
    value = col.default()
    if isinstance(value, datetime | date):
        text: Any = value.isoformat()
    elif isinstance(value, Decimal):
        text = str(value)
    elif col.kind == "json":
        text = json_text(value)
    else:
        text = storage_value(col, value)
    impl = sql_type.load_dialect_impl(dialect) if isinstance(sql_type, TypeDecorator) else sql_type
    tx.run(sa.update(target).values({col.name: sa.cast(sa.literal(text), impl)}))
    if not col.nullable:
        quote = dialect.identifier_preparer.quote
        table, column = quote(target.name), quote(col.name)
        tx.run(sa.text(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"))


def _rebuild_sqlite(tx: Tx, name: str, result: Stored, widen: dict[str, str]) -> None:
    """SQLite changes a column's type or NOT NULL only by copying the table: a new table
    (same columns in the same order, same defaults), every row copied (widened columns
    cast), the old one dropped, the new one renamed, its indexes created again; all inside
    the caller's transaction."""
    names = tx.column_names(name) or []
    by_name = {c.name: c for c in result.physical}
    indexes = [
        str(sql)
        for (sql,) in tx.rows(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
                "AND sql IS NOT NULL"
            ).bindparams(t=name)
        )
    ]
    defaults = {
        str(n): sa.text(str(d))
        for n, d in tx.rows(
            sa.text("SELECT name, dflt_value FROM pragma_table_info(:t)").bindparams(t=name)
        )
        if d is not None
    }
    scratch = f"{name}__hubkit_rebuild"
    new = _physical_table(scratch, [by_name[n] for n in names], result.key, defaults)
    old = sa.table(name, *[sa.column(n) for n in names])
    tx.ddl(CreateTable(new))
    exprs = [
        sa.cast(old.c[n], kind_type(widen[n])).label(n) if n in widen else old.c[n] for n in names
    ]
    tx.run(sa.insert(new).from_select(names, sa.select(*exprs)))
    tx.ddl(DropTable(sa.Table(name, sa.MetaData())))
    tx.ddl(RenameTable(scratch, name))
    for sql in indexes:
        tx.run(sa.text(sql))


def _physical_table(
    name: str, columns: Sequence[StoredColumn], key: Sequence[str], defaults: dict[str, Any]
) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        *[
            sa.Column(
                c.name,
                kind_type(c.kind),
                primary_key=c.name in key,
                nullable=c.nullable,
                autoincrement=False,
                server_default=defaults.get(c.name),
            )
            for c in columns
        ],
    )


def _not_canonical(col: sa.ColumnClause[Any]) -> sa.ColumnElement[bool]:
    """A cheap SQL test that every non-canonical decimal text passes (a superset)."""
    patterns = ("%.%0", "%.", "%e%", "%E%", "+%", "0%", "-0%", ".%", "-.%", " %", "% ")
    return sa.or_(*[col.like(p) for p in patterns])


def canonicalize_decimals(tx: Tx, name: str, spec: EntitySpec) -> tuple[dict[str, int], list[str]]:
    """Rewrite decimal text stored before decimals were canonical (``"0.1000"`` ->
    ``"0.1"``) in place, one ``UPDATE`` per distinct text; returns the texts rewritten per
    column and the columns left as they were: a key column whose rewrite would make two
    rows one is left, with a warning (``migrate`` then refuses to merge them too)."""
    out: dict[str, int] = {}
    left: list[str] = []
    for c in spec.columns:
        if c.kind != "decimal":
            continue
        value: sa.ColumnClause[Any] = sa.column(c.name)
        table = sa.table(name, value)
        found = tx.rows(sa.select(value).distinct().where(_not_canonical(value)))
        fixes: list[tuple[str, str]] = []
        for (text,) in found:
            try:
                canonical = canonical_decimal(Decimal(str(text)))
            except (InvalidOperation, ValueError):
                continue
            if canonical != text:
                fixes.append((str(text), canonical))
        if not fixes:
            continue
        if c.name in spec.key and _collides(tx, table, c.name, fixes):
            warnings.warn(
                f"table {name!r}: key column {c.name!r} holds decimals written with trailing "
                "zeros that equal other stored keys; left as written (migrate the table to "
                "merge them)",
                HubkitWarning,
                stacklevel=5,
            )
            left.append(c.name)
            continue
        for old, canonical in fixes:
            tx.run(sa.update(table).where(value == old).values({c.name: canonical}))
        out[c.name] = len(fixes)
    return out, left


def _collides(tx: Tx, table: sa.TableClause, column: str, fixes: Sequence[tuple[str, str]]) -> bool:
    targets = [f[-1] for f in fixes]
    if len(set(targets)) < len(targets):
        return True
    value = table.c[column]
    for chunk in chunks(targets, KEY_CHUNK):
        if tx.rows(sa.select(value).where(value.in_(list(chunk))).limit(1)):
            return True
    return False
