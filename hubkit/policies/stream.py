"""``WebSocketSubscription``: store every row a stream delivers, keep the stream position as
the cursor, and fill gaps after outages (the decisions live in ``hubkit.gapfill``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from hubkit.bridge import wait_event
from hubkit.errors import DecodeError, SyncError, ValidationError
from hubkit.gapfill import (
    StreamPosition,
    plan_partitioned_gap_fill,
    positions_from_cursor,
    split_partitions,
)
from hubkit.lossfill import Losses, must_pause, must_pause_reading, note_loss
from hubkit.policies._common import (
    Backfill,
    _connection,
    _ensure_connected,
    _now,
    _seconds,
    _streaming,
    backoff_delay,
)
from hubkit.policies._streamstore import STALL_AFTER, StreamStore
from hubkit.types import (
    Connection,
    FrameLost,
    Gap,
    Message,
    Reconnected,
    StreamEvent,
    StreamingConnection,
    SyncContext,
    SyncStatus,
)

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["WebSocketSubscription"]

_log = logging.getLogger("hubkit.policies")


def _time_column(spec: EntitySpec, wanted: str | None) -> str | None:
    if wanted is not None:
        if wanted not in spec.schema:
            raise SyncError(f"time_column {wanted!r} is not a column of {spec.table}")
        return wanted
    for column in spec.columns:
        if column.kind == "datetime":
            return column.name
    return None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class WebSocketSubscription:
    """Subscribe to ``topics`` and store every row the stream delivers; fill gaps after outages.

    Each ``Message`` is normalised to the entity, deduplicated (a row equal to the last one
    seen for its key is dropped; a bounded window of ``dedupe_window`` keys) and stored with
    ``apply_remote``; the stream position (newest row's key and ``time_column``) is committed
    with the rows as the sink's cursor, so a restart knows where the stream stood.

    After the stream reconnects (a ``Reconnected`` event, the iteration ending, or the sink
    restarting with a stored position) the policy *backfills*: ``backfill(ctx, since)`` if
    given, else ``rest.fetch(spec, rest_params + {since_param: since in ms})`` if ``rest`` is
    given, else (``stream_fetch``) the same through the streaming connection's own ``fetch``
    (a ``WebSocketConnection`` hands it to its ``rest`` connection; one whose ``rest`` is None
    is not asked). Rows older than the last seen one and rows already stored are dropped;
    the rest are applied. When the backfill cannot prove continuity (see
    ``hubkit.gapfill``), or there is no backfill, or it fails, a GAP change carries the
    interval that may be missing.
    ``backfill_complete`` says the backfill returns *every* row since ``since`` (so fewer rows
    is not a gap). ``time_column`` defaults to the entity's first datetime column.

    ``partition`` names a column whose values are independent streams (e.g. ``"symbol"`` when
    one sink subscribes to the trades of several symbols): positions and gap decisions are
    then kept per value, and ``since`` is the oldest of their positions.

    A frame the connection could not decode (a ``FrameLost`` event) is a gap too: the
    partitions it concerns (the one its topic names, else all) are backfilled as after a
    reconnect, from where each stood before the lost frame; the DecodeError still reaches the
    error handler, and a GAP is emitted only when the backfill cannot reach back.

    Messages are read while the previous batch is being stored (at most ``max_buffer``
    waiting; beyond that the stream is not read, which lets the connection push back), and
    stored together: one transaction and one REMOTE change per batch. The cursor is
    committed with a batch at most once a second and when the policy stops.

    A write the store refuses for a while (another process holds the write lock, the disk
    is full) loses nothing: the rows are kept and the write retried with backoff (0.5 s
    doubling to 5 s); the error shows in ``status().last_error`` (and ``OUT_OF_SYNC``) until
    a write succeeds, then it is cleared. Meanwhile the stream is still read, into memory,
    until ``max_held_rows`` rows wait (500,000 by default, about 100 MB of trades); beyond
    that reading pauses and the connection pushes back. Only if the server then drops the
    connection and the backfill after the reconnect cannot reach back is a GAP emitted.
    Rows still held when the sink closes are logged at WARNING with their count.

    ``merge_deltas``: a ``Message`` of kind "delta" carries only changed fields (nulls
    elsewhere); they are merged into the current local row before storing.
    Status: ``REMOTE_DATA_RECEIVED`` once rows arrive, ``OUT_OF_SYNC`` while down.
    """

    topics: Sequence[str]
    backfill: Backfill | None = None
    rest: Connection | None = None
    rest_params: Mapping[str, Any] | None = None
    since_param: str | None = None
    time_column: str | None = None
    backfill_complete: bool = False
    backfill_on_start: bool = True
    stream_fetch: bool = True
    partition: str | None = None
    dedupe_window: int = 100_000
    max_buffer: int = 1_000
    max_held_rows: int = 500_000
    merge_deltas: bool = True
    max_backoff: timedelta | float = timedelta(seconds=30)

    pushes_local_writes: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.topics, str):
            object.__setattr__(self, "topics", (self.topics,))
        else:
            object.__setattr__(self, "topics", tuple(self.topics))

    # The loop keeps its state in a _Stream object created per run, never on the policy.

    async def start(self, ctx: SyncContext) -> None:
        """Subscribe before the sink is handed out, so ``open_sink`` returns subscribed."""
        await _streaming(ctx).subscribe(self.topics)

    async def run(self, ctx: SyncContext) -> None:
        stream = _Stream(self, ctx, _streaming(ctx))
        try:
            await stream.run()
        finally:
            await stream.close()

    async def sync_once(self, ctx: SyncContext) -> None:
        """Backfill from the stored stream position now (no-op without a backfill)."""
        stream = _Stream(self, ctx, None)
        if not stream.can_backfill():
            return
        try:
            await stream.load_positions()
            await stream.fill(_now(), report_gap=False)
            await stream._drain()
        finally:
            await stream.close()


class _Stream(StreamStore):
    """The state of one run of a ``WebSocketSubscription``: positions, dedupe window, backoff,
    the rows waiting to be stored and the one write in flight."""

    def __init__(
        self,
        policy: WebSocketSubscription,
        ctx: SyncContext,
        connection: StreamingConnection | None,
    ) -> None:
        if policy.partition is not None and policy.partition not in ctx.spec.schema:
            raise SyncError(f"partition {policy.partition!r} is not a column of {ctx.spec.table}")
        super().__init__(
            ctx,
            time_column=_time_column(ctx.spec, policy.time_column),
            partition=policy.partition,
            dedupe_window=policy.dedupe_window,
        )
        self.policy = policy
        self.connection = connection
        self.rest_connected = False
        self.origin = _now()  # when the stream (re)started delivering
        self.losses: Losses | None = None
        self.urgent = asyncio.Event()  # a reconnect or a lost frame waits to be handled

    async def close(self) -> None:
        if self.rest_connected and self.policy.rest is not None:
            self.rest_connected = False
            try:
                await self.policy.rest.disconnect()
            except Exception as exc:
                _log.debug("disconnecting the backfill connection failed: %s", exc)

    async def load_positions(self) -> None:
        self.positions = positions_from_cursor((await self.ctx.state()).cursor)
        self.seen = dict(self.positions)

    async def run(self) -> None:
        assert self.connection is not None
        ctx, policy = self.ctx, self.policy
        await self.load_positions()
        down_since: datetime | None = None
        if policy.backfill_on_start and self.positions:
            known = [p.time for p in self.positions.values() if p.time is not None]
            down_since = min(known) if known else _now()
        subscribe = True
        failures = 0
        try:
            while True:
                try:
                    await _ensure_connected(ctx)
                    if subscribe:
                        await self.connection.subscribe(policy.topics)
                        subscribe = False
                    if down_since is not None:
                        await self.fill(down_since)
                        down_since = None
                    failures = 0
                    await self._consume()
                    # the iteration ended: the stream was closed under us (e.g. disconnected)
                    down_since = _now()
                    subscribe = True
                    ctx.set_status(SyncStatus.OUT_OF_SYNC)
                except asyncio.CancelledError:
                    raise
                except DecodeError as exc:
                    ctx.report_error(exc)  # the stream itself refused a frame; it goes on
                except Exception as exc:
                    # e.g. the store refused rows or the connection gave up: rows may be
                    # lost, so backfill from the last stored position once we can
                    ctx.report_error(exc)
                    ctx.set_status(SyncStatus.OUT_OF_SYNC)
                    down_since = down_since or _now()
                    if not self.connection.is_connected:
                        subscribe = True
                    failures += 1
                await asyncio.sleep(backoff_delay(failures, cap=_seconds(policy.max_backoff)))
        finally:
            await self._finish_writes()
            await self._save_position()

    # -- reading the stream -------------------------------------------------------------------

    async def _consume(self) -> None:
        """Read the stream into a bounded buffer while the previous batch is being stored, so
        whatever arrives during one store write is stored together in the next: under load
        the batches grow and the per-write cost is shared by more rows. While the store does
        not take rows, reading goes on until ``max_held_rows`` rows wait. Returns when the
        iteration ends; raises what it raised."""
        assert self.connection is not None
        messages = self.connection.messages()
        buffer: deque[StreamEvent] = deque()
        buffered_rows = 0
        wake = self.wake
        room = asyncio.Event()
        room.set()
        outcome: list[BaseException | None] = []
        policy = self.policy

        def paused() -> bool:
            return must_pause_reading(
                buffered_events=len(buffer),
                max_buffer=policy.max_buffer,
                held_rows=self.held_rows + buffered_rows,
                max_held_rows=policy.max_held_rows,
                stalled=self._stalled(),
            )

        async def read() -> None:
            nonlocal buffered_rows
            try:
                async for event in messages:
                    buffer.append(event)
                    if isinstance(event, Message):
                        buffered_rows += event.frame.height
                    else:
                        self.urgent.set()
                    wake.set()
                    while paused():  # backpressure: stop reading the stream
                        room.clear()
                        await wait_event(room, STALL_AFTER / 4)
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)
            finally:
                wake.set()

        reader = asyncio.create_task(read(), name="hubkit-stream-reader")
        try:
            while True:
                await self._wait_for_work()
                wake.clear()
                self.urgent.clear()
                self._reap_write()
                events: list[StreamEvent] = []
                if not must_pause(self.held_rows, policy.max_held_rows):
                    events = list(buffer)
                    buffer.clear()
                    buffered_rows = 0
                    room.set()
                if events:
                    await self._handle(events)
                self._start_write()
                if outcome and not buffer:
                    error = outcome[0]
                    if error is not None:
                        raise error
                    return
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _wait_for_work(self) -> None:
        """Until the write in flight ends (what arrived meanwhile is then handled together, so
        under load batches grow) or stalls; then until events arrive, a write ends, or a
        failed write is due again."""
        writer, started = self.writer, self.write_started
        if writer is not None and started is not None and not self._stalled():
            # a reconnect or a lost frame is handled at once: its backfill must reach back
            left = STALL_AFTER - (time.monotonic() - started)
            if not self.urgent.is_set():
                urgent = asyncio.ensure_future(self.urgent.wait())
                await asyncio.wait(
                    [writer, urgent], timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED
                )
                urgent.cancel()
            return
        if self.wake.is_set():
            return
        timeout = None
        if self.retry_at is not None and self.writer is None:
            timeout = max(0.0, self.retry_at - time.monotonic())
        await wait_event(self.wake, timeout)

    async def _handle(self, events: Sequence[StreamEvent]) -> None:
        """Queue a run of stream events for the store in order: consecutive messages as one
        batch; a reconnect or a lost frame backfills the rows that may be missing."""
        ctx = self.ctx
        frames: list[pl.DataFrame] = []
        for event in events:
            if isinstance(event, Reconnected):
                self._hold(frames)
                frames = []
                ctx.note_reconnect()
                await self.fill(event.down_since)
                self.origin = _now()
                continue
            if isinstance(event, FrameLost):
                self._hold(frames)
                frames = []
                self.losses = note_loss(
                    self.losses,
                    event.topic,
                    self.seen,
                    partition=self.partition,
                    origin=self.origin,
                )
                continue
            try:
                if event.kind == "delta" and self.policy.merge_deltas:
                    self._hold(frames)  # a delta merges into the rows stored before it
                    frames = []
                    await self._drain()
                    self._hold([self.spec.to_frame(await self._merge_delta(event.frame))])
                    await self._drain()
                else:
                    frames.append(self.spec.to_frame(event.frame))
            except (DecodeError, ValidationError) as exc:
                ctx.report_error(exc)  # a malformed message: nothing of it is stored
        self._hold(frames)
        if self.losses is not None:
            await self._fill_losses()

    async def _fill_losses(self) -> None:
        """Backfill the partitions lost frames concerned, from where each stood."""
        losses, self.losses = self.losses, None
        assert losses is not None
        await self.fill(
            losses.origin,
            positions=losses.known_positions(),
            only=losses.only,
            what=f"{losses.count} frame(s) that did not decode",
        )

    async def _merge_delta(self, delta: pl.DataFrame) -> pl.DataFrame:
        """Fill the fields a delta leaves out (missing or null) from the current local row."""
        if delta.height == 0:
            return delta
        schema = self.spec.schema
        key = list(self.key)
        delta = delta.with_columns(
            pl.col(c).cast(schema[c], strict=False) for c in delta.columns if c in schema
        )
        current = await self.ctx.rows(delta.select(key))
        if current.height == 0:
            return delta
        current = current.rename({c: f"{c}__old" for c in current.columns if c not in key})
        joined = delta.join(current, on=key, how="left", nulls_equal=True)
        merged = []
        for name in schema:
            if name in key:
                merged.append(pl.col(name))
            elif name in delta.columns:
                merged.append(pl.coalesce(pl.col(name), pl.col(f"{name}__old")).alias(name))
            else:
                merged.append(pl.col(f"{name}__old").alias(name))
        return joined.select(merged)

    def can_backfill(self) -> bool:
        policy = self.policy
        if policy.backfill is not None or policy.rest is not None:
            return True
        if not policy.stream_fetch or self.ctx.connection is None:
            return False
        # a stream whose fetch goes to a REST connection it does not have cannot backfill
        return getattr(self.ctx.connection, "rest", _NO_REST) is not None

    async def _fetch_backfill(self, since: datetime) -> pl.DataFrame:
        policy = self.policy
        if policy.backfill is not None:
            return await policy.backfill(self.ctx, since)
        params = dict(policy.rest_params or {})
        if policy.since_param is not None:
            params[policy.since_param] = _ms(since)
        if policy.rest is None:
            return await _connection(self.ctx).fetch(self.spec, params)
        if not policy.rest.is_connected:
            await policy.rest.connect()
            self.rest_connected = True
        return await policy.rest.fetch(self.spec, params)

    async def fill(
        self,
        down_since: datetime,
        *,
        report_gap: bool = True,
        positions: Mapping[str, StreamPosition] | None = None,
        only: frozenset[str] | None = None,
        what: str = "the stream went down",
    ) -> None:
        """Backfill after an outage that began at ``down_since`` (or lost frames); emit a GAP
        per partition that the backfill cannot prove continuous. ``positions``: where the
        partitions stood (default: where the received rows end); ``only``: the partitions
        concerned (default: all)."""
        ctx, policy = self.ctx, self.policy
        now = _now()
        stood = dict(self.seen if positions is None else positions)
        if only is not None:
            stood = {name: p for name, p in stood.items() if name in only}
        known = [p.time for p in stood.values() if p.time is not None]
        since = min([*known, down_since]) if known else down_since
        if not self.can_backfill():
            if report_gap:
                await ctx.emit_gap(
                    Gap(
                        start=since,
                        end=max(since, now),
                        reason=f"{what}; no backfill is configured",
                    )
                )
            return
        try:
            backfill = self.spec.to_frame(await self._fetch_backfill(since))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.report_error(exc)
            if report_gap:
                await ctx.emit_gap(
                    Gap(
                        start=since,
                        end=max(since, now),
                        reason=f"{what}; the backfill failed: {exc}",
                    )
                )
            return
        if only is not None:
            parts = split_partitions(backfill, self.partition)
            kept = [frame for name, frame in parts.items() if name in only]
            backfill = pl.concat(kept, how="vertical") if kept else backfill.clear()
        plan = plan_partitioned_gap_fill(
            backfill,
            key=self.key,
            time_column=self.time_column,
            partition=self.partition,
            positions=stood,
            down_since=down_since,
            now=now,
            complete=policy.backfill_complete,
        )
        rows = self.recent.fresh(plan.rows, remember=False)
        rows = await self._drop_stored(rows)
        self._hold([rows], cursor_now=True)
        self._start_write()
        # the remote answered: what it has is stored (a GAP says what it could not prove),
        # unless the store refuses writes for now
        if self.retry_at is None:
            ctx.set_status(SyncStatus.REMOTE_DATA_RECEIVED)
        if report_gap:
            for gap in plan.gaps:
                await ctx.emit_gap(gap)

    async def _drop_stored(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rows whose stored version is identical are not applied again (no REMOTE event)."""
        if rows.height == 0:
            return rows
        try:
            stored = await self.ctx.rows(rows.select(list(self.key)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storing them again is harmless (an upsert)
            _log.debug("reading stored rows before a backfill failed: %s", exc)
            return rows
        if stored.height == 0:
            return rows
        stored = stored.select(rows.columns)
        known = set(stored.iter_rows())
        keep = [row not in known for row in rows.iter_rows()]
        return rows.filter(pl.Series(keep, dtype=pl.Boolean))


class _NoRest:
    """A connection without a ``rest`` attribute fetches by itself."""


_NO_REST = _NoRest()
