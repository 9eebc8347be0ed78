"""The collectors table: one row per collector writing to a store, and its health.

A collector writes its row through the store layer (``Store.table``; the table
``hubkit_collectors`` is created on first use, on SQLite and PostgreSQL alike) when it
starts, at every heartbeat and when it stops. ``hubkit status --store URL`` reads the rows
back and judges each one with ``health`` (a pure function of the row and the clock)::

    board = CollectorBoard(store, CollectorRecord.starting("bybit-1", "trades ...", 10.0))
    board.beat(rows=120, lag=0.3, last_error=None)   # at every heartbeat
    board.stop()                                     # state "stopped"
    for record in read_collectors(store):
        print(record.id, health(record))             # running / stopped / not running ...
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from hubkit.entity import reflect

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec
    from hubkit.store import Store

__all__ = [
    "COLLECTORS_TABLE",
    "STALE_BEATS",
    "CollectorBoard",
    "CollectorRecord",
    "collectors_spec",
    "health",
    "read_collectors",
]

#: The table of collector rows (beside the entity tables).
COLLECTORS_TABLE: Final = "hubkit_collectors"
#: A running collector whose heartbeat is older than this many heartbeat intervals is not
#: running any more (killed, machine down, network cut).
STALE_BEATS: Final = 3.0


@dataclass(frozen=True)
class CollectorRecord:
    """One collector's status row.

    ``id``: the collector's name (a restart under the same name replaces the row);
    ``host``/``pid``: where it runs; ``collects``: what (``Plan.describe()``); ``state``:
    ``"running"``, ``"stopped"`` (clean stop) or ``"failed"``; ``started``/``heartbeat``:
    UTC times; ``heartbeat_every``: seconds between heartbeats; ``rows``: rows received
    since it started; ``lag``: seconds the newest streamed row arrived after its own time
    (None before any); ``errors``: errors since it started, ``last_error`` the newest.
    """

    id: str
    host: str
    pid: int
    collects: str
    state: str
    started: datetime
    heartbeat: datetime
    heartbeat_every: float
    rows: int
    errors: int
    lag: float | None = None
    last_error: str | None = None

    def counted(self, *, rows: int, errors: int, last_error: str | None) -> CollectorRecord:
        """This record with these counters."""
        return dataclasses.replace(self, rows=rows, errors=errors, last_error=last_error)

    @staticmethod
    def starting(
        id: str, collects: str, heartbeat_every: float, *, now: datetime | None = None
    ) -> CollectorRecord:
        """The row of a collector starting now in this process on this host."""
        moment = now or datetime.now(UTC)
        return CollectorRecord(
            id=id,
            host=socket.gethostname(),
            pid=os.getpid(),
            collects=collects,
            state="running",
            started=moment,
            heartbeat=moment,
            heartbeat_every=heartbeat_every,
            rows=0,
            errors=0,
        )


def collectors_spec() -> EntitySpec:
    """The entity spec of the collectors table (key ``id``)."""
    return reflect(CollectorRecord, "id", table=COLLECTORS_TABLE)


def health(record: CollectorRecord, now: datetime | None = None) -> str:
    """``"running"``; ``"stopped"`` / ``"failed"`` as the collector said when it ended; or
    ``"not running (no heartbeat for 2m)"`` when a running collector's heartbeat is older
    than ``STALE_BEATS`` intervals (it died without saying so)."""
    if record.state != "running":
        return record.state
    moment = now or datetime.now(UTC)
    beat = record.heartbeat if record.heartbeat.tzinfo else record.heartbeat.replace(tzinfo=UTC)
    age = (moment - beat).total_seconds()
    if age > STALE_BEATS * record.heartbeat_every:
        return f"not running (no heartbeat for {_age(age)})"
    return "running"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class CollectorBoard:
    """Writes one collector's row to ``store`` (blocking; one write per call)."""

    def __init__(self, store: Store, record: CollectorRecord) -> None:
        self._table = store.table(collectors_spec())
        #: the row this collector's name had before it started (None: the first start)
        self.previous: CollectorRecord | None = self._table.get(record.id)
        self.record = record
        self._table.upsert([record])

    def beat(self, *, rows: int, lag: float | None, errors: int, last_error: str | None) -> None:
        """A heartbeat: now, with the counters as they are."""
        self._write(rows=rows, lag=lag, errors=errors, last_error=last_error, state="running")

    def stop(self, *, failed: str | None = None) -> None:
        """The last write: ``"stopped"``, or ``"failed"`` with ``failed`` as the last error."""
        if failed is None:
            self._write(state="stopped")
        else:
            self._write(state="failed", last_error=failed, errors=self.record.errors + 1)

    def _write(self, **changes: object) -> None:
        record = dataclasses.replace(self.record, heartbeat=datetime.now(UTC), **changes)  # type: ignore[arg-type]
        self._table.upsert([record])
        self.record = record


def read_collectors(store: Store) -> Sequence[CollectorRecord]:
    """The collector rows of ``store``, sorted by id (empty when none ever wrote one)."""
    frame = store.table(collectors_spec()).read_all().sort("id")
    return [CollectorRecord(**row) for row in frame.iter_rows(named=True)]
