"""Secondary indexes of a stored table: which ones it should have, and adding those it lacks.

The indexes of an entity table are the entity's declarations (``@hubkit.index`` or
``__hubkit_indexes__``, see ``hubkit.indexes``) merged with those the caller asks for
(``open_sink(..., indexes=...)``, ``Store.table(..., indexes=...)``). ``Store.table``
creates them with a new table and adds the missing ones to an existing table, in the
same write transaction that checks the table; an index that already exists (by name, or a
hand-made one on the same columns in the same order) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex

from hubkit.indexes import IndexSpec, declared_indexes, missing_indexes, table_indexes
from hubkit.store.engine import SaTx, Tx

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

from hubkit.store.pg import PgTx

__all__ = ["add_missing_indexes", "existing_indexes", "wanted_indexes"]

# Every index of a SQLite table with its columns in order (the key's own index too).
_SQLITE_INDEXES: Final = sa.text(
    "SELECT il.name, ii.name FROM pragma_index_list(:table) AS il "
    "JOIN pragma_index_info(il.name) AS ii ORDER BY il.seq, ii.seqno"
)
# The same from PostgreSQL's catalogue.
_PG_INDEXES: Final = sa.text(
    "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = to_regclass(CAST(:table AS text)) ORDER BY c.relname, k.ord"
)


def wanted_indexes(
    table: sa.Table, spec: EntitySpec, extra: Iterable[IndexSpec] = ()
) -> list[sa.Index]:
    """The indexes ``table`` should have: ``spec``'s entity declarations, then ``extra``.

    Raises ``SchemaError`` naming an index on a column the table lacks (no I/O).
    """
    return table_indexes(table, declared_indexes(spec.cls), list(extra), key=spec.key)


def existing_indexes(tx: Tx, name: str) -> list[dict[str, Any]]:
    """The indexes table ``name`` has, as ``Inspector.get_indexes`` reports them."""
    if isinstance(tx, SaTx) and tx.conn.dialect.name != "sqlite":
        return [dict(ix) for ix in sa.inspect(tx.conn).get_indexes(name)]
    found: dict[str, list[str]] = {}
    query = _PG_INDEXES if isinstance(tx, PgTx) else _SQLITE_INDEXES
    for index, column in tx.rows(query.bindparams(table=name)):
        found.setdefault(str(index), []).append(str(column))
    return [{"name": n, "column_names": cols} for n, cols in found.items()]


def add_missing_indexes(tx: Tx, table: sa.Table, wanted: Iterable[sa.Index]) -> list[str]:
    """Create the ``wanted`` indexes ``table`` lacks, in ``tx``; their names."""
    wanted = list(wanted)
    if not wanted:
        return []
    missing = missing_indexes(wanted, existing_indexes(tx, table.name))
    for ix in missing:
        tx.ddl(CreateIndex(ix, if_not_exists=True))
    return [str(ix.name) for ix in missing]
