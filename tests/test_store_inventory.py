"""``read_inventory``: what a store holds, read without creating or changing anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubkit.entity import reflect
from hubkit.errors import StoreError
from hubkit.store import ChangeSet, OutboxWrite, Store, TableInventory, read_inventory


@dataclass
class Row:
    id: str
    value: int


def test_the_inventory_lists_each_sink_with_rows_sync_and_pending(store_url: str) -> None:
    path = store_url
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    with Store(path) as store:
        a = store.table(reflect(Row, "id"), name="a_rows")
        a.apply(ChangeSet(upsert=[Row("x", 1), Row("y", 2)], cursor="c", last_sync=moment))
        b = store.table(reflect(Row, "id"), name="b_rows")
        b.apply(ChangeSet(outbox_add=[OutboxWrite("remove", ("x",))]))
    url, tables = read_inventory(path)
    assert url == path
    assert tables == [
        TableInventory("a_rows", 2, moment, 0, "c"),
        TableInventory("b_rows", 0, None, 1, None),
    ]


def test_an_empty_or_missing_store_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no store at"):
        read_inventory(missing)
    assert not missing.exists()
    with Store(tmp_path / "empty.db") as store:
        store.table(reflect(Row, "id"))
    url, tables = read_inventory(tmp_path / "empty.db")
    assert url == f"sqlite:///{(tmp_path / 'empty.db').resolve()}"  # a path names a file
    assert [t.name for t in tables] == ["row"]
