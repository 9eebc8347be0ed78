"""What to do when a stored table meets a changed dataclass: the decision, free of I/O.

``plan(stored, spec)`` compares the table as recorded in the store (``Stored``: its columns
in table order with their kind and nullability, the columns kept after their field was
removed, the key) with the entity definition and returns a ``Plan``:

- a new field that is ``Optional`` or has a default: ``add`` (existing rows read as None or
  the default);
- fields in another order, or a field added to a nested dataclass: nothing, or ``add``;
- a field removed: ``remove`` (the column and its data stay; ``relax`` drops its NOT NULL so
  new rows can leave it empty); the field added back: ``restore``;
- safe widenings: ``widen`` (int -> float), ``relax`` (T -> Optional[T]); an enum member
  added changes nothing stored; an enum becoming its value type (str or int) neither;
- anything else: ``refused`` names each difference; ``hubkit.store.migrate`` rewrites the
  table.

The applier is ``hubkit.store.evolve_apply``.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import sqlalchemy as sa

from hubkit.entity import Column, EntitySpec

__all__ = [
    "Plan",
    "Stored",
    "StoredColumn",
    "plan",
    "refusal_message",
    "same_columns",
    "stored_of",
]

# kind changes that need no change to stored values (old kind, new kind) -> needs DDL
_WIDENINGS: Final[Mapping[tuple[str, str], bool]] = {
    ("int", "float"): True,  # the column type changes; the values convert exactly
    ("enum", "str"): False,  # the stored text is the member's value
    ("enum:int", "int"): False,
}


@dataclass(frozen=True)
class StoredColumn:
    """One column of a stored table: name, kind (as in ``EntitySpec.describe``), nullable."""

    name: str
    kind: str
    nullable: bool

    def as_json(self) -> list[Any]:
        return [self.name, self.kind, self.nullable]

    def text(self) -> str:
        return f"{self.kind}{' nullable' if self.nullable else ''}"


@dataclass(frozen=True)
class Stored:
    """A table as recorded in the store's sync-state ``columns`` JSON.

    ``columns`` are the columns the entity maps, in field order; ``kept`` the columns whose
    field was removed (their data stays); ``canonical_decimals`` whether decimal columns are
    known to hold canonical text only.
    """

    columns: tuple[StoredColumn, ...]
    key: tuple[str, ...]
    kept: tuple[StoredColumn, ...] = ()
    canonical_decimals: bool = False
    cls: str | None = None  # the class name the table was last opened with, when known

    @property
    def physical(self) -> tuple[StoredColumn, ...]:
        """Every column of the table: mapped ones, then kept ones."""
        return self.columns + self.kept

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "columns": [c.as_json() for c in self.columns],
            "key": list(self.key),
        }
        if self.kept:
            out["kept"] = [c.as_json() for c in self.kept]
        if self.canonical_decimals:
            out["decimals"] = "canonical"
        if self.cls is not None:
            out["class"] = self.cls
        return out


def _columns(rows: Iterable[Sequence[Any]]) -> tuple[StoredColumn, ...]:
    return tuple(StoredColumn(str(r[0]), str(r[1]), bool(r[2])) for r in rows)


def stored_of(described: Mapping[str, Any]) -> Stored:
    """The ``Stored`` table of a recorded description (``columns``/``key``/``kept`` JSON)."""
    return Stored(
        columns=_columns(described.get("columns", ())),
        key=tuple(str(k) for k in described.get("key", ())),
        kept=_columns(described.get("kept", ())),
        canonical_decimals=described.get("decimals") == "canonical",
        cls=None if described.get("class") is None else str(described["class"]),
    )


def spec_stored(spec: EntitySpec, *, canonical_decimals: bool = True) -> Stored:
    """The ``Stored`` description of a table freshly created for ``spec``."""
    described = spec.describe()
    return Stored(
        columns=_columns(described["columns"]),
        key=tuple(described["key"]),
        canonical_decimals=canonical_decimals,
        cls=spec.cls.__name__,
    )


@dataclass(frozen=True)
class Plan:
    """What reopening a stored table with a changed definition does (see the module doc).

    ``result`` is the table's description once the plan is applied. ``refused`` is empty
    when the plan can be applied without rewriting the table.
    """

    result: Stored
    add: tuple[Column, ...] = ()
    widen: tuple[tuple[str, str], ...] = ()  # (column, new kind)
    relax: tuple[str, ...] = ()  # columns that lose NOT NULL
    remove: tuple[str, ...] = ()  # columns kept, their field gone
    restore: tuple[str, ...] = ()  # kept columns mapped again
    must_have_values: tuple[str, ...] = ()  # restored NOT NULL fields: no NULL may be stored
    refused: tuple[str, ...] = ()
    reordered: bool = False
    # (what, column, detail) for the schema history; what is one word: added, widened,
    # nullable, removed, restored, reordered
    changes: tuple[tuple[str, str, str], ...] = field(default=())

    @property
    def rebuild(self) -> bool:
        """Whether the column types or NOT NULL constraints change (a table rebuild on
        SQLite, ``ALTER COLUMN`` elsewhere)."""
        return bool(self.widen or self.relax)


def plan(stored: Stored, spec: EntitySpec) -> Plan:
    """The plan that opens ``stored`` with ``spec`` (no I/O; see the module doc)."""
    wanted = {c[0]: StoredColumn(c[0], c[1], c[2]) for c in spec.describe()["columns"]}
    by_name = {c.name: c for c in spec.columns}
    mapped = {c.name: c for c in stored.columns}
    kept = {c.name: c for c in stored.kept}
    refused: list[str] = []
    add: list[Column] = []
    widen: list[tuple[str, str]] = []
    relax: list[str] = []
    restore: list[str] = []
    must_have: list[str] = []
    changes: list[tuple[str, str, str]] = []
    if tuple(stored.key) != tuple(spec.key):
        refused.append(f"key (stored {tuple(stored.key)}, now {spec.key})")
    result_cols: list[StoredColumn] = []
    for old in stored.columns:
        new = wanted.get(old.name)
        if new is None:
            continue
        ddl = _WIDENINGS.get((old.kind, new.kind)) if old.kind != new.kind else False
        if ddl is None or (old.nullable and not new.nullable):
            refused.append(f"{old.name} (stored {old.text()}, now {new.text()})")
            result_cols.append(old)
            continue
        if old.kind != new.kind:
            if ddl:
                widen.append((old.name, new.kind))
            changes.append(("widened", old.name, f"{old.kind} -> {new.kind}"))
        if new.nullable and not old.nullable:
            relax.append(old.name)
            changes.append(("nullable", old.name, "may now be None"))
        nullable = old.nullable or new.nullable
        result_cols.append(StoredColumn(old.name, new.kind, nullable))
    for name, new in wanted.items():
        if name in mapped:
            continue
        back = kept.get(name)
        if back is not None:
            if back.kind != new.kind:
                refused.append(f"{name} (kept as {back.text()}, now {new.text()})")
                continue
            if back.nullable and not new.nullable:
                must_have.append(name)
            restore.append(name)
            changes.append(("restored", name, "the kept column is mapped again"))
            result_cols.append(back)
            continue
        col = by_name[name]
        if not (new.nullable or col.default is not None):
            refused.append(
                f"{name} (not stored; it is not Optional and has no default, so the stored "
                "rows have no value for it)"
            )
            continue
        if name in spec.key:
            continue  # reported as a key change
        add.append(col)
        changes.append(("added", name, new.text()))
        result_cols.append(new)
    remove = [c.name for c in stored.columns if c.name not in wanted]
    new_kept: list[StoredColumn] = [k for k in stored.kept if k.name not in wanted]
    for name in remove:
        old = mapped[name]
        if not old.nullable:
            relax.append(name)
        new_kept.append(StoredColumn(name, old.kind, True))
        changes.append(("removed", name, "no longer a field; the column and its data are kept"))
    order = [c for c in spec.names if c in mapped]
    reordered = order != [c.name for c in stored.columns if c.name in wanted]
    if reordered:
        changes.append(("reordered", "", ", ".join(spec.names)))
    result_cols.sort(key=lambda c: spec.names.index(c.name))  # recorded in field order
    result = Stored(
        tuple(result_cols), spec.key, tuple(new_kept), stored.canonical_decimals, spec.cls.__name__
    )
    return Plan(
        result=result,
        add=tuple(add),
        widen=tuple(widen),
        relax=tuple(relax),
        remove=tuple(remove),
        restore=tuple(restore),
        must_have_values=tuple(must_have),
        refused=tuple(refused),
        reordered=reordered,
        changes=tuple(changes),
    )


def with_canonical_decimals(stored: Stored) -> Stored:
    return replace(stored, canonical_decimals=True)


def migrate_call(store_url: str, spec: EntitySpec, name: str) -> str:
    """The Python call that migrates table ``name`` of the store at ``store_url`` to ``spec``."""
    key = spec.key[0] if len(spec.key) == 1 else spec.key
    return (
        f"hubkit.Store({_shown(store_url)!r}).migrate(hubkit.reflect({spec.cls.__name__}, "
        f"key={key!r}), name={name!r})"
    )


def migrate_command(store_url: str, name: str) -> str:
    """The command line that migrates table ``name`` (to the definition last refused)."""
    shown = _shown(store_url)
    target = shown.removeprefix("sqlite:///") if shown.startswith("sqlite:///") else shown
    return f"hubkit migrate {shlex.quote(target)} {shlex.quote(name)}"


def _shown(store_url: str) -> str:
    """The store URL as shown in a message: any password hidden."""
    try:
        return sa.make_url(store_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return store_url


def refusal_message(name: str, spec: EntitySpec, refused: Sequence[str], store_url: str) -> str:
    """The error text of a refused change: each difference, and how to migrate."""
    return (
        f"table {name!r} holds rows of a different definition than {spec.cls.__name__}: "
        f"{'; '.join(refused)}. hubkit does not rewrite stored data by itself. To rewrite "
        f"the table into the new definition (in one transaction, keeping a copy of the old "
        f"table until you drop it), call {migrate_call(store_url, spec, name)} or run "
        f"`{migrate_command(store_url, name)}`; or open another table with table=..."
    )


def same_columns(spec: EntitySpec, name: str, tables: Mapping[str, Stored]) -> list[str]:
    """The other tables a renamed class probably wrote: when ``name`` is the spec's table
    name, the tables with exactly ``spec``'s column names and kinds last opened with a
    class of another name (tables of the same class under several names are no rename)."""
    if name != spec.table:
        return []
    wanted = {(c[0], c[1]) for c in spec.describe()["columns"]}
    return sorted(
        other
        for other, stored in tables.items()
        if other != name
        and stored.cls is not None
        and stored.cls != spec.cls.__name__
        and {(c.name, c.kind) for c in stored.columns} == wanted
    )


def renamed_warning(spec: EntitySpec, name: str, others: Sequence[str]) -> str:
    listed = ", ".join(repr(o) for o in others)
    return (
        f"created an empty table {name!r} for {spec.cls.__name__}, but this store already "
        f"holds {listed} with the same columns. If {spec.cls.__name__} is a renamed class, "
        f"open that table instead: table={others[0]!r} (hubkit.open_sink(..., table=...) or "
        f"store.table(spec, name=...))"
    )
