"""PostgreSQL bulk rows: native column types, COPY upserts and Arrow reads over ADBC.

Statements are built with SQLAlchemy Core; rows travel as Arrow through ADBC's PostgreSQL
driver (binary ``COPY`` in, Arrow out), inside a transaction the caller owns::

    conn = pgbulk.connect(url)                 # ADBC connection, not autocommit
    with conn.cursor() as cur:
        pgbulk.upsert(cur, table, frame)       # COPY into a TEMP table + INSERT ... ON CONFLICT
        pgbulk.execute(cur, state_update)      # any SQLAlchemy statement, same transaction
        conn.commit()                          # or conn.rollback(): nothing of it remains
        arrow = pgbulk.fetch_arrow(cur, sa.select(table))
        for batch in pgbulk.iter_batches(cur, sa.select(table)): ...

How each hubkit column kind is stored (``column_type``) and shipped for COPY
(``arrow_type``):

==========  ============================  =====================  ===========================
kind        PostgreSQL column             Arrow for COPY         read back as (Polars)
==========  ============================  =====================  ===========================
str         text                          string                 String
int         bigint                        int64                  Int64
float       double precision              float64                Float64
bool        boolean                       bool                   Boolean
decimal     numeric (no fixed scale)      string, cast in SQL    String, exact decimal text
datetime    timestamptz                   timestamp[us, UTC]     Datetime("us", "UTC")
date        date                          date32                 Date
enum        text (bigint for int values)  string (int64)         String (Int64)
json        jsonb                         string, cast in SQL    String (PostgreSQL's JSON
                                                                 text: ``{"a": 1}``)
==========  ============================  =====================  ===========================

Decimals and JSON are staged as text and cast by PostgreSQL, so a decimal keeps every digit
and its scale (``"0.10"`` stays ``"0.10"``; Arrow's decimal128 would cap it at 38 digits).
jsonb keeps the value, not the text: key order and spacing come back as PostgreSQL writes
them, so compare JSON after decoding.

Promises of ``upsert``: a key repeated inside one batch keeps its last row; an existing key
gets the given columns replaced (columns not given keep their values); rows are merged in
key order, so concurrent upserts into one table (other processes, other machines) lock rows
in the same order and do not deadlock each other; nothing is committed or rolled back
here. A failed statement raises ``StoreError`` naming the table; PostgreSQL has then aborted
the caller's transaction, which must be rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import msgspec
import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import UserDefinedType

from hubkit.entity import Column
from hubkit.errors import StoreError

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection, Cursor
    from sqlalchemy.sql.base import Executable

__all__ = [
    "STAGE_TABLE",
    "JsonbText",
    "arrow_type",
    "column_type",
    "connect",
    "copy_table",
    "define_table",
    "dialect",
    "execute",
    "fetch_arrow",
    "iter_batches",
    "libpq_uri",
    "to_frame",
    "upsert",
]

STAGE_TABLE: Final = "hubkit_stage"
# SQLAlchemy renders statements for ADBC's PostgreSQL driver, which takes $1, $2 ...
# (SQLAlchemy's dialect constructors carry no annotations.)
_DIALECT: Final = postgresql.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


class JsonbText(UserDefinedType[Any]):
    """A ``jsonb`` column whose statements bind JSON text (as hubkit frames hold it).

    Text is sent as is and cast by PostgreSQL; any other value is encoded as JSON first.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSONB"

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        def encode(value: Any) -> Any:
            if value is None or isinstance(value, str):
                return value
            return msgspec.json.encode(value).decode()

        return encode

    def bind_expression(self, bindvalue: BindParameter[Any]) -> ColumnElement[Any]:
        return sa.cast(bindvalue, postgresql.JSONB())


# kind -> (native column type, Arrow type for COPY); an int-valued enum stores as "int".
_TYPES: Final[Mapping[str, tuple[Callable[[], sa.types.TypeEngine[Any]], pa.DataType]]] = (
    MappingProxyType(
        {
            "str": (sa.Text, pa.large_string()),
            "int": (sa.BigInteger, pa.int64()),
            "float": (sa.Double, pa.float64()),
            "bool": (sa.Boolean, pa.bool_()),
            "decimal": (lambda: sa.Numeric(asdecimal=True), pa.large_string()),
            "datetime": (lambda: postgresql.TIMESTAMP(timezone=True), pa.timestamp("us", tz="UTC")),
            "date": (sa.Date, pa.date32()),
            "json": (JsonbText, pa.large_string()),
        }
    )
)


def _types(column: Column) -> tuple[Callable[[], sa.types.TypeEngine[Any]], pa.DataType]:
    kind = column.kind
    if kind == "enum":
        kind = "int" if column.dtype == pl.Int64 else "str"
    try:
        return _TYPES[kind]
    except KeyError:
        raise StoreError(f"column {column.name!r} has unknown kind {kind!r}") from None


def column_type(column: Column) -> sa.types.TypeEngine[Any]:
    """The native PostgreSQL column type of a hubkit column (see the table above)."""
    return _types(column)[0]()


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type a column's values are sent in for COPY (see the table above)."""
    return _types(column)[1]


def define_table(
    metadata: sa.MetaData, name: str, columns: Sequence[Column], key: Sequence[str]
) -> sa.Table:
    """A SQLAlchemy ``Table`` of native columns (``column_type``) with ``key`` as primary key."""
    return sa.Table(
        name,
        metadata,
        *(
            sa.Column(c.name, column_type(c), primary_key=c.name in key, nullable=c.nullable)
            for c in columns
        ),
    )


def _copy_column(column: Column, s: pl.Series) -> pl.Series:
    if column.kind == "datetime" and s.dtype.is_integer():  # microseconds since the epoch
        return s.cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    if column.kind == "datetime" and isinstance(s.dtype, pl.Datetime):
        if s.dtype.time_zone is None:
            raise StoreError(f"column {column.name!r} holds naive datetimes; hubkit stores UTC")
        return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if column.kind == "date" and s.dtype == pl.String:  # ISO text
        return s.str.to_date("%Y-%m-%d")
    return s


def copy_table(columns: Sequence[Column], frame: pl.DataFrame) -> pa.Table:
    """A hubkit frame -> the Arrow table COPY sends, one column per ``columns`` entry.

    Takes frames as hubkit returns them (``EntitySpec.to_frame``) and also the SQLite store's
    stored forms (datetimes as integer microseconds, dates as ISO text). Raises
    ``StoreError`` naming a missing column or one that does not convert.
    """
    out = []
    for col in columns:
        if col.name not in frame.columns:
            raise StoreError(f"the frame has no column {col.name!r}")
        try:
            s = _copy_column(col, frame.get_column(col.name))
            out.append(s.to_arrow().cast(arrow_type(col)))
        except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
            raise StoreError(f"column {col.name!r} does not convert for COPY: {exc}") from exc
    return pa.table(out, names=[c.name for c in columns])


def libpq_uri(url: str | sa.URL) -> str:
    """A SQLAlchemy PostgreSQL URL (any driver) -> the libpq URI ADBC and psycopg take."""
    u = sa.make_url(url)
    if u.get_backend_name() != "postgresql":
        raise StoreError(f"{u.render_as_string()} is not a PostgreSQL URL")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(url: str | sa.URL) -> Connection:
    """An ADBC connection (autocommit off: the caller commits) to a PostgreSQL URL."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    try:
        conn: Connection = pgdbapi.connect(libpq_uri(url))
        return conn
    except Exception as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc


def dialect() -> Dialect:
    """The SQLAlchemy dialect statements are compiled with for ADBC (``$1`` placeholders)."""
    return _DIALECT


def _sql(stmt: Executable) -> tuple[str, tuple[Any, ...]]:
    """SQL text with $n placeholders and the bound values, encoded by their column types."""
    compiled = stmt.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    if isinstance(stmt, sa.schema.ExecutableDDLElement):
        return str(compiled), ()
    state = compiled.construct_expanded_state()
    params = []
    for name in state.positiontup or ():
        value = state.parameters[name]
        proc = state.processors.get(name)
        if proc is None and name in compiled.binds:  # processors of bind_expression types
            proc = compiled.binds[name].type.bind_processor(_DIALECT)
        params.append(proc(value) if proc is not None else value)
    return state.statement, tuple(params)


def _run(cur: Cursor, stmt: Executable | str, what: str) -> None:
    sql, params = (stmt, ()) if isinstance(stmt, str) else _sql(stmt)
    try:
        cur.execute(sql, params or None)
    except Exception as exc:
        raise StoreError(f"{what} failed: {exc}") from exc


def execute(cur: Cursor, stmt: Executable | str) -> None:
    """Run one SQLAlchemy statement, DDL element or SQL text on an ADBC cursor.

    Results are not read (use ``fetch_arrow`` for those).

    Bound values may be text, numbers, booleans, None, datetimes and dates.
    """
    _run(cur, stmt, "statement")


def _merge(table: sa.Table, names: Sequence[str], keys: Sequence[str]) -> str:
    stage = sa.table(STAGE_TABLE, *(sa.column(n) for n in names))
    select = sa.select(*(sa.cast(stage.c[n], table.c[n].type).label(n) for n in names))
    stmt = postgresql.insert(table).from_select(list(names), select)
    rest = [n for n in names if n not in keys]
    if rest:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={n: stmt.excluded[n] for n in rest}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    return str(stmt.compile(dialect=_DIALECT))


def _rows(data: pa.Table | pl.DataFrame, table: sa.Table, keys: list[str]) -> pl.DataFrame:
    frame = data if isinstance(data, pl.DataFrame) else pl.from_arrow(data)
    if not isinstance(frame, pl.DataFrame):  # pl.from_arrow returns a Series for arrays
        raise StoreError(f"rows for {table.name!r} must be a table, not {type(data).__name__}")
    unknown = [n for n in frame.columns if n not in table.c]
    if unknown:
        raise StoreError(f"table {table.name!r} has no column(s) {', '.join(unknown)}")
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise StoreError(f"rows for {table.name!r} lack key column(s) {', '.join(missing)}")
    # The last row of a key wins, and rows go in key order: ON CONFLICT cannot touch one
    # row twice in a statement, and a common lock order keeps concurrent writers from
    # deadlocking. The merge reads the fresh temporary table in the order COPY wrote it
    # (temporary tables are never scanned in parallel or synchronised with other scans).
    # A stable sort puts a key's rows next to each other in input order, so keeping the
    # rows whose next row has another key drops repeats without a hash pass (~25% faster
    # than unique() on 1M text keys).
    ordered = frame.sort(keys, maintain_order=True)
    last = pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(-1)) for k in keys)
    return ordered.filter(last)


def upsert(cur: Cursor, table: sa.Table, data: pa.Table | pl.DataFrame) -> int:
    """Insert or replace ``data``'s rows in ``table`` inside the cursor's open transaction.

    ``table`` is a SQLAlchemy ``Table`` with a primary key; ``data`` has the key columns and
    any of the other columns, in COPY form (``copy_table``, or frames whose dtypes already
    are: String, Int64, Float64, Boolean, Datetime("us", "UTC"), Date). Returns the number
    of distinct keys written. Does not commit.
    """
    keys = [c.name for c in table.primary_key.columns]
    if not keys:
        raise StoreError(f"table {table.name!r} has no primary key to upsert on")
    rows = _rows(data, table, keys)
    if rows.height == 0:
        return 0
    try:
        # "replace": a staging table left by a failed merge on an autocommit connection
        # (inside a transaction, the rollback removes it) must not block the next upsert.
        cur.adbc_ingest(STAGE_TABLE, rows.to_arrow(), mode="replace", temporary=True)
    except Exception as exc:
        raise StoreError(f"staging rows for {table.name!r} failed: {exc}") from exc
    _run(cur, _merge(table, rows.columns, keys), f"upsert into {table.name!r}")
    _run(cur, f"DROP TABLE {STAGE_TABLE}", "dropping the staging table")
    return rows.height


def _plain_type(t: pa.DataType) -> pa.DataType:
    return t.storage_type if isinstance(t, pa.BaseExtensionType) else t


def _plain(data: pa.RecordBatch) -> pa.RecordBatch:
    """Drop the driver's extension types (numeric, json) for their text storage."""
    if not any(isinstance(f.type, pa.BaseExtensionType) for f in data.schema):
        return data
    arrays = [a.storage if isinstance(a.type, pa.BaseExtensionType) else a for a in data.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=_plain_schema(data))


def fetch_arrow(cur: Cursor, stmt: Executable | str) -> pa.Table:
    """Run a SELECT and return all its rows as one Arrow table (types: see the table above)."""
    _run(cur, stmt, "query")
    try:
        result = cur.fetch_arrow_table()
    except Exception as exc:
        raise StoreError(f"reading query results failed: {exc}") from exc
    return pa.Table.from_batches([_plain(b) for b in result.to_batches()], _plain_schema(result))


def _plain_schema(data: pa.Table | pa.RecordBatch) -> pa.Schema:
    """The schema without extension types; each field keeps the driver's metadata (e.g.
    ``POSTGRESQL:type``)."""
    return pa.schema(
        [pa.field(f.name, _plain_type(f.type), f.nullable, f.metadata) for f in data.schema]
    )


def iter_batches(cur: Cursor, stmt: Executable | str) -> Generator[pa.RecordBatch, None, None]:
    """Run a SELECT and yield its rows as Arrow record batches as they arrive.

    The cursor is busy until the iterator is exhausted or closed.
    """
    _run(cur, stmt, "query")
    try:
        reader = cur.fetch_record_batch()
    except Exception as exc:
        raise StoreError(f"reading query results failed: {exc}") from exc
    with reader:
        for batch in reader:
            yield _plain(batch)


def to_frame(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """Arrow read by ``fetch_arrow``/``iter_batches`` -> a Polars frame in hubkit's dtypes."""
    frame = pl.from_arrow(data)
    if not isinstance(frame, pl.DataFrame):  # only for Arrow arrays, which reads never give
        raise StoreError(f"cannot make a frame of {type(data).__name__}")
    return frame
