"""What a store checks before it uses a SQLite file or adopts a table, and the errors it gives.

- ``file_access(path)`` looks at the path only (no SQLite): a missing folder, a folder given
  as the file, or a new file in a folder hubkit cannot write to raise ``StorePathError``; an
  existing file hubkit cannot write to (or whose folder it cannot write to) is opened
  read-only. ``readonly_target`` is how: with SQLite's ``immutable`` flag when no write-ahead
  log is pending, so reading creates no ``-wal``/``-shm`` files (SQLite would give them the
  database's read-only mode, and they would block writes once the file is made writable).
- ``stored_table(tx, name)`` reads what the database holds for one table: its columns, the
  column sets it keeps unique (primary key, unique indexes) and hubkit's state row for it.
  ``refusal(name, spec, stored)`` decides, free of I/O, whether hubkit may use the table:
  a table hubkit did not create is adopted only if it has exactly the entity's columns and a
  primary key or unique index on exactly the entity key (an upsert needs one).
- ``store_error(what, exc, path)`` turns a database error into the ``StoreError`` that says
  what is wrong: ``CorruptStoreError`` (not a database, damaged) and ``ReadOnlyStoreError``
  (a write refused by the file system) name the file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import msgspec
import sqlalchemy as sa

from hubkit.entity import EntitySpec
from hubkit.errors import CorruptStoreError, ReadOnlyStoreError, StoreError, StorePathError
from hubkit.store.engine import BUSY_TIMEOUT_MS, SQLITE, SaTx, _compile
from hubkit.store.pg import PgTx

if TYPE_CHECKING:
    from sqlalchemy.sql.base import Executable

__all__ = [
    "FileAccess",
    "Reads",
    "StoredTable",
    "file_access",
    "probe",
    "readonly_target",
    "refusal",
    "store_error",
    "stored_table",
]


@dataclass(frozen=True)
class FileAccess:
    """How hubkit may use a SQLite file: ``readonly`` with the ``reason`` when it may not
    write to it."""

    path: str
    readonly: bool = False
    reason: str = ""


def file_access(path: str) -> FileAccess:
    """Check the path of a SQLite store (see the module docstring); raises ``StorePathError``."""
    file = Path(path)
    folder = file.parent
    if file.is_dir():
        raise StorePathError(
            f"store path {path} is a folder, not a SQLite file; give a file path such as "
            f"{file / 'hubkit.db'}",
            path=path,
        )
    if not folder.exists():
        raise StorePathError(
            f"cannot open store {path}: its folder {folder} does not exist (create it first)",
            path=path,
        )
    if not folder.is_dir():
        raise StorePathError(f"cannot open store {path}: {folder} is not a folder", path=path)
    folder_writable = os.access(folder, os.W_OK | os.X_OK)
    if not file.exists():
        if not folder_writable:
            raise StorePathError(
                f"cannot create store {path}: its folder {folder} is not writable", path=path
            )
        return FileAccess(path)
    if not os.access(file, os.R_OK):
        raise StorePathError(f"cannot read store {path}: permission denied", path=path)
    if not os.access(file, os.W_OK):
        mode = oct(file.stat().st_mode & 0o777)[2:]
        return FileAccess(path, True, f"the file is not writable (mode {mode})")
    if not folder_writable:
        return FileAccess(path, True, f"its folder {folder} is not writable")
    return FileAccess(path)


def readonly_target(path: str) -> str:
    """The SQLite URI that opens ``path`` for reading without creating files beside it.

    ``immutable`` when no write-ahead log is pending (none, or empty): SQLite then takes no
    locks and opens no log, so the file is read as it is. Otherwise the pending log must be
    read: plain ``mode=ro``, which uses the ``-wal``/``-shm`` files already there.
    """
    wal = Path(f"{path}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    return f"file:{quote(path)}?mode=ro" + ("" if pending else "&immutable=1")


class Reads(Protocol):
    """The reads ``stored_table`` needs (every ``hubkit.store.engine.Tx`` offers them)."""

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]: ...

    def column_names(self, table: str) -> list[str] | None: ...


@dataclass(frozen=True)
class StoredTable:
    """What the database holds for one table name (``columns`` None: no such table)."""

    columns: tuple[str, ...] | None
    unique: tuple[frozenset[str], ...]
    state: tuple[str, Mapping[str, Any]] | None  # hubkit's (fingerprint, description)


def stored_table(tx: Reads, name: str, state_table: sa.Table) -> StoredTable:
    """Read what the database holds for table ``name`` (see ``StoredTable``)."""
    columns = tx.column_names(name)
    state = None
    if tx.column_names(state_table.name) is not None:
        st = state_table.c
        found = tx.rows(sa.select(st.fingerprint, st.columns).where(st.sink == name))
        if found:
            state = (str(found[0][0]), msgspec.json.decode(found[0][1]))
    unique: list[frozenset[str]] = []
    if columns is not None and state is None:  # only a table to adopt needs its keys
        unique = _unique_sets(tx, name)
    return StoredTable(None if columns is None else tuple(columns), tuple(unique), state)


def _unique_sets(tx: Reads, name: str) -> list[frozenset[str]]:
    if isinstance(tx, SaTx) and tx.conn.dialect.name != "sqlite":
        insp = sa.inspect(tx.conn)
        found: list[Sequence[str | None]] = [
            insp.get_pk_constraint(name).get("constrained_columns") or []
        ]
        found += [u["column_names"] for u in insp.get_unique_constraints(name)]
        found += [i["column_names"] for i in insp.get_indexes(name) if i.get("unique")]
        return [frozenset(str(c) for c in s) for s in found if s and None not in s]
    if isinstance(tx, PgTx):
        # Every unique index, the primary key's and unique constraints' included.
        found_pg = tx.rows(
            sa.text(
                "SELECT i.indexrelid, a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = to_regclass(CAST(:t AS text)) AND i.indisunique "
                "AND i.indpred IS NULL"
            ).bindparams(t=name)
        )
        by_index: dict[Any, set[str]] = {}
        for index, column in found_pg:
            by_index.setdefault(index, set()).add(str(column))
        return [frozenset(cols) for cols in by_index.values()]
    pk = tx.rows(sa.text("SELECT name FROM pragma_table_info(:t) WHERE pk > 0").bindparams(t=name))
    sets = [frozenset(str(r[0]) for r in pk)] if pk else []
    indexes = tx.rows(
        sa.text(
            'SELECT name FROM pragma_index_list(:t) WHERE "unique" = 1 AND partial = 0'
        ).bindparams(t=name)
    )
    for (index,) in indexes:
        cols = tx.rows(sa.text("SELECT name FROM pragma_index_info(:i)").bindparams(i=index))
        if cols and all(c[0] is not None for c in cols):
            sets.append(frozenset(str(c[0]) for c in cols))
    return sets


def refusal(name: str, spec: EntitySpec, stored: StoredTable) -> str | None:
    """Why hubkit must not use table ``name`` for ``spec``, or None when it may."""
    if stored.state is not None:
        if stored.columns is not None:
            return None  # a table hubkit recorded: the schema reconciliation decides
        fingerprint, described = stored.state
        return None if fingerprint == spec.fingerprint else schema_diff(name, described, spec)
    if stored.columns is None:
        return None
    if sorted(stored.columns) != sorted(spec.names):
        return schema_diff(name, {"columns": [[c, "?", "?"] for c in stored.columns]}, spec)
    if frozenset(spec.key) not in stored.unique:
        key = ", ".join(spec.key)
        return (
            f"table {name!r} was not created by hubkit and has no primary key or unique index "
            f"on ({key}), the key of {spec.cls.__name__}: hubkit could not update its rows by "
            f"key. Add one (CREATE UNIQUE INDEX ... ON {name} ({key})), or use another table name"
        )
    return None


def schema_diff(name: str, stored: Mapping[str, Any], spec: EntitySpec) -> str:
    """The refusal of a table stored for another definition, naming the differing columns."""
    old = {c[0]: (c[1], c[2]) for c in stored.get("columns", [])}
    new = {c[0]: (c[1], c[2]) for c in spec.describe()["columns"]}
    parts = [f"{c} (stored, not in {spec.cls.__name__})" for c in old if c not in new]
    parts += [f"{c} (not stored)" for c in new if c not in old]
    for c in new:
        if c in old and old[c] != new[c] and "?" not in old[c]:
            (ok, on), (nk, nn) = old[c], new[c]
            parts.append(
                f"{c} (stored {ok}{' nullable' if on else ''}, now {nk}{' nullable' if nn else ''})"
            )
    if "key" in stored and list(stored["key"]) != list(spec.key):
        parts.append(f"key (stored {tuple(stored['key'])}, now {spec.key})")
    return (
        f"table {name!r} holds rows of a different definition than {spec.cls.__name__}: "
        f"{'; '.join(parts) or 'columns differ'}. hubkit does not rewrite stored data: "
        "migrate the table, or use another table name"
    )


_CORRUPT: Sequence[str] = (
    "file is not a database",
    "database disk image is malformed",
    "file is encrypted",
)


def store_error(what: str, exc: BaseException, path: str | None) -> StoreError:
    """The ``StoreError`` for database error ``exc`` during ``what`` on the file ``path``."""
    text = str(exc)
    if path is not None:
        lowered = text.lower()
        if any(marker in lowered for marker in _CORRUPT):
            return CorruptStoreError(
                f"{what} failed: {path} is not a SQLite database or is damaged "
                f"({text.splitlines()[0] if text else type(exc).__name__})",
                path=path,
            )
        if "readonly database" in lowered or "read-only database" in lowered:
            return ReadOnlyStoreError(
                f"{what} failed: the store {path} cannot be written to "
                "(is the file or its folder read-only?)",
                path=path,
            )
    return StoreError(f"{what} failed: {text}")


def probe(path: str, name: str, spec: EntitySpec, state_table: sa.Table) -> None:
    """Refuse table ``name`` of the existing file ``path`` before hubkit changes anything.

    Reads through a plain connection that sets nothing (no WAL switch): a refused database is
    left exactly as it was. Raises ``StoreError`` with ``refusal``'s reason, or the one
    ``store_error`` gives for a database error.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        stored = stored_table(_PlainTx(conn), name, state_table)
    except sqlite3.Error as exc:
        raise store_error(f"opening table {name!r}", exc, path) from exc
    finally:
        conn.close()
    problem = refusal(name, spec, stored)
    if problem is not None:
        raise StoreError(problem)


class _PlainTx:
    """The reads ``stored_table`` needs, on a plain ``sqlite3`` connection (no settings)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, stmt: Executable) -> list[tuple[Any, ...]]:
        sql, params = _compile(stmt, SQLITE)
        return [tuple(r) for r in self.conn.execute(sql, params)]

    def column_names(self, table: str) -> list[str] | None:
        found = self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
        return [str(r[0]) for r in found] or None
