"""Outbox decisions as pure functions: no store, no sockets, no event loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from hubkit.changeset import ChangeSet
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import Rejected
from hubkit.sink import outbox
from hubkit.sink.context import vanished_keys
from hubkit.types import Op, OutboxEntry, Source


@dataclass
class Item:
    id: str
    name: str
    price: float


SPEC: EntitySpec = reflect(Item, "id")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def row(id_: str, name: str = "n", price: float = 1.0) -> dict[str, Any]:
    return {"id": id_, "name": name, "price": price}


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return SPEC.to_frame(list(rows))


def entry(
    id_: int, key: str, op: str = "update", payload: Any = None, before: Any = None
) -> OutboxEntry:
    return OutboxEntry(
        id=id_, op=op, key=(key,), payload=payload, before=before, created_at=T0, attempts=0
    )


# -- local writes -----------------------------------------------------------------------------


def test_a_local_upsert_queues_create_or_update_by_what_was_stored() -> None:
    rows = frame(row("new"), row("old", "changed"))
    before = outbox.before_images(SPEC, frame(row("old")))
    change = outbox.local_upsert(SPEC, rows, before, push=True)
    assert change.upsert is rows
    assert [(w.op, w.key) for w in change.outbox_add] == [
        ("create", ("new",)),
        ("update", ("old",)),
    ]
    assert change.outbox_add[0].before is None
    assert change.outbox_add[1].before == row("old")
    assert change.outbox_add[1].payload == row("old", "changed")


def test_a_local_upsert_without_pushing_only_stores() -> None:
    rows = frame(row("a"))
    assert outbox.local_upsert(SPEC, rows, {}, push=False) == ChangeSet(upsert=rows)


def test_a_local_delete_queues_a_remove_for_stored_keys_only() -> None:
    before = outbox.before_images(SPEC, frame(row("here")))
    change = outbox.local_delete([("here",), ("absent",)], before, push=True)
    assert list(change.delete) == [("here",), ("absent",)]
    assert [(w.op, w.key, w.before) for w in change.outbox_add] == [
        ("remove", ("here",), row("here"))
    ]
    assert outbox.local_delete([("here",)], before, push=False).outbox_add == ()


# -- acknowledgements -------------------------------------------------------------------------


def test_an_ack_without_an_echo_only_settles_the_entry() -> None:
    sent = entry(3, "a", payload=row("a"))
    assert outbox.acknowledge(SPEC, sent, None, frame(row("a"))) == ChangeSet(outbox_done=[3])


def test_an_echo_that_differs_is_stored_with_the_ack() -> None:
    sent = entry(3, "a", payload=row("a"))
    change = outbox.acknowledge(SPEC, sent, row("a", "as kept remotely"), frame(row("a")))
    assert list(change.outbox_done) == [3]
    assert isinstance(change.upsert, pl.DataFrame)
    assert change.upsert.rows(named=True) == [row("a", "as kept remotely")]


def test_an_echo_is_not_stored_over_a_newer_local_write() -> None:
    sent = entry(3, "a", payload=row("a"))
    newer = frame(row("a", "written after the push"))
    change = outbox.acknowledge(SPEC, sent, row("a", "echo"), newer)
    assert change == ChangeSet(outbox_done=[3])


def test_an_echo_that_is_the_same_another_row_or_unreadable_is_ignored() -> None:
    sent = entry(3, "a", payload=row("a"))
    current = frame(row("a"))
    done = ChangeSet(outbox_done=[3])
    assert outbox.acknowledge(SPEC, sent, row("a"), current) == done
    assert outbox.acknowledge(SPEC, sent, row("server-id"), current) == done
    assert outbox.acknowledge(SPEC, sent, {"id": "a", "price": "not a number"}, current) == done
    removed = entry(4, "a", op="remove", before=row("a"))
    assert outbox.acknowledge(SPEC, removed, row("a", "x"), current) == ChangeSet(outbox_done=[4])


# -- rejections -------------------------------------------------------------------------------


def test_a_rejection_takes_the_later_writes_of_its_key_and_restores_the_first_before() -> None:
    first = entry(1, "k", payload=row("k", "one"), before=row("k", "stored"))
    other = entry(2, "other", op="create", payload=row("other"))
    second = entry(3, "k", payload=row("k", "two"), before=row("k", "one"))
    error = Rejected("no")
    decision = outbox.reject(SPEC, first, error, [first, other, second])
    assert list(decision.change.outbox_done) == [1, 3]
    assert decision.change.upsert == [row("k", "stored")]
    assert decision.change.delete == ()
    assert [e.id for e, _ in decision.rejected] == [1, 3]
    assert decision.rejected[0][1] is error
    cascade = decision.rejected[1][1]
    assert isinstance(cascade, Rejected) and cascade.__cause__ is error
    assert [(c.source, c.op) for c in decision.events] == [(Source.REMOTE, Op.REJECTED)] * 2
    assert [c.frame.rows(named=True) for c in decision.events] == [
        [row("k", "one")],  # newest first: each write undone in turn
        [row("k", "stored")],
    ]


def test_a_rejected_create_deletes_the_row() -> None:
    created = entry(5, "n", op="create", payload=row("n"))
    decision = outbox.reject(SPEC, created, Rejected("no"), [created])
    assert decision.change == ChangeSet(delete=[("n",)], outbox_done=[5])
    assert decision.events[0].frame.height == 0


# -- superseded writes ------------------------------------------------------------------------


def test_a_supersede_does_nothing_when_the_pending_writes_changed() -> None:
    entries = [entry(1, "k", payload=row("k"))]
    assert outbox.supersede(entries, [1, 2], frame(row("k", "r")), frame(), push=False) is None


def test_the_remote_row_wins_over_the_pending_writes() -> None:
    entries = [entry(1, "k", payload=row("k")), entry(2, "k", payload=row("k", "2"))]
    remote = frame(row("k", "remote"))
    change = outbox.supersede(entries, [1, 2], remote, frame(), push=False)
    assert change == ChangeSet(upsert=remote, outbox_done=[1, 2])


def test_a_merged_row_is_queued_in_place_of_the_pending_writes() -> None:
    entries = [entry(1, "k", payload=row("k", "local"))]
    merged = frame(row("k", "merged"))
    change = outbox.supersede(entries, [1], merged, frame(row("k", "local")), push=True)
    assert change is not None
    assert list(change.outbox_done) == [1]
    (queued,) = change.outbox_add
    assert (queued.op, queued.key) == ("update", ("k",))
    assert queued.payload == row("k", "merged")
    assert queued.before == row("k", "local")
    (created,) = outbox.supersede(entries, [1], merged, frame(), push=True).outbox_add  # type: ignore[union-attr]
    assert created.op == "create" and created.before is None


# -- snapshots --------------------------------------------------------------------------------


def test_keys_missing_from_a_snapshot_are_the_vanished_ones() -> None:
    stored = frame(row("a"), row("b"), row("c"))
    fetched = frame(row("b"), row("d"))
    assert vanished_keys(SPEC.key, stored, fetched) == [("a",), ("c",)]
    assert vanished_keys(SPEC.key, stored, frame()) == [("a",), ("b",), ("c",)]
