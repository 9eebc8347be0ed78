"""Explicit schema changes: ``migrate`` a table to a new definition, ``drop_column``,
``drop_copy``, and reading the schema ``history``.

``migrate`` rewrites a table in one transaction: the old table is renamed to a copy
(``<table>__before_<UTC time>``, listed in the history, kept until ``drop_copy``), a new
table is created for the definition, every row is converted (``float`` -> ``Decimal``,
``str`` -> ``int`` ...; a value that does not convert, a missing required value or two rows
that become one key abort the whole migration with nothing changed) and written, the
indexes are created again. Columns kept after their field was removed are carried over.
``definition_of_refused`` rebuilds the definition a refused open asked for, so that
``hubkit migrate STORE TABLE`` needs no Python class.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable, DropIndex, DropTable

from hubkit.entity import Column, EntitySpec, reflect
from hubkit.entity.values import check_nulls, conform, typed_series
from hubkit.errors import StoreError, ValidationError
from hubkit.store.codec import json_text, python_value, to_storage
from hubkit.store.engine import Tx
from hubkit.store.evolve import Stored, StoredColumn, plan, stored_of
from hubkit.store.evolve_apply import HISTORY, record
from hubkit.store.evolve_ddl import DropColumn, RenameTable, history_table, kind_type

if TYPE_CHECKING:
    from hubkit.store.engine import Backend

__all__ = ["Migration", "definition_of_refused", "drop_column", "drop_copy", "history", "migrate"]

_INSERT_CHUNK = 50_000
_BATCH = 200_000  # rows read, converted and written at a time


@dataclass(frozen=True)
class Migration:
    """What ``migrate`` did: the table, the copy of the old table it kept, the rows written
    and the differences it resolved."""

    table: str
    copy: str | None
    rows: int
    changes: tuple[str, ...]


def _state(tx: Tx, store: Backend, name: str) -> tuple[Stored, list[str]]:
    st = store.state_table.c
    found = tx.rows(sa.select(st.columns).where(st.sink == name))
    names = tx.column_names(name)
    if not found or names is None:
        raise StoreError(f"no hubkit table {name!r} in {store.url!r}")
    return stored_of(json.loads(found[0][0])), names


def migrate(
    store: Backend, spec: EntitySpec, name: str | None = None, fill: Mapping[str, Any] | None = None
) -> Migration:
    """Rewrite table ``name`` (default ``spec.table``) for ``spec`` (see the module doc).

    ``fill`` gives a value for new required fields that have no default. Raises
    ``ValidationError`` naming the column for a value that does not convert, ``StoreError``
    for a missing table or two rows that become one; nothing changes then. A table that
    already fits ``spec`` is left as it is (``copy`` is None).
    """
    name = name or spec.table
    fill = dict(fill or {})
    with store._translate(f"migrating {name!r}"), store._write() as tx:
        stored, names = _state(tx, store, name)
        p = plan(stored, spec)
        if not p.refused and stored.canonical_decimals and not p.rebuild and not p.add:
            done = Stored(p.result.columns, spec.key, p.result.kept, True, spec.cls.__name__)
            _set_state(tx, store, name, spec, done)
            return Migration(name, None, 0, ())
        physical = {c.name: c for c in stored.physical}
        copy = _free_name(tx, f"{name}__before_{datetime.now(UTC):%Y%m%d%H%M%S}")
        indexes = _indexes(tx, store, name)
        tx.ddl(RenameTable(name, copy))
        for index_name, _ in indexes:
            tx.ddl(DropIndex(sa.Index(index_name)))
        kept = [StoredColumn(k.name, k.kind, True) for k in p.result.kept]
        kept = [k for k in kept if k.name in physical]
        table = _table(name, spec, kept)
        tx.ddl(CreateTable(table))
        old = sa.table(copy, *[sa.column(n) for n in names])
        rows = 0
        for raw in _batches(tx, old, list(stored.key), physical):
            frame = _convert(spec, physical, raw, fill)
            out = pl.DataFrame([to_storage(c, frame.get_column(c.name)) for c in spec.columns])
            if kept:
                out = out.with_columns(raw.get_column(k.name) for k in kept)
            _insert(tx, name, table, spec, out)
            rows += out.height
        for _, sql in indexes:
            tx.run(sa.text(sql))
        result = Stored(
            tuple(StoredColumn(*c) for c in spec.describe()["columns"]),
            spec.key,
            tuple(kept),
            True,
            spec.cls.__name__,
        )
        _set_state(tx, store, name, spec, result)
        changes = tuple(p.refused) + tuple(f"{w} {c} {d}".strip() for w, c, d in p.changes)
        record(tx, name, "migrated", {"copy": copy, "rows": rows, "changes": changes})
        return Migration(name, copy, rows, changes)


def _batches(
    tx: Tx, old: sa.TableClause, key: list[str], physical: Mapping[str, StoredColumn]
) -> Iterator[pl.DataFrame]:
    """The rows of ``old`` in key order, ``_BATCH`` at a time (keyset pagination on the
    old table's primary key): a migration never holds the whole table."""
    cols = [old.c[k] for k in key]
    last: tuple[Any, ...] | None = None
    while True:
        stmt = sa.select(*old.c).order_by(*cols).limit(_BATCH)
        if last is not None:
            after = cols[0] > last[0] if len(cols) == 1 else sa.tuple_(*cols) > sa.tuple_(*last)
            stmt = stmt.where(after)
        raw = _read(tx, stmt, physical)
        if raw.height == 0:
            return
        yield raw
        last = raw.select(key).row(-1)
        if raw.height < _BATCH:
            return


def _insert(tx: Tx, name: str, table: sa.Table, spec: EntitySpec, out: pl.DataFrame) -> None:
    key = list(spec.key)
    if out.select(key).is_duplicated().any():
        twice = out.filter(out.select(key).is_duplicated()).select(key).row(0)
        raise StoreError(
            f"migrating {name!r}: rows become one key {twice!r} in the new definition "
            "(nothing changed)"
        )
    for start in range(0, out.height, _INSERT_CHUNK):
        try:
            tx.insert_many(table, out.slice(start, _INSERT_CHUNK).to_dicts())
        except Exception as exc:
            if "unique" not in str(exc).lower():
                raise
            raise StoreError(
                f"migrating {name!r}: rows become one key in the new definition (nothing "
                f"changed): {exc}"
            ) from exc


def _storage_dtype(kind: str) -> pl.DataType:
    if kind in ("int", "datetime", "enum:int"):
        return pl.Int64()
    if kind == "float":
        return pl.Float64()
    if kind == "bool":
        return pl.Boolean()
    return pl.String()


def _read(tx: Tx, stmt: sa.Select[Any], physical: Mapping[str, StoredColumn]) -> pl.DataFrame:
    """The selected rows with their values as stored (datetimes in µs, dates as text)."""
    names = [c.name for c in stmt.selected_columns]
    schema = pl.Schema(
        {n: _storage_dtype(physical[n].kind if n in physical else "str") for n in names}
    )
    try:
        return tx.frame(stmt, schema)
    except Exception as exc:
        # ADBC types a column from its first batch; a column NULL there and set later is
        # read row by row instead.
        if "Type mismatch" not in str(exc):
            raise
    return pl.DataFrame(tx.rows(stmt), schema=schema, orient="row", strict=False)


def _set_state(tx: Tx, store: Backend, name: str, spec: EntitySpec, stored: Stored) -> None:
    st = store.state_table
    tx.run(
        sa.update(st)
        .where(st.c.sink == name)
        .values(fingerprint=spec.fingerprint, columns=json_text(stored.as_json()))
    )


def _table(name: str, spec: EntitySpec, kept: list[StoredColumn]) -> sa.Table:
    described = {c[0]: c[1] for c in spec.describe()["columns"]}
    cols = [
        sa.Column(
            c.name,
            kind_type(described[c.name]),
            primary_key=c.name in spec.key,
            nullable=c.nullable,
            autoincrement=False,
        )
        for c in spec.columns
    ]
    cols += [sa.Column(k.name, kind_type(k.kind), nullable=True) for k in kept]
    return sa.Table(name, sa.MetaData(), *cols)


def _frame_values(kind: str, s: pl.Series) -> pl.Series:
    """Stored values of a column of ``kind`` -> its frame values."""
    if kind == "datetime":
        return s.cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    if kind == "date":
        return s.cast(pl.String).str.to_date("%Y-%m-%d")
    if kind == "bool":
        return s.cast(pl.Boolean)
    if kind in ("int", "enum:int"):
        return s.cast(pl.Int64)
    if kind == "float":
        return s.cast(pl.Float64)
    return s.cast(pl.String)


def _convert(
    spec: EntitySpec, stored: Mapping[str, StoredColumn], raw: pl.DataFrame, fill: dict[str, Any]
) -> pl.DataFrame:
    out = []
    for c in spec.columns:
        old = stored.get(c.name)
        if old is None:
            if c.name in fill:
                s = typed_series(c, [fill[c.name]] * raw.height)
            elif c.default is not None:
                s = typed_series(c, [c.default() for _ in range(raw.height)])
            elif c.nullable:
                s = pl.Series(c.name, [None] * raw.height, dtype=c.dtype)
            else:
                raise ValidationError(
                    f"column {c.name!r} is new, required and has no default: pass "
                    f"fill={{{c.name!r}: VALUE}} to give the stored rows a value",
                    column=c.name,
                )
        else:
            s = _bridge(c, _frame_values(old.kind, raw.get_column(c.name)))
        check_nulls(c, s)
        out.append(s.rename(c.name))
    return pl.DataFrame(out, schema=spec.schema) if out else spec.empty()


def _bridge(c: Column, s: pl.Series) -> pl.Series:
    """Frame values of the old kind -> ``c``'s kind (``ValidationError`` naming the column
    for a value that does not convert)."""
    try:
        if c.kind == "str" and s.dtype != pl.String:
            s = s.cast(pl.String)
        elif c.kind in ("float", "int") and s.dtype == pl.String:
            whole = s.cast(pl.Int64, strict=False) if c.kind == "int" else None
            if whole is not None and whole.null_count() == s.null_count():
                s = whole
            else:
                s = s.cast(pl.Float64, strict=True)
    except pl.exceptions.PolarsError as exc:
        raise ValidationError(
            f"column {c.name!r}: stored values do not convert to {c.kind}: {exc}", column=c.name
        ) from None
    return conform(c, s)


def _free_name(tx: Tx, wanted: str) -> str:
    name, n = wanted, 1
    while tx.column_names(name) is not None:
        n += 1
        name = f"{wanted}_{n}"
    return name


def _indexes(tx: Tx, store: Backend, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the indexes of ``table`` (not the primary key)."""
    if store.engine.dialect.name == "sqlite":
        stmt = sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
            "AND sql IS NOT NULL"
        )
    elif store.engine.dialect.name == "postgresql":
        stmt = sa.text(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = :t AND "
            "i.schemaname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
            "WHERE k.conname = i.indexname)"
        )
    else:
        return []
    return [(str(n), str(sql)) for n, sql in tx.rows(stmt.bindparams(t=table))]


def drop_column(store: Backend, table: str, column: str) -> None:
    """Delete a column kept after its field was removed, and its data (one transaction,
    recorded in the history). A column the table's definition still maps is refused."""
    with store._translate(f"dropping {table}.{column}"), store._write() as tx:
        stored, _ = _state(tx, store, table)
        if column in {c.name for c in stored.columns}:
            raise StoreError(
                f"column {column!r} of {table!r} is a field of its definition; remove the "
                "field first (the column is then kept), then drop it"
            )
        if column not in {c.name for c in stored.kept}:
            raise StoreError(f"table {table!r} has no kept column {column!r}")
        tx.ddl(DropColumn(table, column))
        left = tuple(k for k in stored.kept if k.name != column)
        st = store.state_table
        after = dataclasses.replace(stored, kept=left)
        tx.run(sa.update(st).where(st.c.sink == table).values(columns=json_text(after.as_json())))
        record(tx, table, "dropped", {"column": column})


def drop_copy(store: Backend, copy: str) -> None:
    """Delete a copy ``migrate`` kept of a table (only names the history lists as copies)."""
    with store._translate(f"dropping {copy!r}"), store._write() as tx:
        tx.ddl(CreateTable(HISTORY, if_not_exists=True))
        h = HISTORY.c
        rows = tx.rows(sa.select(h.table_name, h.detail).where(h.change == "migrated"))
        owner = next((t for t, d in rows if json.loads(d).get("copy") == copy), None)
        if owner is None or tx.column_names(copy) is None:
            raise StoreError(f"{copy!r} is not a copy kept by a migration in {store.url!r}")
        tx.ddl(DropTable(sa.Table(copy, sa.MetaData())))
        record(tx, str(owner), "dropped", {"copy": copy})


def history(store: Backend, table: str | None = None) -> pl.DataFrame:
    """The schema history (``at`` UTC datetime, ``table``, ``change``, ``detail`` JSON text),
    oldest first; only ``table``'s rows when given."""
    h = history_table()
    text = pl.String()
    schema = pl.Schema(
        {"at": pl.Datetime("us", "UTC"), "table": text, "change": text, "detail": text}
    )
    with store._translate("reading the schema history"), store._read() as tx:
        if tx.column_names(h.name) is None:
            return pl.DataFrame(schema=schema)
        stmt = sa.select(h.c.at, h.c.table_name, h.c.change, h.c.detail).order_by(h.c.id)
        if table is not None:
            stmt = stmt.where(h.c.table_name == table)
        rows = tx.rows(stmt)
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def definition_of_refused(store: Backend, table: str) -> EntitySpec:
    """The definition the last refused open of ``table`` asked for, rebuilt as a plain
    dataclass (no class needed): what ``hubkit migrate STORE TABLE`` migrates to."""
    with store._translate("reading the schema history"), store._read() as tx:
        h = HISTORY.c
        found = (
            tx.rows(
                sa.select(h.detail)
                .where(h.table_name == table, h.change == "refused")
                .order_by(h.id.desc())
                .limit(1)
            )
            if tx.column_names(HISTORY.name) is not None
            else []
        )
    if not found:
        raise StoreError(
            f"no refused definition recorded for {table!r}: open the table with the new "
            "definition first (its refusal is recorded), or call Store.migrate(spec)"
        )
    return _rebuild(table, json.loads(found[0][0])["wanted"])


_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "decimal": Decimal,
    "datetime": datetime,
    "date": date,
    "json": Any,
}


def _hint(name: str, kind: str, members: list[Any]) -> Any:
    if kind in ("enum", "enum:int"):
        return enum.Enum(f"{name}_values", [(f"m{i}", v) for i, v in enumerate(members)])
    if kind == "json":
        return dict[str, Any]
    return _TYPES[kind]


def _rebuild(table: str, wanted: Mapping[str, Any]) -> EntitySpec:
    fields: list[tuple[str, Any, Any]] = []
    for name, kind, nullable in wanted["columns"]:
        hint = _hint(name, kind, wanted.get("members", {}).get(name, []))
        fields.append((name, hint | None if nullable else hint, dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass(str(wanted.get("class", "Refused")), fields)
    spec = reflect(cls, tuple(wanted["key"]), table=table)
    defaults = wanted.get("defaults", {})
    columns = tuple(
        dataclasses.replace(c, default=_constant(python_value(c, defaults[c.name])))
        if c.name in defaults
        else dataclasses.replace(c, default=None)
        for c in spec.columns
    )
    return dataclasses.replace(spec, columns=columns)


def _constant(value: Any) -> Any:
    return lambda: value
