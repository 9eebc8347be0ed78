"""pgbulk on a real PostgreSQL server: native types, COPY upserts, transactions, Arrow reads."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from adbc_driver_manager.dbapi import Connection

from hubkit import pgbulk
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import StoreError


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@dataclass
class Every:
    id: str
    count: int
    ratio: float
    flag: bool
    amount: Decimal
    at: datetime
    day: date
    side: Side
    level: Level
    tags: list[str]
    extra: dict[str, Any]
    note: str | None = None
    maybe_count: int | None = None
    maybe_amount: Decimal | None = None
    maybe_at: datetime | None = None
    maybe_day: date | None = None
    maybe_flag: bool | None = None


@dataclass
class Tick:
    symbol: str
    seq: int
    price: float
    size: float | None = None


def _every(n: int) -> list[Every]:
    return [
        Every(
            id=f"row-{i}",
            count=i - 2**40,
            ratio=i / 3,
            flag=i % 2 == 0,
            amount=Decimal(f"{i}.10") if i else Decimal("123456789012345678901234567890.000000001"),
            at=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(microseconds=1_000_001 * i),
            day=date(1999, 12, 31) + timedelta(days=i),
            side=Side.BUY if i % 2 else Side.SELL,
            level=Level.HIGH if i % 3 else Level.LOW,
            tags=[f"t{i}", "ü"],
            extra={"i": i, "nested": {"ok": True}},
            note=None if i % 2 else f"note {i}",
            maybe_count=None if i % 2 else i,
            maybe_amount=None if i % 2 else Decimal("-0.0001"),
            maybe_at=None if i % 2 else datetime(2030, 6, 1, 12, tzinfo=UTC),
            maybe_day=None if i % 2 else date(2000, 2, 29),
            maybe_flag=None if i % 3 == 0 else i % 3 == 1,
        )
        for i in range(n)
    ]


@pytest.fixture
def pg(postgres_database: str) -> Iterator[Connection]:
    conn = pgbulk.connect(postgres_database)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _create(conn: Connection, spec: EntitySpec) -> sa.Table:
    table = pgbulk.define_table(sa.MetaData(), spec.table, spec.columns, spec.key)
    with conn.cursor() as cur:
        pgbulk.execute(cur, sa.schema.CreateTable(table))
    conn.commit()
    return table


def _read(conn: Connection, table: sa.Table) -> pl.DataFrame:
    key = [table.c[c.name] for c in table.primary_key.columns]
    with conn.cursor() as cur:
        return pgbulk.to_frame(pgbulk.fetch_arrow(cur, sa.select(table).order_by(*key)))


def test_native_column_types_are_created(pg: Connection) -> None:
    table = _create(pg, reflect(Every, "id"))
    with pg.cursor() as cur:
        found = pgbulk.fetch_arrow(
            cur,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_name = '{table.name}'",
        )
    types = {r["column_name"]: r["data_type"] for r in found.to_pylist()}
    assert types["count"] == "bigint"
    assert types["ratio"] == "double precision"
    assert types["flag"] == "boolean"
    assert types["amount"] == "numeric"
    assert types["at"] == "timestamp with time zone"
    assert types["day"] == "date"
    assert types["side"] == "text"
    assert types["level"] == "bigint"
    assert types["tags"] == types["extra"] == "jsonb"


def test_every_kind_round_trips(pg: Connection) -> None:
    spec = reflect(Every, "id")
    table = _create(pg, spec)
    rows = _every(12)
    frame = spec.to_frame(rows)
    with pg.cursor() as cur:
        assert pgbulk.upsert(cur, table, pgbulk.copy_table(spec.columns, frame)) == 12
    pg.commit()

    back = _read(pg, table)
    assert back.schema == frame.schema
    assert spec.from_frame(back) == sorted(rows, key=lambda r: r.id)
    # Decimal text keeps every digit (canonical: no trailing zeros); JSON comes back in
    # PostgreSQL's spelling.
    first = back.row(0, named=True)
    assert first["amount"] == "123456789012345678901234567890.000000001"
    assert back.filter(pl.col("id") == "row-1")["amount"].item() == "1.1"
    assert first["extra"] == '{"i": 0, "nested": {"ok": true}}'


def test_copy_table_takes_other_zones_and_the_sqlite_stored_forms(pg: Connection) -> None:
    spec = reflect(Every, "id")
    table = _create(pg, spec)
    frame = spec.to_frame(_every(3))
    stored = frame.with_columns(
        pl.col("at").dt.convert_time_zone("Asia/Tokyo"),
        pl.col("maybe_at").dt.epoch("us"),
        pl.col("day").dt.to_string("%Y-%m-%d"),
    )
    with pg.cursor() as cur:
        pgbulk.upsert(cur, table, pgbulk.copy_table(spec.columns, stored))
    pg.commit()
    assert spec.from_frame(_read(pg, table)) == spec.from_frame(frame)


def test_a_naive_datetime_column_is_refused() -> None:
    spec = reflect(Every, "id")
    frame = spec.to_frame(_every(1)).with_columns(pl.col("at").dt.replace_time_zone(None))
    with pytest.raises(StoreError, match="'at' holds naive datetimes"):
        pgbulk.copy_table(spec.columns, frame)


def test_upsert_replaces_existing_keys_and_keeps_the_last_row_of_a_key(pg: Connection) -> None:
    spec = reflect(Tick, ("symbol", "seq"))
    table = _create(pg, spec)
    with pg.cursor() as cur:
        pgbulk.upsert(
            cur,
            table,
            pl.DataFrame(
                {"symbol": ["A", "A", "B"], "seq": [1, 2, 1], "price": [1.0, 2.0, 3.0]},
            ).with_columns(size=pl.lit(0.5)),
        )
        pg.commit()
        # A changed row, a new key, a key repeated in one batch (last wins), and a frame
        # without the "size" column: rows it does not mention keep their size.
        n = pgbulk.upsert(
            cur,
            table,
            pl.DataFrame({"symbol": ["C", "B", "C"], "seq": [1, 1, 1], "price": [4.0, 30.0, 5.0]}),
        )
        pg.commit()
    assert n == 2
    assert _read(pg, table).rows() == [
        ("A", 1, 1.0, 0.5),
        ("A", 2, 2.0, 0.5),
        ("B", 1, 30.0, 0.5),
        ("C", 1, 5.0, None),
    ]


def test_a_rolled_back_transaction_leaves_nothing(pg: Connection) -> None:
    spec = reflect(Tick, ("symbol", "seq"))
    table = _create(pg, spec)
    state = sa.Table("state", sa.MetaData(), sa.Column("cursor", sa.Text))
    with pg.cursor() as cur:
        pgbulk.execute(cur, sa.schema.CreateTable(state))
        pgbulk.upsert(cur, table, pl.DataFrame({"symbol": ["A"], "seq": [1], "price": [1.0]}))
        pg.commit()
        # rows, a cursor update and a new staging table, then a rollback
        pgbulk.upsert(
            cur, table, pl.DataFrame({"symbol": ["A", "B"], "seq": [1, 1], "price": [9.0, 9.0]})
        )
        pgbulk.execute(cur, sa.insert(state).values(cursor="c1"))
        pg.rollback()
        assert pgbulk.fetch_arrow(cur, sa.select(state)).num_rows == 0
    assert _read(pg, table).rows() == [("A", 1, 1.0, None)]


def test_bad_rows_raise_store_error_and_store_nothing(pg: Connection) -> None:
    spec = reflect(Every, "id")
    table = _create(pg, spec)
    good = spec.to_frame(_every(2))
    with pg.cursor() as cur:
        pgbulk.upsert(cur, table, pgbulk.copy_table(spec.columns, good))
        pg.commit()
        with pytest.raises(StoreError, match="no column"):
            pgbulk.upsert(cur, table, good.with_columns(bogus=pl.lit(1)))
        with pytest.raises(StoreError, match="lack key column"):
            pgbulk.upsert(cur, table, good.drop("id"))
        bad = pgbulk.copy_table(spec.columns, _every_with_amount(spec, "not a number"))
        with pytest.raises(StoreError, match="upsert into 'every' failed"):
            pgbulk.upsert(cur, table, bad)
    pg.rollback()
    assert spec.from_frame(_read(pg, table)) == spec.from_frame(good)


def test_a_failed_merge_outside_a_transaction_does_not_block_the_next(
    postgres_database: str,
) -> None:
    import adbc_driver_postgresql.dbapi as pgdbapi

    spec = reflect(Tick, ("symbol", "seq"))
    conn = pgdbapi.connect(pgbulk.libpq_uri(postgres_database), autocommit=True)
    try:
        table = _create(conn, spec)
        with conn.cursor() as cur:
            with pytest.raises(StoreError, match="upsert into 'tick' failed"):
                bad = pl.DataFrame({"symbol": ["A"], "seq": ["not a number"], "price": [1.0]})
                pgbulk.upsert(cur, table, bad)
            good = pl.DataFrame({"symbol": ["A"], "seq": [1], "price": [1.0]})
            assert pgbulk.upsert(cur, table, good) == 1
        assert _read(conn, table).rows() == [("A", 1, 1.0, None)]
    finally:
        conn.close()


def _every_with_amount(spec: EntitySpec, amount: str) -> pl.DataFrame:
    return spec.to_frame(_every(3)).with_columns(amount=pl.lit(amount))


def test_statements_bind_text_numbers_times_and_json(pg: Connection) -> None:
    spec = reflect(Every, "id")
    table = _create(pg, spec)
    with pg.cursor() as cur:
        pgbulk.upsert(cur, table, pgbulk.copy_table(spec.columns, spec.to_frame(_every(1))))
        tokyo = timezone(timedelta(hours=9))
        pgbulk.execute(
            cur,
            sa.update(table)
            .where(table.c.id == "row-0")
            .values(
                amount=Decimal("2.50"),
                at=datetime(2024, 1, 1, 9, tzinfo=tokyo),
                day=date(2024, 2, 29),
                flag=True,
                tags='["from", "text"]',
                extra={"from": "dict"},
                note=None,
            ),
        )
        pg.commit()
    (row,) = spec.from_frame(_read(pg, table))
    assert row.amount == Decimal("2.50")
    assert row.at == datetime(2024, 1, 1, tzinfo=UTC)
    assert (row.day, row.flag, row.note) == (date(2024, 2, 29), True, None)
    assert (row.tags, row.extra) == (["from", "text"], {"from": "dict"})


def test_iter_batches_streams_every_row(pg: Connection) -> None:
    spec = reflect(Tick, ("symbol", "seq"))
    table = _create(pg, spec)
    n = 50_000
    frame = pl.DataFrame(
        {"symbol": ["S"] * n, "seq": range(n), "price": [float(i) for i in range(n)]}
    )
    with pg.cursor() as cur:
        pgbulk.upsert(cur, table, frame)
        pg.commit()
        batches = list(pgbulk.iter_batches(cur, sa.select(table.c.seq, table.c.price)))
    assert sum(b.num_rows for b in batches) == n
    seen = pl.concat([pgbulk.to_frame(b) for b in batches]).sort("seq")
    assert seen.equals(frame.select("seq", "price"))


def test_a_stream_left_early_frees_the_cursor(pg: Connection) -> None:
    query = "SELECT g, repeat('x', 50) AS s FROM generate_series(1, 1000000) g"
    with pg.cursor() as cur:
        batches = pgbulk.iter_batches(cur, query)
        first = next(batches)
        assert 0 < first.num_rows < 1_000_000  # the rows arrive in several batches
        batches.close()
        assert pgbulk.fetch_arrow(cur, "SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_libpq_uri_refuses_other_databases() -> None:
    assert pgbulk.libpq_uri("postgresql+psycopg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        pgbulk.libpq_uri("sqlite:///x.db")
