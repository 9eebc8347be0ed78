"""Secondary indexes of entity tables: declared on the entity or per sink, named stably.

Declare on the entity class, with the decorator (one per index, in any order with
``@dataclass``)::

    @hubkit.index("symbol", "time")
    @hubkit.index("side")
    @dataclass
    class Trade:
        id: str
        symbol: str
        ...

or, equivalently, as a class attribute (what the decorator sets)::

    @dataclass
    class Trade:
        __hubkit_indexes__: ClassVar = [("symbol", "time"), "side"]

or per sink: ``open_sink(..., indexes=[("symbol", "time")])``. An index is a column name or
a tuple of them, named as the table names its columns (a nested field's column is
``outer__inner``; ``"outer.inner"`` is accepted too). Subclasses inherit their bases'
declarations.

Decisions only, no I/O: ``table_indexes`` turns declarations into SQLAlchemy ``Index``
objects on a ``Table`` (so ``CreateTable``/``create_all`` create them with the table), and
``missing_indexes`` says which of them an existing table lacks::

    wanted = table_indexes(table, declared_indexes(Trade), sink_indexes, key=("id",))
    for ix in missing_indexes(wanted, sa.inspect(conn).get_indexes(table.name)):
        conn.execute(sa.schema.CreateIndex(ix, if_not_exists=True))

Names are ``ix_<table>__<col>__<col>``; when a part has characters other than letters,
digits and single inner ``_`` (a nested column's ``__``, a ``-``), or the name would pass
63 characters, it is cut and ends in a hash of the exact declaration. So the same
declaration gives the same name on every open and every database, and different ones
different names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from hubkit.errors import SchemaError

__all__ = [
    "INDEXES_ATTRIBUTE",
    "IndexSpec",
    "declared_indexes",
    "index",
    "index_name",
    "missing_indexes",
    "normalize_indexes",
    "table_indexes",
]

INDEXES_ATTRIBUTE: Final = "__hubkit_indexes__"
IndexSpec = str | Sequence[str]
"""One index: a column name, or a sequence of them (the index's column order)."""

_MAX_NAME: Final = 63  # PostgreSQL's identifier limit; SQLite has none
# A name part that reads back unambiguously between "__" separators.
_PLAIN: Final = re.compile(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*")
_T = TypeVar("_T", bound=type)


def index(*columns: str) -> Callable[[_T], _T]:
    """Class decorator: declare an index on ``columns`` (in that order) for the entity."""
    if not columns:
        raise SchemaError("hubkit.index() needs at least one column name")

    def declare(cls: _T) -> _T:
        # A new list on this class: a base's declarations are copied, never appended to.
        ours = [*getattr(cls, INDEXES_ATTRIBUTE, ()), tuple(columns)]
        setattr(cls, INDEXES_ATTRIBUTE, ours)
        return cls

    return declare


def declared_indexes(cls: type) -> tuple[tuple[str, ...], ...]:
    """The indexes ``cls`` declares (``@hubkit.index`` or ``__hubkit_indexes__``), normalized."""
    declared = getattr(cls, INDEXES_ATTRIBUTE, ())
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        raise SchemaError(
            f"{cls.__name__}.{INDEXES_ATTRIBUTE} must be a list of column names or tuples "
            f"of them, not {declared!r}"
        )
    return normalize_indexes(declared, owner=cls.__name__)


def normalize_indexes(
    indexes: Iterable[IndexSpec], *, owner: str = "indexes"
) -> tuple[tuple[str, ...], ...]:
    """Each index as a tuple of column names; the first of repeated indexes is kept."""
    out: list[tuple[str, ...]] = []
    for spec in indexes:
        columns = (spec,) if isinstance(spec, str) else tuple(spec)
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise SchemaError(f"{owner}: an index is a column name or a tuple of them: {spec!r}")
        columns = tuple(c.replace(".", "__") for c in columns)
        if len(set(columns)) != len(columns):
            raise SchemaError(f"{owner}: index {columns} names a column twice")
        if columns not in out:
            out.append(columns)
    return tuple(out)


def index_name(table: str, columns: Sequence[str]) -> str:
    """The stable name of the index on ``columns`` of ``table``."""
    parts = [table, *columns]
    name = re.sub(r"[^A-Za-z0-9_]", "_", "ix_" + "__".join(parts))
    if len(name) <= _MAX_NAME and all(_PLAIN.fullmatch(p) for p in parts):
        return name
    # Cut, changed, or a part with "__" of its own (a nested column: ("a__b",) and
    # ("a", "b") would read alike): a hash of the exact declaration keeps names distinct.
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11]}_{digest}"


def table_indexes(
    table: sa.Table, *declared: Iterable[IndexSpec], key: Sequence[str] = ()
) -> list[sa.Index]:
    """``Index`` objects on ``table`` for every declared index, attached to the table.

    ``declared``: any number of declarations (the entity's, the sink's), merged in order
    without repeats. An index whose columns lead the primary key ``key`` is skipped: the
    key's own index serves it. A column the table lacks raises ``SchemaError`` naming it.
    Calling this again for the same table returns the indexes already attached.
    """
    merged = normalize_indexes([spec for group in declared for spec in group], owner=table.name)
    attached = {str(ix.name): ix for ix in table.indexes}
    out = []
    for columns in merged:
        unknown = [c for c in columns if c not in table.c]
        if unknown:
            raise SchemaError(
                f"index {columns} on {table.name!r}: no column(s) {unknown}; "
                f"the columns are {list(table.c.keys())}"
            )
        if tuple(key[: len(columns)]) == columns:
            continue
        name = index_name(table.name, columns)
        ix = attached.get(name)
        if ix is None:
            ix = sa.Index(name, *[table.c[c] for c in columns])
        out.append(ix)
    return out


def missing_indexes(
    wanted: Iterable[sa.Index], existing: Iterable[Mapping[str, Any]]
) -> list[sa.Index]:
    """The ``wanted`` indexes an existing table lacks.

    ``existing``: the table's indexes as ``Inspector.get_indexes`` reports them (mappings
    with ``name`` and ``column_names``). An index counts as present when one of that name
    exists, or one on the same columns in the same order (made by hand, say).
    """
    names = {row.get("name") for row in existing if row.get("name")}
    shapes = {tuple(row.get("column_names") or ()) for row in existing}
    return [
        ix
        for ix in wanted
        if ix.name not in names and tuple(c.name for c in ix.columns) not in shapes
    ]
