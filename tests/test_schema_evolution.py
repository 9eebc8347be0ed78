"""Reopening a store after the dataclass changed: what evolves in place, on real SQLite files.

Stored values are compared with ``quote(column)`` (SQLite's exact literal of a value,
storage class included), before and after, so "data preserved" means byte for byte.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import hubkit
from hubkit.entity import reflect
from hubkit.errors import HubkitWarning, SchemaChangeError
from hubkit.store import Store

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


class SideV2(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"
    NONE = "None"  # a new member


@dataclass
class Fee:
    rate: float


@dataclass
class FeeV2:
    rate: float
    currency: str = "USDT"  # a field added to the nested dataclass, with a default


@dataclass
class Trade:
    id: str
    price: Decimal
    size: int
    side: Side
    at: datetime
    fee: Fee
    note: str


def trades(n: int) -> list[Trade]:
    return [
        Trade(f"t{i:03}", Decimal(f"{i}.5"), i, Side.BUY, AT, Fee(0.001 * i), f"note {i}")
        for i in range(n)
    ]


def raw(path: Path, table: str, columns: list[str]) -> list[tuple[object, ...]]:
    """The exact stored values of ``columns`` (SQLite literals), in key order."""
    with sqlite3.connect(path) as conn:
        picked = ", ".join(f'quote("{c}")' for c in columns)
        return conn.execute(f'SELECT {picked} FROM "{table}" ORDER BY id').fetchall()


def history(path: Path, table: str) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT change, detail FROM hubkit_schema_history WHERE table_name = ? ORDER BY id",
            (table,),
        ).fetchall()
    return [(change, json.loads(detail).get("column", "")) for change, detail in rows]


def sql_of(path: Path, name: str) -> str:
    with sqlite3.connect(path) as conn:
        return str(
            conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        )


ORIGINAL = ["id", "price", "size", "side", "at", "fee__rate", "note"]


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    path = tmp_path / "trades.db"
    with Store(path) as s:
        s.table(reflect(Trade, "id")).upsert(trades(5))
    return path


@dataclass
class TradeAdded:  # new fields: Optional, defaulted, defaulted in a nested dataclass
    id: str
    price: Decimal
    size: int
    side: Side
    at: datetime
    fee: FeeV2
    note: str
    venue: str | None = None
    lots: int = 1
    tags: list[str] = field(default_factory=list)


def test_new_optional_or_defaulted_fields_add_their_columns(stored: Path) -> None:
    before = raw(stored, "trade", ORIGINAL)
    with Store(stored) as s, warnings.catch_warnings():
        warnings.simplefilter("error")  # no user action, nothing to warn about
        t = s.table(reflect(TradeAdded, "id", table="trade"))
        got = t.get("t002")
        assert got == TradeAdded(
            "t002", Decimal("2.5"), 2, Side.BUY, AT, FeeV2(0.002, "USDT"), "note 2", None, 1, []
        )
        t.upsert([TradeAdded("t009", Decimal("1"), 9, Side.SELL, AT, FeeV2(0.1, "BTC"), "n")])
        assert t.get("t009").fee.currency == "BTC"
        assert t.count() == 6
    assert raw(stored, "trade", ORIGINAL)[:5] == before
    assert raw(stored, "trade", ["fee__currency", "venue", "lots", "tags"])[0] == (
        "'USDT'",
        "NULL",
        "1",
        "'[]'",
    )
    assert [c for c, _ in history(stored, "trade")] == [
        "created",
        "added",
        "added",
        "added",
        "added",
    ]
    with Store(stored) as s:  # reopening with the same definition changes nothing more
        s.table(reflect(TradeAdded, "id", table="trade"))
    assert len(history(stored, "trade")) == 5


@dataclass
class TradeReordered:
    note: str
    fee: Fee
    at: datetime
    id: str
    side: Side
    size: int
    price: Decimal


def test_reordered_fields_just_work(stored: Path) -> None:
    before = raw(stored, "trade", ORIGINAL)
    with Store(stored) as s, warnings.catch_warnings():
        warnings.simplefilter("error")
        t = s.table(reflect(TradeReordered, "id", table="trade"))
        assert t.read_all().columns == list(reflect(TradeReordered, "id").names)
        assert t.get("t001") == TradeReordered(
            "note 1", Fee(0.001), AT, "t001", Side.BUY, 1, Decimal("1.5")
        )
    assert raw(stored, "trade", ORIGINAL) == before
    assert [c for c, _ in history(stored, "trade")] == ["created", "reordered"]


@dataclass
class TradeWithoutNote:
    id: str
    price: Decimal
    size: int
    side: Side
    at: datetime
    fee: Fee


def test_a_removed_field_keeps_its_data_until_dropped(stored: Path) -> None:
    before = raw(stored, "trade", ORIGINAL)
    with Store(stored) as s:
        with pytest.warns(HubkitWarning, match=r"note no longer in TradeWithoutNote.*kept"):
            t = s.table(reflect(TradeWithoutNote, "id", table="trade"))
        # the column was NOT NULL: new rows, which have no note, must still be writable
        t.upsert([TradeWithoutNote("t100", Decimal("3"), 3, Side.SELL, AT, Fee(0.0))])
        t.upsert([TradeWithoutNote("t001", Decimal("9"), 9, Side.SELL, AT, Fee(0.0))])
    with Store(stored) as s, warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not at every open
        s.table(reflect(TradeWithoutNote, "id", table="trade"))
    assert raw(stored, "trade", ["note"]) == [
        ("'note 0'",),
        ("'note 1'",),
        ("'note 2'",),
        ("'note 3'",),
        ("'note 4'",),
        ("NULL",),
    ]
    unchanged = [r for r in raw(stored, "trade", ORIGINAL) if r[0] != "'t001'"][:4]
    assert unchanged == [r for r in before if r[0] != "'t001'"]
    assert "note TEXT," in sql_of(stored, "trade")  # no longer NOT NULL

    # adding the field back brings the data back (t100 was written without a note, so the
    # field comes back as Optional)
    @dataclass
    class TradeNoteBack:
        id: str
        price: Decimal
        size: int
        side: Side
        at: datetime
        fee: Fee
        note: str | None = None

    with Store(stored) as s:
        t = s.table(reflect(TradeNoteBack, "id", table="trade"))
        assert t.get("t003").note == "note 3" and t.get("t100").note is None
        # a required field cannot come back over rows that have no value for it
        with pytest.raises(SchemaChangeError, match=r"note \(stored str nullable, now str\)"):
            s.table(reflect(Trade, "id"))
    with Store(stored) as s:
        with pytest.warns(HubkitWarning):
            s.table(reflect(TradeWithoutNote, "id", table="trade"))
        s.drop_column("trade", "note")
        t = s.table(reflect(TradeWithoutNote, "id", table="trade"))
        assert t.count() == 6
    assert "note" not in sql_of(stored, "trade")
    assert [c for c, _ in history(stored, "trade")] == [
        "created",
        "removed",
        "restored",
        "refused",
        "removed",
        "dropped",
    ]


def test_a_field_removed_and_added_back_unchanged_reads_as_before(stored: Path) -> None:
    before = raw(stored, "trade", ORIGINAL)
    with Store(stored) as s:
        with pytest.warns(HubkitWarning):
            s.table(reflect(TradeWithoutNote, "id", table="trade"))
        t = s.table(reflect(Trade, "id"))  # required again: every stored row has a value
        assert [x.note for x in t.spec.from_frame(t.read_all().sort("id"))] == [
            f"note {i}" for i in range(5)
        ]
    assert raw(stored, "trade", ORIGINAL) == before
    assert [c for c, _ in history(stored, "trade")] == ["created", "removed", "restored"]


def test_dropping_a_column_the_definition_still_has_is_refused(stored: Path) -> None:
    with Store(stored) as s:
        with pytest.raises(hubkit.StoreError, match="is a field of its definition"):
            s.drop_column("trade", "note")
        with pytest.raises(hubkit.StoreError, match="no kept column"):
            s.drop_column("trade", "nothing")
    assert len(raw(stored, "trade", ["note"])) == 5


@dataclass
class TradeWidened:  # size int -> float, note str -> Optional[str], a new Side member
    id: str
    price: Decimal
    size: float
    side: SideV2
    at: datetime
    fee: Fee
    note: str | None


@pytest.mark.parametrize("fast", [True, False], ids=["adbc", "sqlalchemy"])
def test_safe_widenings_apply_in_place(stored: Path, fast: bool) -> None:
    with sqlite3.connect(stored) as conn:  # an index of the user's own survives the rebuild
        conn.execute('CREATE INDEX my_size_index ON trade ("size", note)')
    kept = ["id", "price", "side", "at", "fee__rate", "note"]
    before = raw(stored, "trade", kept)
    sizes = raw(stored, "trade", ["size"])
    with Store(stored, fast=fast) as s, warnings.catch_warnings():
        warnings.simplefilter("error")
        t = s.table(reflect(TradeWidened, "id", table="trade"))
        assert t.get("t004") == TradeWidened(
            "t004", Decimal("4.5"), 4.0, SideV2.BUY, AT, Fee(0.004), "note 4"
        )
        t.upsert([TradeWidened("t200", Decimal("1"), 0.25, SideV2.NONE, AT, Fee(0.0), None)])
        assert t.get("t200").size == 0.25 and t.get("t200").side is SideV2.NONE
    assert raw(stored, "trade", kept)[:5] == before
    assert raw(stored, "trade", ["size"])[:5] == [(f"{int(v[0])}.0",) for v in sizes]
    table_sql = sql_of(stored, "trade")
    assert "size DOUBLE NOT NULL" in table_sql and "note TEXT," in table_sql
    assert "my_size_index" in sql_of(stored, "my_size_index")
    assert [c for c, _ in history(stored, "trade")] == ["created", "widened", "nullable"]
    # the old definition is now a narrowing: refused
    with Store(stored, fast=fast) as s, pytest.raises(SchemaChangeError) as info:
        s.table(reflect(Trade, "id"))
    message = str(info.value)
    assert "size (stored float, now int)" in message
    assert "note (stored str nullable, now str)" in message


def test_rename_of_the_class_points_at_the_existing_table(stored: Path) -> None:
    @dataclass
    class Fill:  # Trade, renamed
        id: str
        price: Decimal
        size: int
        side: Side
        at: datetime
        fee: Fee
        note: str

    with Store(stored) as s:
        with pytest.warns(HubkitWarning, match=r"'trade' with the same columns.*table='trade'"):
            s.table(reflect(Fill, "id"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert s.table(reflect(Fill, "id"), name="trade").count() == 5
            s.table(reflect(Trade, "id"), name="trade_copy")  # a chosen name: no guess


def test_open_sink_evolves_too(stored: Path) -> None:
    with hubkit.open_sink(TradeAdded, key="id", store=stored, table="trade") as sink:
        assert sink.dao.count() == 5
        assert sink.dao.get("t000").lots == 1


def test_a_rebuild_keeps_the_defaults_of_added_columns(stored: Path) -> None:
    @dataclass
    class TradeAddedNoteOptional:
        id: str
        price: Decimal
        size: int
        side: Side
        at: datetime
        fee: FeeV2
        note: str | None
        venue: str | None = None
        lots: int = 1
        tags: list[str] = field(default_factory=list)

    with Store(stored) as s:
        s.table(reflect(TradeAdded, "id", table="trade"))
        s.table(reflect(TradeAddedNoteOptional, "id", table="trade"))  # note: a rebuild
    # a writer still on the older definition leaves the new columns to their defaults
    with sqlite3.connect(stored) as conn:
        conn.execute(
            "INSERT INTO trade (id, price, size, side, at, fee__rate, note) "
            "VALUES ('old', '1', 1, 'Buy', 0, 0.5, NULL)"
        )
    assert raw(stored, "trade", ["lots", "fee__currency", "tags"])[-1] == ("1", "'USDT'", "'[]'")
    assert [c for c, _ in history(stored, "trade")][-1] == "nullable"
