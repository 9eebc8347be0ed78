"""Outbox decisions, free of I/O: what a local write, an acknowledgement, a rejection or a
superseded write changes, as a ``ChangeSet`` (plus the change events it explains).

The sink reads what a decision needs (the rows before a write, the current row, the pending
entries of a key) under its write lock, calls one of these functions and commits the
result with one store call. Rules:

- a local write adds one outbox entry per row when the policy pushes local writes:
  ``create`` for a new key, ``update`` for a stored one, ``remove`` for a stored key deleted;
- an acknowledged entry leaves the outbox; the remote's echo of the row is stored with it
  when it differs from what was sent, names the same key, and no newer local write of that
  key is waiting (the stored row is still what was sent);
- a rejected entry takes every later entry of the same key with it; the row returns to the
  state before the first of them (deleted when it did not exist);
- superseded entries (a conflict settled by a pull) leave the outbox together with storing
  the winning row, and a merged row is queued for pushing in their place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.changeset import ChangeSet, OutboxWrite
from hubkit.errors import HubkitError, Rejected
from hubkit.types import Change, Op, OutboxEntry, Source
from hubkit.writes import key_text

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = [
    "Rejection",
    "acknowledge",
    "before_images",
    "local_delete",
    "local_upsert",
    "reject",
    "supersede",
]

Row = Mapping[str, Any]


def before_images(spec: EntitySpec, current: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The stored rows ``current`` by ``key_text`` of their key (the "before" of a write)."""
    names = list(spec.key)
    return {key_text(tuple(row[k] for k in names)): row for row in current.iter_rows(named=True)}


def local_upsert(
    spec: EntitySpec, frame: pl.DataFrame, before: Mapping[str, Row], *, push: bool
) -> ChangeSet:
    """Store ``frame`` (one row per key); with ``push``, one outbox entry per row."""
    if not push:
        return ChangeSet(upsert=frame)
    keys = list(frame.select(list(spec.key)).iter_rows())
    outbox = []
    for row_key, row in zip(keys, frame.iter_rows(named=True), strict=True):
        old = before.get(key_text(row_key))
        outbox.append(
            OutboxWrite(
                op="create" if old is None else "update", key=row_key, payload=row, before=old
            )
        )
    return ChangeSet(upsert=frame, outbox_add=outbox)


def local_delete(
    keys: Sequence[tuple[Any, ...]], before: Mapping[str, Row], *, push: bool
) -> ChangeSet:
    """Delete ``keys``; with ``push``, a ``remove`` entry for each key that is stored."""
    if not push:
        return ChangeSet(delete=list(keys))
    outbox = [
        OutboxWrite(op="remove", key=k, payload=None, before=before[key_text(k)])
        for k in keys
        if key_text(k) in before
    ]
    return ChangeSet(delete=list(keys), outbox_add=outbox)


def acknowledge(
    spec: EntitySpec, entry: OutboxEntry, response: Row | None, current: pl.DataFrame
) -> ChangeSet:
    """``entry`` was pushed and answered with ``response``; ``current`` is the stored row of
    its key (empty when there is none)."""
    done = ChangeSet(outbox_done=[entry.id])
    if response is None or entry.op == "remove" or entry.payload is None:
        return done
    try:
        echo = spec.to_frame([dict(response)])
        sent = spec.to_frame([dict(entry.payload)])
    except HubkitError:
        return done  # an echo that does not fit the entity is not stored
    if echo.equals(sent):
        return done
    if echo.select(list(spec.key)).row(0) != sent.select(list(spec.key)).row(0):
        return done  # an echo of something else (e.g. a server-side id): not our row
    if current.height != 1 or not current.select(sent.columns).equals(sent):
        return done  # a newer local write of this key is waiting: keep it
    return ChangeSet(upsert=echo, outbox_done=[entry.id])


@dataclass(frozen=True)
class Rejection:
    """What rejecting an entry does: the ``change`` to commit, the ``events`` to emit after
    it (newest entry first) and each rejected entry with its error (oldest first, the order
    their write results settle in)."""

    change: ChangeSet
    events: tuple[Change, ...]
    rejected: tuple[tuple[OutboxEntry, HubkitError], ...]


def reject(
    spec: EntitySpec, entry: OutboxEntry, error: HubkitError, pending: Sequence[OutboxEntry]
) -> Rejection:
    """Reject ``entry`` (refused with ``error``) and the later ``pending`` entries of its key."""
    text = key_text(entry.key)
    later = [e for e in pending if e.id > entry.id and key_text(e.key) == text]
    cascade = Rejected(f"an earlier write to key {tuple(entry.key)!r} was rejected: {error}")
    cascade.__cause__ = error
    rejected = sorted([(e, cascade) for e in later] + [(entry, error)], key=lambda p: p[0].id)
    ids = [e.id for e, _ in rejected]
    if entry.before is None:
        change = ChangeSet(delete=[spec.key_of(tuple(entry.key))], outbox_done=ids)
    else:
        change = ChangeSet(upsert=[dict(entry.before)], outbox_done=ids)
    events = tuple(
        Change(
            frame=spec.to_frame([] if item.before is None else [dict(item.before)]),
            source=Source.REMOTE,
            op=Op.REJECTED,
            reason=f"{item.op} of key {tuple(item.key)!r} rejected: {item_error}",
        )
        for item, item_error in reversed(rejected)
    )
    return Rejection(change, events, tuple(rejected))


def supersede(
    entries: Sequence[OutboxEntry],
    pending_ids: Sequence[int],
    frame: pl.DataFrame,
    current: pl.DataFrame,
    *,
    push: bool,
) -> ChangeSet | None:
    """Replace the pending ``entries`` of one key by the row ``frame``; None (nothing to do)
    when the key's pending entries (``pending_ids``) are no longer exactly ``entries``.

    ``push``: ``frame`` is a merged row, queued for pushing in place of the entries (its
    "before" is the stored row ``current``); otherwise the remote's row won and is stored.
    """
    ids = [e.id for e in entries]
    if list(pending_ids) != ids:
        return None  # a newer local write arrived: settle it in a later round
    if not push:
        return ChangeSet(upsert=frame, outbox_done=ids)
    before = current.row(0, named=True) if current.height else None
    entry = OutboxWrite(
        op="update" if before is not None else "create",
        key=tuple(entries[0].key),
        payload=frame.row(0, named=True),
        before=before,
    )
    return ChangeSet(upsert=frame, outbox_done=ids, outbox_add=[entry])
