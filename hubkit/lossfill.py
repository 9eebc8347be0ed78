"""Decisions, free of I/O, for a stream that must not lose rows silently: which partitions a
frame that did not decode concerns, and how long rows wait when the store refuses a write.

A ``WebSocketSubscription`` treats a frame that did not decode (a ``FrameLost``) like a short
outage of the partitions it concerns: it remembers where each of them stood (``note_loss``)
and backfills them over REST from there, as after a reconnect (``hubkit.gapfill`` decides
what the backfill proves). A GAP is emitted only when the backfill cannot reach back.

When a store write fails for a reason that passes (another process holds the write lock,
the disk is full), the rows are kept in memory and the write is retried with backoff
(``write_is_transient``); the stream goes on being read until ``max_held_rows`` rows wait
(``must_pause``), then reading pauses, which pushes back on the connection.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from hubkit.errors import ClosedError, StoreError
from hubkit.gapfill import ALL, StreamPosition

__all__ = [
    "Losses",
    "lost_partitions",
    "must_pause",
    "must_pause_reading",
    "note_loss",
    "write_is_transient",
]


def lost_partitions(
    topic: str | None, known: Collection[str], partition: str | None
) -> frozenset[str] | None:
    """The partitions a lost frame of ``topic`` may have carried rows of; None for all.

    Without ``partition`` the stream is one partition (``ALL``). Otherwise a dotted segment of
    the topic that names a known partition (``publicTrade.BTCUSDT`` -> ``BTCUSDT``; the last
    such segment wins) is the one; a topic naming none, or no topic at all (the frame was not
    readable enough to tell), concerns every partition."""
    if partition is None:
        return frozenset((ALL,))
    if topic is None:
        return None
    for segment in reversed(topic.split(".")):
        if segment in known:
            return frozenset((segment,))
    return None


@dataclass(frozen=True)
class Losses:
    """Frames lost since the last backfill: where each concerned partition stood at its
    first loss (None: no row of it seen yet), and whether a loss concerned every partition.

    ``origin`` is when the stream started delivering (rows of a partition never seen are
    looked for from there)."""

    origin: datetime
    positions: Mapping[str, StreamPosition | None] = field(default_factory=dict)
    every_partition: bool = False
    count: int = 0

    @property
    def only(self) -> frozenset[str] | None:
        """The partitions to backfill, None for all."""
        return None if self.every_partition else frozenset(self.positions)

    def known_positions(self) -> dict[str, StreamPosition]:
        return {name: p for name, p in self.positions.items() if p is not None}


def note_loss(
    losses: Losses | None,
    topic: str | None,
    seen: Mapping[str, StreamPosition],
    *,
    partition: str | None,
    origin: datetime,
) -> Losses:
    """``losses`` with one more lost frame of ``topic``; ``seen`` is where each partition's
    rows received so far end. An earlier loss of a partition keeps its (older) position."""
    affected = lost_partitions(topic, seen.keys(), partition)
    every = affected is None
    names = seen.keys() if affected is None else affected
    positions = dict(losses.positions) if losses is not None else {}
    for name in names:
        if name not in positions:
            positions[name] = seen.get(name)
    return Losses(
        origin=losses.origin if losses is not None else origin,
        positions=positions,
        every_partition=every or (losses is not None and losses.every_partition),
        count=(losses.count if losses is not None else 0) + 1,
    )


_TRANSIENT_TEXT = ("locked", "busy", "disk is full", "disk i/o", "no space left")


def write_is_transient(exc: BaseException) -> bool:
    """True for a store write failure that may pass (the database is locked by another
    process, the disk is full, an I/O error): the rows are kept and the write retried.
    Bad rows (``ValidationError``, a constraint the rows break) and a closed sink are not."""
    if not isinstance(exc, StoreError) or isinstance(exc, ClosedError):
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ == "OperationalError":
            return True
        text = str(cause).lower()
        if any(marker in text for marker in _TRANSIENT_TEXT):
            return True
        cause = cause.__cause__
    return False


def must_pause(held_rows: int, max_held_rows: int) -> bool:
    """Stop reading the stream: ``held_rows`` rows already wait for the store to accept them
    and the bound ``max_held_rows`` is reached."""
    return held_rows >= max_held_rows


def must_pause_reading(
    *,
    buffered_events: int,
    max_buffer: int,
    held_rows: int,
    max_held_rows: int,
    stalled: bool,
) -> bool:
    """Stop reading the stream for now. Normally at ``max_buffer`` events waiting for the
    next store write (the connection then pushes back, and batches grow); while the store
    does not take rows (``stalled``) reading goes on, so the server does not drop a slow
    reader, until ``held_rows`` (held plus buffered) reach ``max_held_rows``."""
    if must_pause(held_rows, max_held_rows):
        return True
    return buffered_events >= max_buffer and not stalled
