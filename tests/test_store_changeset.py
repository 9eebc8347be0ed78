"""``TableStore.apply``: one change-set, one transaction, in the documented order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from store_backends import backend_url

from hubkit.entity import reflect
from hubkit.errors import StoreError, ValidationError
from hubkit.store import UNSET, ChangeSet, OutboxWrite, Store, TableStore
from hubkit.testing.faults import fail_store_writes


@dataclass
class Row:
    id: str
    value: int


@pytest.fixture(params=["sqlite-adbc", "sqlite-sqlalchemy", "postgresql"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TableStore]:
    backend = request.param.partition("-")[0]
    fast = None if backend == "postgresql" else request.param == "sqlite-adbc"
    with Store(backend_url(request, backend, tmp_path), fast=fast) as store:
        yield store.table(reflect(Row, "id"))


def values(table: TableStore) -> dict[str, int]:
    return dict(table.read_all().sort("id").rows())


def test_one_change_set_moves_rows_state_and_outbox_together(table: TableStore) -> None:
    table.upsert([Row("gone", 1), Row("kept", 2)], outbox=[OutboxWrite("create", ("gone",))])
    (first,) = table.outbox_pending()
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    applied = table.apply(
        ChangeSet(
            upsert=[Row("new", 3), Row("kept", 4)],
            delete=[("gone",), ("never stored",)],
            cursor="c9",
            last_sync=moment,
            extra={"note": "x"},
            outbox_add=[OutboxWrite("update", ("kept",), {"id": "kept", "value": 4})],
            outbox_done=[first.id],
        )
    )
    assert values(table) == {"kept": 4, "new": 3}
    assert applied.upserted.rows() == [("new", 3), ("kept", 4)]
    assert applied.deleted.rows() == [("gone", 1)]  # missing keys are skipped
    assert (applied.outbox_added, applied.outbox_removed) == (1, 1)
    state = table.state()
    assert (state.cursor, state.last_sync, dict(state.extra)) == ("c9", moment, {"note": "x"})
    assert [(e.op, e.key) for e in table.outbox_pending()] == [("update", ("kept",))]


def test_deletes_come_before_upserts_so_a_key_in_both_ends_upserted(table: TableStore) -> None:
    table.upsert([Row("k", 1)])
    table.apply(ChangeSet(delete=[("k",)], upsert=[Row("k", 2)]))
    assert values(table) == {"k": 2}


def test_unset_parts_of_the_state_stay_and_none_clears(table: TableStore) -> None:
    table.apply(ChangeSet(cursor="c1", last_sync=datetime(2024, 1, 1, tzinfo=UTC)))
    table.apply(ChangeSet(cursor=UNSET, last_sync=None))
    assert (table.state().cursor, table.state().last_sync) == ("c1", None)


def test_bumps_count_attempts(table: TableStore) -> None:
    table.apply(ChangeSet(outbox_add=[OutboxWrite("remove", ("a",))]))
    (entry,) = table.outbox_pending()
    table.apply(ChangeSet(outbox_bump=[entry.id]))
    table.apply(ChangeSet(outbox_bump=[entry.id]))
    assert table.outbox_pending()[0].attempts == 2


def test_a_bad_part_is_refused_before_anything_is_written(table: TableStore) -> None:
    table.upsert([Row("k", 1)])
    with pytest.raises(ValidationError):
        table.apply(
            ChangeSet(delete=[("k",)], outbox_add=[OutboxWrite("rename", ("k",))], cursor="c")
        )
    with pytest.raises(ValidationError):
        table.apply(ChangeSet(delete=[("k",)], upsert=pl.DataFrame({"id": ["x"]})))
    with pytest.raises(ValidationError):
        table.apply(ChangeSet(delete=[("k",)], last_sync=datetime(2024, 1, 1)))  # naive
    assert values(table) == {"k": 1}
    assert table.state().cursor is None


def test_a_failure_in_the_last_statement_leaves_nothing(table: TableStore) -> None:
    table.upsert([Row("k", 1)])
    change = ChangeSet(
        delete=[("k",)],
        upsert=[Row("n", 2)],
        cursor="c",
        outbox_add=[OutboxWrite("remove", ("k",))],
    )
    with (
        fail_store_writes(table.store, when=lambda call: call.method == "insert_many"),
        pytest.raises(StoreError),
    ):
        table.apply(change)
    assert values(table) == {"k": 1}
    assert table.state().cursor is None
    assert table.outbox_count() == 0
    table.apply(change)
    assert values(table) == {"n": 2}
    assert table.outbox_count() == 1


def test_an_empty_change_set_writes_nothing(table: TableStore) -> None:
    with fail_store_writes(table.store, when=lambda call: True) as fault:
        applied = table.apply(ChangeSet())
    assert fault.fired == 0
    assert applied.upserted.height == 0 and applied.deleted.height == 0
    assert ChangeSet().is_empty
