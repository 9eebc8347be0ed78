"""A change as one value: rows to upsert, keys to delete, sync-state and outbox edits.

Decision code (the sink's outbox rules, policies, snapshots) builds a ``ChangeSet`` without
touching I/O; ``TableStore.apply(changeset)`` applies it in one store transaction and returns
what it did as an ``Applied``; the sink then updates its cache and queues the change events,
in that order. Nothing here does I/O::

    ChangeSet(upsert=frame, cursor="1700000000000")                 # remote rows + cursor
    ChangeSet(delete=[("BTCUSDT",)], outbox_add=[OutboxWrite("remove", ("BTCUSDT",), None, row)])
    ChangeSet(upsert=restored, outbox_done=[7, 9])                  # a rejection, rolled back

Rules of one application (all or nothing, in this order inside the transaction):

1. ``delete`` keys are removed (missing keys are skipped; the removed rows come back in
   ``Applied.deleted``);
2. ``upsert`` rows are inserted or replaced (a key repeated in the batch keeps its last row;
   a key both deleted and upserted ends upserted);
3. the sink's sync state: ``cursor``, ``last_sync`` and ``extra`` are written when not
   ``UNSET`` (None clears ``cursor``/``last_sync``);
4. outbox: ``outbox_done`` entries are removed, ``outbox_bump`` entries count one more failed
   attempt, ``outbox_add`` entries are added (ids increase; never reused).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import polars as pl

__all__ = ["UNSET", "Applied", "ChangeSet", "OutboxWrite", "Unset"]


class Unset(enum.Enum):
    """The type of ``UNSET``: "leave this part of the sync state as it is"."""

    UNSET = 0


UNSET: Final = Unset.UNSET


@dataclass(frozen=True)
class OutboxWrite:
    """An outbox entry to add with a change.

    ``op`` is ``"create"``, ``"update"`` or ``"remove"``; ``key`` the row's key tuple;
    ``payload`` the row as written (None for remove) and ``before`` the row before the write
    (None if it did not exist), each as a column-keyed mapping or an entity instance.
    """

    op: str
    key: tuple[Any, ...]
    payload: Mapping[str, Any] | None = None
    before: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ChangeSet:
    """One change to a sink's table and its bookkeeping, applied in one transaction.

    ``upsert``: rows (a frame of the entity's columns, entities or dict rows; None for
    none). ``delete``: key tuples. ``cursor``/``last_sync``/``extra``: sync-state edits
    (``UNSET`` leaves a part as it is). ``outbox_add``/``outbox_done``/``outbox_bump``:
    outbox edits by entry id. See the module docstring for the order of application.
    """

    upsert: pl.DataFrame | Sequence[Any] | None = None
    delete: Sequence[tuple[Any, ...]] = ()
    cursor: str | Unset | None = UNSET
    last_sync: datetime | Unset | None = UNSET
    extra: Mapping[str, Any] | Unset = UNSET
    outbox_add: Sequence[OutboxWrite] = ()
    outbox_done: Sequence[int] = ()
    outbox_bump: Sequence[int] = ()

    @property
    def touches_state(self) -> bool:
        return not (
            isinstance(self.cursor, Unset)
            and isinstance(self.last_sync, Unset)
            and isinstance(self.extra, Unset)
        )

    @property
    def is_empty(self) -> bool:
        rows = self.upsert
        no_rows = rows is None or (len(rows) == 0)
        return (
            no_rows
            and not self.delete
            and not self.touches_state
            and not self.outbox_add
            and not self.outbox_done
            and not self.outbox_bump
        )


@dataclass(frozen=True)
class Applied:
    """What ``TableStore.apply`` committed: ``upserted`` (the normalised rows written, in the
    entity's schema), ``deleted`` (the rows that existed and were removed), and how many
    outbox entries were added and asked to be removed (``outbox_done`` ids)."""

    upserted: pl.DataFrame
    deleted: pl.DataFrame
    outbox_added: int = 0
    outbox_removed: int = 0
