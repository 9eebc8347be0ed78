"""The store: round trips, upserts, keys, queries, transactions, state, outbox, schema checks."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import sqlalchemy as sa
from store_backends import backend_url

import hubkit
import hubkit.store as store_module
import hubkit.store.engine as engine_module
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import ClosedError, StoreError, ValidationError
from hubkit.store import OutboxWrite, Store, TableStore, default_store_url
from hubkit.store.pg import PgTx

TESTS = Path(__file__).resolve().parent


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Filter:
    tick_size: Decimal
    min_price: float | None = None


@dataclass
class Record:
    id: str
    count: int
    ratio: float
    active: bool
    amount: Decimal
    at: datetime
    day: date
    side: Side
    level: Level
    tags: list[str]
    meta: dict[str, Any]
    filter: Filter
    note: str | None = None
    maybe_at: datetime | None = None
    maybe_day: date | None = None
    maybe_side: Side | None = None
    extra: Filter | None = None


@dataclass
class Kline:
    symbol: str
    interval: str
    start: datetime
    close: float


@dataclass
class RecordV2:  # Record's table with "ratio" turned into a decimal and a new column
    id: str
    count: int
    ratio: Decimal
    active: bool
    amount: Decimal
    at: datetime
    day: date
    side: Side
    level: Level
    tags: list[str]
    meta: dict[str, Any]
    filter: Filter
    note: str | None = None
    maybe_at: datetime | None = None
    maybe_day: date | None = None
    maybe_side: Side | None = None
    extra: Filter | None = None
    added: int | None = None


def record(i: int, **changes: Any) -> Record:
    r = Record(
        id=f"r{i:05d}",
        count=i,
        ratio=i / 7,
        active=i % 2 == 0,
        amount=Decimal(f"{i}.{i:030d}"),
        at=datetime(2024, 5, 1, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo")) + timedelta(seconds=i),
        day=date(2024, 1, 1) + timedelta(days=i),
        side=Side.BUY if i % 3 else Side.SELL,
        level=Level.LOW if i % 2 else Level.HIGH,
        tags=[f"t{i}"],
        meta={"i": i, "nested": {"ok": True, "values": [1.5, None]}},
        filter=Filter(Decimal("0.10"), None if i % 2 else 0.5),
    )
    for k, v in changes.items():
        setattr(r, k, v)
    return r


@pytest.fixture(params=["sqlite-adbc", "sqlite-sqlalchemy", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = request.param.partition("-")[0]
    url = backend_url(request, backend, tmp_path)
    fast = None if backend == "postgresql" else request.param == "sqlite-adbc"
    with Store(url, fast=fast) as s:
        yield s


@pytest.fixture
def records(store: Store) -> TableStore:
    return store.table(reflect(Record, "id"))


def as_utc(r: Record) -> Record:
    """``r`` with its datetimes moved to UTC (equal instants, as the store returns them)."""
    r.at = r.at.astimezone(UTC)
    if r.maybe_at is not None:
        r.maybe_at = r.maybe_at.astimezone(UTC)
    return r


# -- round trips -------------------------------------------------------------------------------


def test_every_type_round_trips(records: TableStore) -> None:
    items = [
        record(1),
        record(
            2,
            note="",
            maybe_at=datetime(
                1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))
            ),
            maybe_day=date(1, 1, 1),
            maybe_side=Side.SELL,
            extra=Filter(Decimal("-0.000000000000000000000000000001"), -2.5),
            amount=Decimal("-98765432109876543210.98765432109876543210"),
            meta={},
            tags=[],
        ),
        record(3, ratio=float("inf"), count=-(2**63), extra=Filter(Decimal("1E+30"), None)),
    ]
    written = records.upsert(items)
    assert written.schema == records.spec.schema
    expected = [as_utc(record(1)), *(as_utc(r) for r in items[1:])]
    got = [records.get(r.id) for r in items]
    assert got == expected
    assert got[0] is not None and got[0].at.tzinfo is UTC
    frame = records.read_all().sort("id")
    assert frame.equals(written.sort("id"))
    assert records.spec.from_frame(frame) == expected
    assert records.query(order_by="id").equals(frame)


def test_nulls_round_trip(records: TableStore) -> None:
    item = record(5, note=None, maybe_at=None, maybe_day=None, maybe_side=None, extra=None)
    records.upsert([item])
    assert records.get(item.id) == as_utc(record(5))
    row = records.read_all().row(0, named=True)
    assert row["extra__tick_size"] is None and row["maybe_side"] is None


def test_reopened_store_in_a_new_process_sees_the_rows(store_url: str) -> None:
    path = store_url
    with Store(path) as s:
        t = s.table(reflect(Record, "id"))
        t.upsert([record(i) for i in range(50)], cursor="c-50")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from hubkit.entity import reflect
        from hubkit.store import Store
        from test_store import Record, record, as_utc
        with Store({str(path)!r}) as s:
            t = s.table(reflect(Record, "id"))
            assert t.count() == 50, t.count()
            assert t.get("r00007") == as_utc(record(7))
            assert t.state().cursor == "c-50"
            t.upsert([record(99)])
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    with Store(path) as s:
        assert s.table(reflect(Record, "id")).count() == 51


# -- writes ------------------------------------------------------------------------------------


def test_upsert_replaces_and_never_duplicates(records: TableStore) -> None:
    records.upsert([record(1), record(2)])
    records.upsert([record(2, note="new"), record(3)])
    assert records.count() == 3
    got = records.get("r00002")
    assert got is not None and got.note == "new"
    # a key repeated inside one batch keeps its last row
    written = records.upsert([record(4, note="first"), record(4, note="last")])
    assert written.height == 1 and written["note"][0] == "last"
    got = records.get("r00004")
    assert got is not None and got.note == "last"
    assert records.count() == 4


def test_large_batches_replace_and_keep_the_last_of_repeated_keys(records: TableStore) -> None:
    n = store_module._DIRECT_MAX + 500  # the staged path
    records.upsert([record(i) for i in range(n)])
    batch = [record(i, note=f"v{i}") for i in range(n - 100, n + 100)]
    batch += [record(n + 5, note="last")]  # repeats a key of this batch
    written = records.upsert(pl.concat([records.spec.to_frame(batch)] * 25))
    assert written.height == 200
    assert records.count() == n + 100
    got = records.get(f"r{n + 5:05d}")
    assert got is not None and got.note == "last"
    assert records.query({"note": None}).height == n - 100


def test_upsert_accepts_frames_dicts_and_entities(records: TableStore) -> None:
    spec = records.spec
    records.upsert(spec.to_frame([record(1)]))
    records.upsert([spec.to_row(record(2))])
    records.upsert(record(i) for i in range(3, 5))
    assert records.count() == 4


def test_bad_batch_is_rejected_whole(records: TableStore) -> None:
    records.upsert([record(1), record(2)], cursor="before")
    bad = [record(3), record(4, count="many"), record(5)]
    with pytest.raises(ValidationError) as info:
        records.upsert(bad, cursor="after", outbox=[OutboxWrite("create", ("r00003",))])
    assert info.value.column == "count"
    assert "'many'" in str(info.value)
    assert records.count() == 2
    assert records.get("r00003") is None
    assert records.get("r00001") == as_utc(record(1))
    assert records.state().cursor == "before"
    assert records.outbox_count() == 0


def test_null_in_non_nullable_column_is_rejected(records: TableStore) -> None:
    with pytest.raises(ValidationError) as info:
        records.upsert(pl.DataFrame({"id": ["x"]}))
    assert info.value.column is not None
    frame = records.spec.to_frame([record(1)]).with_columns(pl.lit(None).alias("ratio"))
    with pytest.raises(ValidationError, match="'ratio'"):
        records.upsert(frame)
    assert records.count() == 0


def test_rows_cursor_and_outbox_commit_together(
    records: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = OutboxWrite("create", ("r00001",), records.spec.to_row(record(1)), None)
    records.upsert(
        [record(1)], cursor="c1", last_sync=datetime(2024, 1, 1, tzinfo=UTC), outbox=[entry]
    )
    assert records.count() == 1
    assert records.state().cursor == "c1"
    assert records.state().last_sync == datetime(2024, 1, 1, tzinfo=UTC)
    assert records.outbox_count() == 1

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    # the outbox insert is the last statement of the transaction: make it fail
    for tx in (engine_module.AdbcTx, engine_module.SaTx, PgTx):
        monkeypatch.setattr(tx, "insert_many", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        records.upsert([record(2), record(1, note="changed")], cursor="c2", outbox=[entry])
    monkeypatch.undo()
    assert records.count() == 1
    got = records.get("r00001")
    assert got is not None and got.note is None
    assert records.state().cursor == "c1"
    assert records.outbox_count() == 1


def test_database_failures_are_store_errors(records: TableStore) -> None:
    records.upsert([record(1)])
    with pytest.raises(StoreError, match="no_such_column") as info:
        records.query(sa.literal_column("no_such_column") == 1)
    assert info.value.__cause__ is not None
    assert records.count() == 1


def test_delete_returns_the_deleted_rows(records: TableStore) -> None:
    records.upsert([record(i) for i in range(10)])
    gone = records.delete(["r00001", "r00002", "missing"])
    assert sorted(gone["id"].to_list()) == ["r00001", "r00002"]
    assert gone.schema == records.spec.schema
    assert records.count() == 8
    assert records.delete("r00003").height == 1  # one str is one key
    assert records.delete(record(4)).height == 1  # so is one entity
    assert records.delete(records.spec.to_frame([record(5)]).select("id")).height == 1
    assert records.delete([]).height == 0
    assert records.count() == 5


def test_composite_keys(store: Store) -> None:
    klines = store.table(reflect(Kline, ("symbol", "interval", "start")))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        Kline(sym, iv, t0 + timedelta(hours=h), float(h))
        for sym in ("BTCUSDT", "ETHUSDT")
        for iv in ("1", "60")
        for h in range(3)
    ]
    klines.upsert(rows)
    klines.upsert([Kline("BTCUSDT", "60", t0, 99.0)])
    assert klines.count() == 12
    assert klines.get(("BTCUSDT", "60", t0)) == Kline("BTCUSDT", "60", t0, 99.0)
    assert klines.get(("BTCUSDT", "60", t0 + timedelta(days=1))) is None
    # the same instant in another zone is the same key
    tokyo = t0.astimezone(ZoneInfo("Asia/Tokyo"))
    assert klines.get_rows([("BTCUSDT", "1", tokyo), ("ETHUSDT", "1", tokyo)]).height == 2
    gone = klines.delete([("ETHUSDT", "60", t0), ("ETHUSDT", "60", t0 + timedelta(hours=1))])
    assert gone.height == 2 and klines.count() == 10
    with pytest.raises(ValidationError):
        klines.get("BTCUSDT")


def test_get_and_get_rows(records: TableStore) -> None:
    assert records.get("nope") is None
    assert records.get_rows(["nope"]).schema == records.spec.schema
    records.upsert([record(i) for i in range(1200)])
    rows = records.get_rows([f"r{i:05d}" for i in range(0, 1200, 2)] + ["nope"])  # > one chunk
    assert rows.height == 600
    assert records.get(record(7)) == as_utc(record(7))  # an entity is its own key


def test_query_filters_order_and_limit(records: TableStore) -> None:
    records.upsert([record(i) for i in range(30)])
    buys = records.query({"side": Side.BUY})
    assert buys.height == 20 and set(buys["side"]) == {"Buy"}
    assert records.query({"side": "Buy", "level": Level.LOW}).height == 10
    some = records.query({"id": ["r00001", "r00002", "zzz"]})
    assert sorted(some["id"]) == ["r00001", "r00002"]
    assert records.query({"note": None}).height == 30
    assert records.query({"active": True}).height == 15
    assert records.query({"day": date(2024, 1, 11)})["id"].to_list() == ["r00010"]
    assert records.query({"filter__tick_size": Decimal("0.10")}).height == 30
    top = records.query(order_by="count", descending=True, limit=3)
    assert top["count"].to_list() == [29, 28, 27]
    first = records.query({"side": "Sell"}, order_by=["level", "count"], limit=2)
    assert first["count"].to_list() == [3, 9]
    c = records.table.c
    cutoff = record(25).at  # a Tokyo datetime: compared as the same instant
    late = records.query(c.at >= cutoff, order_by="at")
    assert late["count"].to_list() == [25, 26, 27, 28, 29]
    assert records.query(c.count.between(3, 5) & (c.side == Side.SELL)).height == 1
    with pytest.raises(ValidationError, match="'nope'"):
        records.query({"nope": 1})
    assert records.query({"id": "none"}).schema == records.spec.schema


def test_read_all_is_typed_even_for_an_empty_table(records: TableStore) -> None:
    assert records.read_all().schema == records.spec.schema
    assert records.read_all().height == 0
    assert records.count() == 0


@pytest.mark.sqlite_only  # the ADBC SQLite driver's typing of a column by its first batch
def test_nullable_text_that_starts_with_many_nulls_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ADBC driver types a column from its first batch of rows; make that batch tiny
    monkeypatch.setattr(engine_module, "_ADBC_BATCH_ROWS", 4)
    with Store(tmp_path / "nulls.db") as s:
        t = s.table(reflect(Record, "id"))
        t.upsert([record(i, note=None if i < 10 else f"n{i}") for i in range(20)])
        frame = t.query(order_by="id")
        assert frame["note"].to_list() == [None] * 10 + [f"n{i}" for i in range(10, 20)]


# -- state and outbox --------------------------------------------------------------------------


def test_sync_state(records: TableStore) -> None:
    state = records.state()
    assert state.cursor is None and state.last_sync is None and state.extra == {}
    assert state.fingerprint == records.spec.fingerprint
    when = datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    records.set_state(cursor="abc", last_sync=when, extra={"pages": [1, 2]})
    state = records.state()
    assert (state.cursor, state.last_sync, state.extra) == ("abc", when, {"pages": [1, 2]})
    records.set_state(cursor=None)
    assert records.state().cursor is None and records.state().last_sync == when
    with pytest.raises(ValidationError):
        records.set_state(last_sync=datetime(2024, 1, 1))


def test_outbox_pending_done_bump(records: TableStore) -> None:
    spec = records.spec
    one, two = record(1), record(2)
    records.upsert([one], outbox=[OutboxWrite("create", ("r00001",), spec.to_row(one), None)])
    records.upsert(
        [record(1, note="x"), two],
        outbox=[
            OutboxWrite("update", ("r00001",), spec.to_row(record(1, note="x")), spec.to_row(one)),
            OutboxWrite("create", ("r00002",), spec.to_frame([two]).row(0, named=True)),
        ],
    )
    records.delete(["r00002"], outbox=[OutboxWrite("remove", ("r00002",), None, spec.to_row(two))])
    pending = records.outbox_pending()
    assert [e.op for e in pending] == ["create", "update", "create", "remove"]
    assert [e.key for e in pending] == [("r00001",), ("r00001",), ("r00002",), ("r00002",)]
    assert pending[0].payload == spec.to_row(as_utc(record(1)))
    assert pending[1].before == spec.to_row(as_utc(record(1)))
    assert pending[2].payload == spec.to_row(as_utc(record(2)))  # frame rows decode the same
    assert pending[3].payload is None
    assert pending[0].created_at.tzinfo is UTC and pending[0].attempts == 0
    assert records.outbox_pending(limit=2) == pending[:2]
    records.outbox_bump([pending[0].id, pending[1].id])
    records.outbox_bump([pending[0].id])
    assert [e.attempts for e in records.outbox_pending()] == [2, 1, 0, 0]
    records.outbox_done([pending[0].id, pending[2].id])
    assert [e.id for e in records.outbox_pending()] == [pending[1].id, pending[3].id]
    assert records.outbox_count() == 2
    with pytest.raises(ValidationError):
        records.upsert([record(9)], outbox=[OutboxWrite("upsert", ("r00009",))])
    assert records.get("r00009") is None


def test_outbox_ids_are_never_reused(records: TableStore) -> None:
    records.upsert([record(1)], outbox=[OutboxWrite("create", ("r00001",))])
    first = records.outbox_pending()[0].id
    records.outbox_done([first])
    records.upsert([record(2)], outbox=[OutboxWrite("create", ("r00002",))])
    assert records.outbox_pending()[0].id > first


def test_reject_restores_before_or_deletes(records: TableStore) -> None:
    spec = records.spec
    old = record(1)
    records.upsert([old])
    records.upsert(
        [record(1, note="local"), record(2)],
        outbox=[
            OutboxWrite(
                "update", ("r00001",), spec.to_row(record(1, note="local")), spec.to_row(old)
            ),
            OutboxWrite("create", ("r00002",), spec.to_row(record(2)), None),
        ],
    )
    update, create = records.outbox_pending()
    restored = records.reject(update)
    assert restored["note"].to_list() == [None]
    assert records.get("r00001") == as_utc(record(1))
    assert records.reject(create).height == 0
    assert records.get("r00002") is None
    assert records.outbox_count() == 0


def test_outboxes_and_states_are_per_sink(store: Store) -> None:
    spec = reflect(Record, "id")
    a, b = store.table(spec, name="a"), store.table(spec, name="b")
    a.upsert([record(1)], cursor="ca", outbox=[OutboxWrite("create", ("r00001",))])
    assert (a.outbox_count(), b.outbox_count()) == (1, 0)
    assert (a.state().cursor, b.state().cursor) == ("ca", None)
    assert (a.count(), b.count()) == (1, 0)


# -- schema safety, lifecycle ----------------------------------------------------------------


def test_changed_definition_is_refused_naming_the_columns(store_url: str) -> None:
    path = store_url
    with Store(path) as s:
        s.table(reflect(Record, "id")).upsert([record(1)])
    with Store(path) as s:
        with pytest.raises(StoreError) as info:
            s.table(reflect(RecordV2, "id", table="record"))
        message = str(info.value)
        assert "ratio (stored float, now decimal)" in message
        assert "added" not in message  # a new Optional field is no difference to refuse
        with pytest.raises(StoreError, match="key"):
            s.table(reflect(Record, ("id", "count")))
        t = s.table(reflect(Record, "id"))  # the original definition still opens
        assert t.count() == 1


def test_table_created_elsewhere_is_checked_by_column_names(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kline (symbol TEXT, other TEXT)"))
    engine.dispose()
    with Store(store_url) as s, pytest.raises(StoreError, match="other"):
        s.table(reflect(Kline, ("symbol", "interval", "start")))


def test_reserved_names_and_closed_store(store_url: str) -> None:
    s = Store(store_url)
    with pytest.raises(StoreError):
        s.table(reflect(Record, "id"), name="hubkit_outbox")
    t = s.table(reflect(Record, "id"))
    s.close()
    s.close()
    with pytest.raises(ClosedError):
        t.count()
    with pytest.raises(ClosedError):
        s.table(reflect(Record, "id"))


def test_postgresql_urls_name_psycopg_and_only_the_fast_path(postgres_database: str) -> None:
    plain = postgres_database.replace("postgresql+psycopg://", "postgresql://")
    assert store_module.store_url(plain) == postgres_database
    assert store_module.store_url(sa.make_url(plain)) == postgres_database
    assert store_module.store_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert store_module.store_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
    with Store(plain) as s:
        assert s.url == postgres_database
        s.table(reflect(Record, "id")).upsert([record(1)])
    with Store(sa.make_url(postgres_database)) as s:
        assert s.table(reflect(Record, "id")).count() == 1
    with pytest.raises(StoreError, match="fast=False"):
        Store(plain, fast=False)


def test_an_unreachable_postgresql_server_is_a_store_error(tmp_path: Path) -> None:
    with (
        Store(f"postgresql://nobody@/nowhere?host={tmp_path}") as s,
        pytest.raises(StoreError, match="cannot connect to PostgreSQL"),
    ):
        s.table(reflect(Record, "id"))


@pytest.mark.sqlite_only
def test_urls_paths_and_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "nested"
    monkeypatch.setenv("HUBKIT_HOME", str(home))
    url = default_store_url()
    assert url == f"sqlite:///{home / 'hubkit.db'}" and home.is_dir()
    with Store() as s:
        assert s.url == url
        s.table(reflect(Kline, ("symbol", "interval", "start")))
    assert (home / "hubkit.db").exists()
    with Store(f"sqlite:///{tmp_path / 'u.db'}") as s:
        s.table(reflect(Record, "id")).upsert([record(1)])
    with Store(str(tmp_path / "u.db")) as s:
        assert s.table(reflect(Record, "id")).count() == 1
    with Store("sqlite://") as s:  # in memory: the SQLAlchemy path
        t = s.table(reflect(Record, "id"))
        t.upsert([record(1), record(2)])
        assert t.count() == 2 and t.get("r00002") == as_utc(record(2))
    with pytest.raises(StoreError):
        Store("sqlite://", fast=True)
    assert "sqlite" in repr(Store(tmp_path / "r.db"))


def test_threads_share_a_store(records: TableStore) -> None:
    import threading

    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 100, 10):
                records.upsert([record(j) for j in range(i, i + 10)])
                records.count()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert records.count() == 400


def test_public_names() -> None:
    assert hubkit.Store is Store
    assert hubkit.reflect is reflect
    assert hubkit.EntitySpec is EntitySpec
    assert callable(hubkit.wire)
    assert os.fspath(TESTS)
