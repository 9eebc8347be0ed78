"""Changes hubkit refuses to apply in place: the refusal, ``Store.migrate`` and
``hubkit migrate``, the kept copy, decimals written before they were canonical, and the
same evolution on a real PostgreSQL server."""

from __future__ import annotations

import enum
import json
import sqlite3
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import hubkit.store.migrate as migrate_module
from hubkit.cli import main
from hubkit.entity import reflect
from hubkit.errors import HubkitWarning, SchemaChangeError, StoreError, ValidationError
from hubkit.store import Store


@dataclass
class Order:
    id: str
    price: float
    qty: str
    gone: str | None = None


@dataclass
class OrderV2:  # price float -> Decimal, qty str -> int: both need a rewrite
    id: str
    price: Decimal
    qty: int


def raw(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        picked = ", ".join(f'quote("{n}")' for n in names)
        return conn.execute(f'SELECT {picked} FROM "{table}" ORDER BY id').fetchall()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def changes(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT change FROM hubkit_schema_history WHERE table_name = ? ORDER BY id", (table,)
        )
        return [r[0] for r in rows]


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    return make_orders(tmp_path)


def make_orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.db"
    with Store(path) as s:
        s.table(reflect(Order, "id")).upsert(
            [Order("a", 0.1, "10", "x"), Order("b", 2.5, "20"), Order("c", 3.0, "7", "z")]
        )
    return path


def test_a_change_that_needs_a_rewrite_is_refused_naming_each_difference(orders: Path) -> None:
    before = raw(orders, "order")
    with Store(orders) as s, pytest.raises(SchemaChangeError) as info:
        s.table(reflect(OrderV2, "id", table="order"))
    message = str(info.value)
    assert "price (stored float, now decimal)" in message
    assert "qty (stored str, now int)" in message
    assert "gone" not in message  # a removed field is kept, not a reason to refuse
    assert (
        f"hubkit.Store('sqlite:///{orders}').migrate(hubkit.reflect(OrderV2, key='id'), "
        "name='order')" in message
    )
    assert f"`hubkit migrate {orders} order`" in message
    assert isinstance(info.value, StoreError)
    assert raw(orders, "order") == before
    assert changes(orders, "order") == ["created", "refused"]
    with Store(orders) as s, pytest.raises(SchemaChangeError):  # the same attempt again
        s.table(reflect(OrderV2, "id", table="order"))
    assert changes(orders, "order") == ["created", "refused"]  # recorded once
    with Store(orders) as s:  # the stored definition still opens
        assert s.table(reflect(Order, "id")).count() == 3


def test_migrate_rewrites_in_one_transaction_and_keeps_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate_module, "_BATCH", 2)  # 3 rows: read in two batches
    started = datetime.now(UTC)
    orders = make_orders(tmp_path)
    before = raw(orders, "order")
    with Store(orders) as s:
        done = s.migrate(reflect(OrderV2, "id", table="order"))
        assert done.table == "order" and done.rows == 3 and done.copy is not None
        assert "price (stored float, now decimal)" in done.changes
        assert any(c.startswith("removed gone") for c in done.changes)
        assert done.copy.startswith("order__before_")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = s.table(reflect(OrderV2, "id", table="order"))
            assert sorted(t.spec.from_frame(t.read_all()), key=lambda o: o.id) == [
                OrderV2("a", Decimal("0.1"), 10),
                OrderV2("b", Decimal("2.5"), 20),
                OrderV2("c", Decimal("3"), 7),
            ]
            assert t.query({"price": Decimal("0.10")}).height == 1
    assert raw(orders, done.copy) == before  # the old table, byte for byte
    # the removed field's column and data are carried over into the new table
    assert [r[-1] for r in raw(orders, "order")] == ["'x'", "NULL", "'z'"]
    assert changes(orders, "order") == ["created", "migrated"]
    with Store(orders) as s:
        history = s.schema_history("order")
        assert history.get_column("change").to_list() == ["created", "migrated"]
        when = history.get_column("at").to_list()
        assert started <= when[0] <= when[1] <= datetime.now(UTC)
        assert json.loads(history.item(1, "detail"))["copy"] == done.copy
        with pytest.raises(StoreError, match="not a copy"):
            s.drop_copy("order")
        s.drop_copy(done.copy)
    assert done.copy not in tables(orders) and "order" in tables(orders)
    assert changes(orders, "order")[-1] == "dropped"


def test_a_migration_that_cannot_convert_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    with Store(path) as s:
        s.table(reflect(Order, "id")).upsert([Order("a", 1.0, "10"), Order("b", 2.0, "ten")])
    before = raw(path, "order")
    tables_before = tables(path)
    with Store(path) as s:
        with pytest.raises(ValidationError, match="qty") as info:
            s.migrate(reflect(OrderV2, "id", table="order"))
        assert info.value.column == "qty"
        assert s.table(reflect(Order, "id")).count() == 2
    assert raw(path, "order") == before
    assert tables(path) == tables_before  # no copy or half-written table left behind


@dataclass
class OrderRequired:
    id: str
    price: float
    qty: str
    gone: str | None
    venue: str  # new, required, no default


def test_a_new_required_field_needs_a_fill_value(orders: Path) -> None:
    spec = reflect(OrderRequired, "id", table="order")
    with Store(orders) as s:
        with pytest.raises(SchemaChangeError, match=r"venue \(not stored; it is not Optional"):
            s.table(spec)
        with pytest.raises(ValidationError, match=r"fill=\{'venue': VALUE\}"):
            s.migrate(spec)
        done = s.migrate(spec, fill={"venue": "XNAS"})
        assert {o.venue for o in spec.from_frame(s.table(spec).read_all())} == {"XNAS"}
        assert done.rows == 3


def test_the_command_line_migrates_to_the_refused_definition(
    orders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = raw(orders, "order")
    with Store(orders) as s, pytest.raises(SchemaChangeError):
        s.table(reflect(OrderV2, "id", table="order"))
    assert main(["migrate", str(orders), "order"]) == 0
    out = capsys.readouterr().out
    assert "migrated 'order': 3 rows rewritten" in out
    assert "price (stored float, now decimal)" in out
    copy = next(t for t in tables(orders) if t.startswith("order__before_"))
    assert f"--drop-copy {copy}" in out
    assert raw(orders, copy) == before
    with Store(orders) as s, warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten table fits the new class exactly
        t = s.table(reflect(OrderV2, "id", table="order"))
        assert t.get("a") == OrderV2("a", Decimal("0.1"), 10)
    assert main(["migrate", str(orders), "order", "--history"]) == 0
    listed = capsys.readouterr().out
    assert "refused" in listed and "migrated" in listed
    assert main(["migrate", str(orders), "order", "--drop-copy", copy]) == 0
    assert copy not in tables(orders)
    assert main(["migrate", str(orders), "order"]) == 0  # again: nothing left to do
    assert "already fits" in capsys.readouterr().out
    assert main(["migrate", str(orders), "nothing"]) == 1
    assert "no refused definition recorded for 'nothing'" in capsys.readouterr().err
    missing = orders.parent / "missing.db"
    assert main(["migrate", str(missing), "order"]) == 1
    assert "no store" in capsys.readouterr().err and not missing.exists()


@dataclass
class Candle:
    symbol: str
    start: datetime
    close: float


@dataclass
class CandleV2:
    symbol: str
    start: datetime
    close: Decimal


@pytest.mark.parametrize("fast", [True, False], ids=["adbc", "sqlalchemy"])
def test_migrate_reads_a_compound_key_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    monkeypatch.setattr(migrate_module, "_BATCH", 3)
    path = tmp_path / "candles.db"
    rows = [
        Candle(sym, datetime(2024, 1, 1, h, tzinfo=UTC), h + 0.25)
        for sym in ("BTC", "ETH")
        for h in range(4)
    ]
    with Store(path, fast=fast) as s:
        s.table(reflect(Candle, ("symbol", "start"))).upsert(rows)
        done = s.migrate(reflect(CandleV2, ("symbol", "start"), table="candle"))
        t = s.table(reflect(CandleV2, ("symbol", "start"), table="candle"))
        got = sorted(t.spec.from_frame(t.read_all()), key=lambda c: (c.symbol, c.start))
    assert done.rows == 8
    assert got == [CandleV2(c.symbol, c.start, Decimal(str(c.close))) for c in rows]


@dataclass
class Quote:
    id: str
    price: Decimal
    tick: Decimal | None = None


@dataclass
class Level:
    price: Decimal
    size: float


def legacy(path: Path, table: str, updates: list[str]) -> None:
    """Make a table look as if written before decimals were canonical."""
    with sqlite3.connect(path) as conn:
        for sql in updates:
            conn.execute(sql)
        (described,) = conn.execute(
            "SELECT columns FROM hubkit_sync_state WHERE sink = ?", (table,)
        ).fetchone()
        old = json.loads(described)
        old.pop("decimals", None)
        conn.execute(
            "UPDATE hubkit_sync_state SET columns = ? WHERE sink = ?", (json.dumps(old), table)
        )


def test_decimals_written_before_canonical_text_are_rewritten_on_open(tmp_path: Path) -> None:
    path = tmp_path / "quotes.db"
    with Store(path) as s:
        s.table(reflect(Quote, "id")).upsert(
            [
                Quote("a", Decimal("0.1"), Decimal("0.01")),
                Quote("b", Decimal("2")),
                Quote("c", Decimal("0.5")),
            ]
        )
    legacy(
        path,
        "quote",
        [
            "UPDATE quote SET price = '0.1000', tick = '1E-2' WHERE id = 'a'",
            "UPDATE quote SET price = '2.00' WHERE id = 'b'",
        ],
    )
    with Store(path) as s:
        t = s.table(reflect(Quote, "id"))
        assert t.query({"price": Decimal("0.1")}).get_column("id").to_list() == ["a"]
        assert t.query({"tick": Decimal("0.01")}).height == 1
    assert raw(path, "quote") == [
        ("'a'", "'0.1'", "'0.01'"),
        ("'b'", "'2'", "NULL"),
        ("'c'", "'0.5'", "NULL"),
    ]
    assert changes(path, "quote") == ["created", "canonical"]
    with Store(path) as s:  # done once: the table is now known to be canonical
        s.table(reflect(Quote, "id"))
    assert changes(path, "quote") == ["created", "canonical"]


def test_decimal_keys_that_would_merge_are_left_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "book.db"
    with Store(path) as s:
        s.table(reflect(Level, "price")).upsert(
            [Level(Decimal("100.5"), 1.0), Level(Decimal("7"), 2.0)]
        )
        s.table(reflect(Level, "price")).upsert([Level(Decimal("8"), 3.0)])
    legacy(path, "level", ["UPDATE level SET price = '100.50' WHERE price = '7'"])
    with Store(path) as s:
        with pytest.warns(HubkitWarning, match="key column 'price'"):
            t = s.table(reflect(Level, "price"))
        assert t.count() == 3  # nothing merged, nothing lost
        with pytest.raises(StoreError, match="rows become one key"):  # nor by a migration
            s.migrate(reflect(Level, "price"))
        assert t.count() == 3
    with sqlite3.connect(path) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT price FROM level")) == [
            "100.5",
            "100.50",
            "8",
        ]


@dataclass
class Row:
    id: int
    n: int
    label: str


@dataclass
class RowV2:
    id: int
    n: float | None
    extra: str = "x"


def test_the_same_evolution_on_postgresql(postgres_database: str) -> None:
    with Store(postgres_database) as s:
        s.table(reflect(Row, "id")).upsert([Row(1, 10, "a"), Row(2, 20, "b")])
    with Store(postgres_database) as s:
        with pytest.warns(HubkitWarning, match="label"):
            t = s.table(reflect(RowV2, "id", table="row"))
        t.upsert([RowV2(3, 0.5)])
        found = sorted(t.spec.from_frame(t.read_all()), key=lambda r: r.id)
        assert found == [RowV2(1, 10.0), RowV2(2, 20.0), RowV2(3, 0.5)]
        history = s.schema_history("row").get_column("change").to_list()
        assert history == ["created", "widened", "nullable", "added", "removed"]
        with pytest.raises(SchemaChangeError, match=r"n \(stored float nullable, now int\)"):
            s.table(reflect(Row, "id"))
        with pytest.raises(ValidationError, match="'n'"):  # 0.5 is no int: nothing changes
            s.migrate(reflect(Row, "id"))
        assert t.count() == 3
        t.delete([3])
        done = s.migrate(reflect(Row, "id"))
    assert done.copy is not None and done.rows == 2
    with Store(postgres_database) as s, warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = s.table(reflect(Row, "id"))
        assert sorted(rows.spec.from_frame(rows.read_all()), key=lambda r: r.id) == [
            Row(1, 10, "a"),
            Row(2, 20, "b"),
        ]
        s.drop_copy(done.copy)


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


class Level2(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Fee:
    rate: float
    asset: str = "USDT"


@dataclass
class Fill:
    id: str
    price: Decimal
    side: Side
    level: Level2
    at: datetime
    day: date
    fee: Fee
    tags: list[str]
    done: bool


@dataclass
class FillV2:  # price Decimal -> float: refused, then migrated from the command line
    id: str
    price: float
    side: Side
    level: Level2
    at: datetime
    day: date
    fee: Fee
    tags: list[str]
    done: bool
    venue: str = "XNAS"


def test_the_command_line_rebuilds_every_kind_of_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fills.db"
    at = datetime(2024, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)
    fills = [
        Fill(
            "f1",
            Decimal("0.25"),
            Side.BUY,
            Level2.HIGH,
            at,
            date(2024, 3, 1),
            Fee(0.1),
            ["a"],
            True,
        ),
        Fill(
            "f2",
            Decimal("3"),
            Side.SELL,
            Level2.LOW,
            at,
            date(2024, 3, 2),
            Fee(0.2, "BTC"),
            [],
            False,
        ),
    ]
    with Store(path) as s:
        s.table(reflect(Fill, "id")).upsert(fills)
        with pytest.raises(SchemaChangeError, match=r"price \(stored decimal, now float\)"):
            s.table(reflect(FillV2, "id", table="fill"))
    assert main(["migrate", str(path), "fill"]) == 0
    assert "2 rows rewritten" in capsys.readouterr().out
    with Store(path) as s, warnings.catch_warnings():
        warnings.simplefilter("error")
        t = s.table(reflect(FillV2, "id", table="fill"))
        got = sorted(t.spec.from_frame(t.read_all()), key=lambda f: f.id)
    assert got == [
        FillV2("f1", 0.25, Side.BUY, Level2.HIGH, at, date(2024, 3, 1), Fee(0.1), ["a"], True),
        FillV2("f2", 3.0, Side.SELL, Level2.LOW, at, date(2024, 3, 2), Fee(0.2, "BTC"), [], False),
    ]


@dataclass
class Priced:
    id: int
    n: int


@dataclass
class PricedV2:
    id: int
    n: int
    at: datetime | None = None
    px: Decimal = Decimal("1.5")
    since: datetime = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_new_columns_on_postgresql_take_its_native_types(postgres_database: str) -> None:
    with Store(postgres_database) as s:
        s.table(reflect(Priced, "id")).upsert([Priced(1, 2)])
    moment = datetime(2025, 6, 1, tzinfo=UTC)
    with Store(postgres_database) as s:
        t = s.table(reflect(PricedV2, "id", table="priced"))
        t.upsert([PricedV2(2, 3, moment, Decimal("2.25"), moment)])
        found = sorted(t.spec.from_frame(t.read_all()), key=lambda r: r.id)
    assert found == [PricedV2(1, 2), PricedV2(2, 3, moment, Decimal("2.25"), moment)]
    engine = sa.create_engine(postgres_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'priced'"
                )
            ).all()
        )
    engine.dispose()
    assert types["at"] == "timestamp with time zone"
    assert types["px"] == "numeric"
