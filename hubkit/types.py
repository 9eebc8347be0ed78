"""The small vocabulary the parts of hubkit agree on: enums, events and protocols.

A ``Connection`` moves rows between hubkit and a remote; a ``StreamingConnection`` adds topic
subscriptions and an async iterator of decoded messages; a ``SyncPolicy`` decides when and what
to sync and works only through the ``SyncContext`` its sink hands it. Anything that has these
methods works: nothing here is a base class to inherit from.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import polars as pl

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec
    from hubkit.errors import HubkitError

__all__ = [
    "Change",
    "ChangeHandler",
    "Connection",
    "ErrorHandler",
    "FrameLost",
    "Gap",
    "Message",
    "Op",
    "OutboxEntry",
    "Reconnected",
    "ScheduleStatus",
    "Source",
    "StreamEvent",
    "StreamingConnection",
    "SyncContext",
    "SyncPolicy",
    "SyncState",
    "SyncStatus",
]


class Source(enum.Enum):
    """Where a change came from."""

    LOCAL = "local"
    REMOTE = "remote"


class Op(enum.Enum):
    """What a change did to the rows it carries."""

    UPSERT = "upsert"
    DELETE = "delete"
    REJECTED = "rejected"  # a local write the remote refused; the rows are the rolled-back state
    GAP = "gap"  # a stream gap that could not be filled; see ``Change.gap``


class SyncStatus(enum.Enum):
    OUT_OF_SYNC = "out_of_sync"
    REMOTE_DATA_RECEIVED = "remote_data_received"
    LOCAL_DATA_PUSHED = "local_data_pushed"
    FULL_SYNC = "full_sync"


class ScheduleStatus(enum.Enum):
    NOT_SCHEDULED = "not_scheduled"
    SCHEDULED = "scheduled"


@dataclass(frozen=True)
class Gap:
    """An interval of a stream that could not be filled from the remote."""

    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True)
class Change:
    """One change event: the changed rows as a Polars frame, where it came from, what it did."""

    frame: pl.DataFrame
    source: Source
    op: Op
    reason: str | None = None  # for REJECTED: why the remote refused
    gap: Gap | None = None  # for GAP


ChangeHandler = Callable[[Change], object]
ErrorHandler = Callable[["HubkitError"], object]


@dataclass(frozen=True)
class SyncState:
    """Per-sink sync state kept in the store beside the rows."""

    cursor: str | None = None
    last_sync: datetime | None = None
    fingerprint: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxEntry:
    """A local write waiting to be pushed; committed with the row it describes."""

    id: int
    op: str  # "create" | "update" | "remove"
    key: tuple[Any, ...]
    payload: Mapping[str, Any] | None  # the row as the entity's columns (None for remove)
    before: Mapping[str, Any] | None  # the row before the write (None if it did not exist)
    created_at: datetime
    attempts: int = 0


@dataclass(frozen=True)
class Message:
    """Decoded rows that arrived on a stream topic."""

    topic: str
    frame: pl.DataFrame
    kind: str = "snapshot"  # "snapshot" | "delta"
    received_at: float = 0.0  # time.monotonic() when the frame arrived


@dataclass(frozen=True)
class Reconnected:
    """The stream reconnected and resubscribed; rows since ``down_since`` may be missing."""

    attempt: int
    down_since: datetime


@dataclass(frozen=True)
class FrameLost:
    """A frame of the stream did not decode and was skipped: its rows are missing.

    ``topic`` is the frame's topic, or None when the frame was too broken to tell (then any
    topic may have lost rows); ``error`` says what was wrong with it. A stream yields it in
    arrival order, so rows before it were sent before the lost frame."""

    topic: str | None
    error: HubkitError


StreamEvent = Message | Reconnected | FrameLost


@runtime_checkable
class Connection(Protocol):
    """How rows move between hubkit and a remote. Third-party errors leave as ``HubkitError``.

    Writes and exactly-once: a sink pushes each local write from its durable outbox and calls
    ``create``/``update``/``remove`` with ``idempotency_key``, a text that is the same for
    every try of that write, also after a crash and restart (``hubkit.writes.idempotency_key``).
    A push whose answer was lost (a timeout, or the process died before recording it) is sent
    again with the same key. A connection passes the key on (``HttpConnection``: the
    ``Idempotency-Key`` header; ``JsonRpcConnection``: the request ``id`` and that header);
    when the remote applies a key once and answers a repeat with the first result, each
    write is applied exactly once. Otherwise, and for a connection whose verbs do not accept
    the keyword (they are called without it, which keeps older connections working), a write
    reaches the remote at least once.
    """

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame: ...

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None: ...

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None: ...

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None: ...


@runtime_checkable
class StreamingConnection(Connection, Protocol):
    """A connection that also pushes rows: subscribe to topics, iterate decoded messages."""

    async def subscribe(self, topics: Sequence[str]) -> None: ...

    async def unsubscribe(self, topics: Sequence[str]) -> None: ...

    def messages(self) -> AsyncIterator[StreamEvent]: ...


class SyncContext(Protocol):
    """What a sink offers its policy (the sink's is ``hubkit.sink.context.SinkContext``).

    Store work behind these awaits runs off the loop thread; every store write is one
    transaction followed by the cache update and the change events.
    """

    @property
    def name(self) -> str:
        """The sink's name (it keys the sync state, the outbox and idempotency keys)."""
        ...

    @property
    def spec(self) -> EntitySpec: ...

    @property
    def connection(self) -> Connection | None: ...

    async def apply_remote(
        self,
        frame: pl.DataFrame,
        *,
        op: Op = Op.UPSERT,
        cursor: str | None = None,
        snapshot: bool | Mapping[str, Any] = False,
    ) -> pl.DataFrame:
        """Store remote rows (and the cursor) in one transaction, update the cache, emit REMOTE.

        ``snapshot``: the frame is every remote row (or every one whose columns have the
        mapping's values); stored rows it lacks are deleted in the same transaction."""
        ...

    async def state(self) -> SyncState: ...

    async def pending(self, limit: int | None = None) -> list[OutboxEntry]: ...

    async def acknowledge(self, entry: OutboxEntry, response: Mapping[str, Any] | None) -> None:
        """Mark a pushed outbox entry done (and apply the remote's echo of the row, if any)."""
        ...

    async def reject(self, entry: OutboxEntry, error: HubkitError) -> None:
        """Drop a refused outbox entry, roll its local row back and emit a REJECTED change."""
        ...

    async def bump(self, entries: Sequence[OutboxEntry]) -> None:
        """Count one more failed push attempt for these outbox entries (durably)."""
        ...

    async def supersede(
        self,
        entries: Sequence[OutboxEntry],
        frame: pl.DataFrame,
        *,
        push: bool,
        reason: str,
    ) -> bool:
        """Replace the pending local writes ``entries`` (all for one key) by ``frame``.

        ``push=False``: the remote's row ``frame`` wins; the writes are dropped and reported
        as rejected with ``reason``. ``push=True``: ``frame`` is a resolved row, stored and
        queued for pushing in place of the writes. False (and nothing done) when the key's
        pending writes are no longer exactly ``entries``."""
        ...

    async def rows(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The current local rows for the key columns of ``keys`` (absent keys are missing)."""
        ...

    async def emit_gap(self, gap: Gap) -> None: ...

    def report_error(self, exc: BaseException) -> None: ...

    def set_status(self, status: SyncStatus) -> None: ...

    async def wait_for_request(self, timeout: float | None) -> bool:
        """Sleep until ``schedule_sync``/a local write asks for a sync (True) or timeout (False)."""
        ...

    def exclusive(self) -> AbstractAsyncContextManager[Any]:
        """Held around a sync step; ``force_sync``/``schedule_sync``/close take it too."""
        ...

    async def ensure_connected(self) -> bool:
        """Connect the sink's connection if it is not connected (True if it had to)."""
        ...

    def note_reconnect(self) -> None:
        """Count a reconnect the connection made by itself (shown in ``status().reconnects``)."""
        ...


class SyncPolicy(Protocol):
    """When and what to sync. ``run`` lives as long as the sink; ``sync_once`` is ``force_sync``.

    Optional members a sink reads when present (plain class attributes or methods; a policy
    without them gets the defaults): ``pushes_local_writes: bool = False`` (the DAO writes
    outbox entries), ``waits_for_first_sync: bool = False`` (opening waits for the first
    sync), ``async start(ctx)`` (runs before the sink is returned), ``async flush(ctx)``
    (one push round on close).
    """

    async def run(self, ctx: SyncContext) -> None: ...

    async def sync_once(self, ctx: SyncContext) -> None: ...
