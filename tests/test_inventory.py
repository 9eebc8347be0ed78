"""``hubkit.store.store_inventory``: what a store holds, read-only, from a real SQLite file."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubkit import Store, StoreError, reflect
from hubkit.store import OutboxWrite
from hubkit.store.inventory import ColumnInventory, store_inventory


@dataclass
class Note:
    id: int
    text: str
    score: float | None = None


@dataclass
class Tag:
    name: str


SYNCED = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    """A store with two tables: notes (3 rows, a cursor, a last sync, 2 pending pushes) and
    tags (empty, never synced)."""
    path = tmp_path / "inv.db"
    with Store(path) as store:
        notes = store.table(reflect(Note, "id"), name="notes")
        notes.upsert([Note(1, "a"), Note(2, "b")], cursor="c-42", last_sync=SYNCED)
        pending = [
            OutboxWrite("create", (3,), payload={"id": 3, "text": "c", "score": 0.5}),
            OutboxWrite("remove", (2,), before={"id": 2, "text": "b", "score": None}),
        ]
        notes.upsert([Note(3, "c", 0.5)], outbox=pending)
        store.table(reflect(Tag, "name"), name="tags")
    return path


def test_lists_every_table_with_rows_sync_state_outbox_and_schema(store_file: Path) -> None:
    found = store_inventory(store_file)
    assert found.url == f"sqlite:///{store_file.resolve()}"
    assert found.names() == ["notes", "tags"]
    notes = found.table("notes")
    assert (notes.rows, notes.cursor, notes.last_sync, notes.pending) == (3, "c-42", SYNCED, 2)
    assert notes.key == ("id",)
    assert notes.columns == (
        ColumnInventory("id", "int", False),
        ColumnInventory("text", "str", False),
        ColumnInventory("score", "float", True),
    )
    assert notes.fingerprint == reflect(Note, "id").fingerprint
    tags = found.table("tags")
    assert (tags.rows, tags.cursor, tags.last_sync, tags.pending) == (0, None, None, 0)


def test_takes_an_open_store_and_leaves_it_open(store_file: Path) -> None:
    with Store(store_file) as store:
        assert store_inventory(store).table("notes").rows == 3
        assert store.table(reflect(Tag, "name"), name="tags").count() == 0  # still usable


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(StoreError, match=f"no store at {re.escape(str(missing))}$"):
        store_inventory(missing)
    assert not missing.exists()


def test_a_database_without_hubkit_tables_is_empty(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table people (name text)")
    found = store_inventory(other)
    assert len(found) == 0 and found.tables == ()
    with pytest.raises(KeyError, match="no hubkit table 'people'"):
        found.table("people")


def test_a_dropped_table_is_listed_as_missing(store_file: Path) -> None:
    with sqlite3.connect(store_file) as conn:
        conn.execute("drop table tags")
    assert store_inventory(store_file).table("tags").rows is None


def test_changes_nothing(store_file: Path) -> None:
    before = store_file.read_bytes()
    store_inventory(store_file)
    assert store_file.read_bytes() == before
