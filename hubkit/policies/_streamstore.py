"""How a ``WebSocketSubscription`` stores what it receives: rows wait in memory, in arrival
order, and one write at a time stores all that waits in one transaction with the stream's
position as the sink's cursor.

A write the store refuses for a while (another process holds the SQLite write lock, the disk
is full: see ``hubkit.lossfill.write_is_transient``) loses nothing: the rows stay held, the
write is retried with backoff (0.5 s doubling to 5 s), the error is in ``status().last_error``
until a write succeeds again, and the stream goes on being read meanwhile, until
``max_held_rows`` rows wait (then reading pauses). Rows the store refuses for good (they
break a constraint) are dropped and the policy backfills from the last stored position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from hubkit.errors import StoreError, as_hubkit
from hubkit.gapfill import (
    RecentRows,
    StreamPosition,
    partition_positions,
    positions_to_cursor,
)
from hubkit.lossfill import write_is_transient
from hubkit.policies._common import backoff_delay
from hubkit.types import SyncContext, SyncStatus

__all__ = ["StreamStore"]

_log = logging.getLogger("hubkit.policies")

# A stream's cursor is committed with its rows at most this often (seconds).
CURSOR_EVERY: Final = 1.0
# A write that has waited this long (seconds) counts as stalled: reading goes on past
# ``max_buffer`` events, up to ``max_held_rows`` rows.
STALL_AFTER: Final = 1.0
# The longest wait (seconds) between two tries of a refused write.
WRITE_RETRY_CAP: Final = 5.0


@dataclass
class _Held:
    """Rows received (fresh) and the positions they move the stream to, waiting to be stored."""

    frame: pl.DataFrame
    found: Mapping[str, StreamPosition]
    cursor_now: bool = False


class StreamStore:
    """Rows received from a stream and not yet stored, the one write in flight, and where the
    stored (``positions``) and the received (``seen``) rows of each partition end."""

    def __init__(
        self,
        ctx: SyncContext,
        *,
        time_column: str | None,
        partition: str | None,
        dedupe_window: int,
    ) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.key = tuple(ctx.spec.key)
        self.time_column = time_column
        self.partition = partition
        self.dedupe_window = dedupe_window
        self.recent = RecentRows(self.key, dedupe_window)
        self.positions: dict[str, StreamPosition] = {}  # where the stored rows end
        self.seen: dict[str, StreamPosition] = {}  # where the received rows end
        self._cursor_at = -CURSOR_EVERY  # monotonic time of the last cursor commit
        self._unsaved = False  # positions moved since the last cursor commit
        # rows waiting for the store, oldest first; one write at a time
        self.held: list[_Held] = []
        self.held_rows = 0
        self.writer: asyncio.Task[None] | None = None
        self.write_started: float | None = None
        self.write_failures = 0
        self.retry_at: float | None = None
        self.write_error: str | None = None
        self.wake = asyncio.Event()  # set when a write ends

    @staticmethod
    def _newer(old: StreamPosition | None, new: StreamPosition) -> bool:
        return old is None or old.time is None or new.time is None or new.time >= old.time

    @classmethod
    def _merge(
        cls, into: dict[str, StreamPosition], found: Mapping[str, StreamPosition]
    ) -> dict[str, StreamPosition]:
        """Move positions forward (never back: a late message does not rewind them)."""
        for name, position in found.items():
            if cls._newer(into.get(name), position):
                into[name] = position
        return into

    def _cursor_after(self, found: Mapping[str, StreamPosition]) -> str:
        return positions_to_cursor(self._merge(dict(self.positions), found))

    def _stalled(self) -> bool:
        """The store is not taking rows now: a write failed and waits to be retried, or the
        write in flight has waited for a while (e.g. for another process's lock)."""
        if self.retry_at is not None:
            return True
        started = self.write_started
        return started is not None and time.monotonic() - started >= STALL_AFTER

    def _hold(self, frames: Sequence[pl.DataFrame], *, cursor_now: bool = False) -> None:
        """Queue rows for the store (the new ones; each row is stored once)."""
        if not frames:
            return
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
        fresh = self.recent.fresh(frame)
        found = partition_positions(
            frame, key=self.key, time_column=self.time_column, partition=self.partition
        )
        if not fresh.height and not found:
            return
        self.held.append(_Held(fresh, found, cursor_now))
        self.held_rows += fresh.height
        self._merge(self.seen, found)

    def _start_write(self) -> None:
        """Store what is held, in one transaction, unless a write runs or waits to retry."""
        if not self.held or self.writer is not None:
            return
        if self.retry_at is not None and time.monotonic() < self.retry_at:
            return
        self.write_started = time.monotonic()
        self.writer = asyncio.create_task(self._write(), name="hubkit-stream-writer")
        self.writer.add_done_callback(lambda _: self.wake.set())

    def _reap_write(self) -> None:
        """Take the outcome of a finished write; a write that cannot succeed is raised."""
        writer = self.writer
        if writer is None or not writer.done():
            return
        self.writer = None
        if not writer.cancelled():
            error = writer.exception()
            if error is not None:
                raise error

    async def _drain(self) -> None:
        """Store everything held now; raises the store's error when it is refused."""
        while True:
            if self.writer is not None:
                await asyncio.wait([self.writer])
                self._reap_write()
            if not self.held:
                return
            if self.retry_at is not None:
                raise StoreError(f"rows wait to be stored: {self.write_error}")
            self._start_write()

    async def _write(self) -> None:
        items = list(self.held)
        rows = sum(item.frame.height for item in items)
        found: dict[str, StreamPosition] = {}
        for item in items:
            self._merge(found, item.found)
        frames = [item.frame for item in items if item.frame.height]
        try:
            if frames:
                frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
                if any(item.cursor_now for item in items):
                    cursor: str | None = self._cursor_after(found)
                    self._cursor_at = time.monotonic()
                    self._unsaved = False
                else:
                    cursor = self._cursor_if_due(found)
                await self.ctx.apply_remote(frame, cursor=cursor)
            elif found:
                self._unsaved = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._write_failed(exc, rows)
            return
        finally:
            self.write_started = None
        del self.held[: len(items)]
        self.held_rows -= rows
        if self.write_failures:
            _log.info(
                "sink %s: the store takes rows again after %d failed write(s)",
                self.ctx.name,
                self.write_failures,
            )
            self._clear_write_error()
        # rows arrived (new or already stored): the stream is live and current
        self.ctx.set_status(SyncStatus.REMOTE_DATA_RECEIVED)
        self._merge(self.positions, found)

    def _write_failed(self, exc: Exception, rows: int) -> None:
        self._unsaved = True
        if not write_is_transient(exc):
            # the rows themselves are refused: drop them; the run loop backfills from the
            # last stored position
            self.held.clear()
            self.held_rows = 0
            self.seen = dict(self.positions)
            self.recent = RecentRows(self.key, self.dedupe_window)
            self.retry_at = None
            raise exc
        self.write_failures += 1
        delay = backoff_delay(self.write_failures, cap=WRITE_RETRY_CAP)
        self.retry_at = time.monotonic() + delay
        error = as_hubkit(exc)
        self.write_error = f"{type(error).__name__}: {error}"
        _log.warning(
            "sink %s: %d rows wait for the store (write %d failed; retry in %.1f s): %s",
            self.ctx.name,
            rows,
            self.write_failures,
            delay,
            error,
        )
        self.ctx.report_error(error)
        self.ctx.set_status(SyncStatus.OUT_OF_SYNC)

    def _clear_write_error(self) -> None:
        resolved = getattr(self.ctx, "error_resolved", None)
        if callable(resolved) and self.write_error is not None:
            resolved(self.write_error)
        self.write_failures = 0
        self.retry_at = None
        self.write_error = None

    async def _finish_writes(self) -> None:
        """On stop: wait for the write in flight, try once more, log what stays unstored."""
        writer = self.writer
        if writer is not None:
            await asyncio.wait([writer])
            self.writer = None
        if self.held and self.retry_at is None:
            self._start_write()
            if self.writer is not None:
                await asyncio.wait([self.writer])
                self.writer = None
        if self.held:
            _log.warning(
                "sink %s: stopping with %d received rows not stored (%s); the next start "
                "backfills from the last stored position as far as the remote reaches back",
                self.ctx.name,
                self.held_rows,
                self.write_error or "the store did not take them",
            )

    def _cursor_if_due(self, found: Mapping[str, StreamPosition]) -> str | None:
        """The cursor to commit with this batch, at most once per ``CURSOR_EVERY`` seconds
        (a state write per message would double the cost of storing a stream); the last
        position is saved when the policy stops."""
        now = time.monotonic()
        if now - self._cursor_at < CURSOR_EVERY:
            self._unsaved = True
            return None
        self._cursor_at = now
        self._unsaved = False
        return self._cursor_after(found)

    async def _save_position(self) -> None:
        if not self._unsaved or not self.positions or self.held:
            return
        self._unsaved = False
        try:
            await self.ctx.apply_remote(self.spec.to_frame([]), cursor=self._cursor_after({}))
        except Exception as exc:
            _log.debug("saving the stream position failed: %s", exc)
