"""Sync policies: when and what a sink syncs. Plain frozen dataclasses, one small protocol.

Pick one and pass it to ``open_sink(..., policy=...)``::

    QueryOnInit()                                  # fetch everything once at start
    PeriodicSync(interval=timedelta(minutes=5))    # fetch at start, then every interval
    WebSocketSubscription(topics=["publicTrade.BTCUSDT"], rest=rest_conn,
                          since_param="start")     # stream; backfill gaps over REST
    PushAfterWrite(push_delay=timedelta(0))        # push local writes from the outbox
    Bidirectional(interval=timedelta(minutes=1), resolver=remote_wins)  # push, then pull

The protocol (``hubkit.SyncPolicy``) is two coroutines: ``run(ctx)`` lives as long as the sink
(it is cancelled on close and restarted by ``reconnect()``); ``sync_once(ctx)`` performs one
sync now and is what ``force_sync()``/``schedule_sync()`` call. A policy works only through its
``SyncContext`` (``ctx.connection``, ``ctx.apply_remote``, ``ctx.pending``, ...). Optional
extras: ``pushes_local_writes = True`` makes the sink's DAO write outbox entries with each
local write; ``async start(ctx)`` runs before ``open_sink`` returns (a failure there fails the
open); ``async flush(ctx)`` is called once, with a time limit, when the sink closes.

A custom policy needs no base class. This one fetches on start and after every local write::

    from hubkit.types import SyncContext, SyncStatus

    @dataclass(frozen=True)
    class FetchOnWrite:
        params: Mapping[str, Any] | None = None

        async def run(self, ctx: SyncContext) -> None:
            while True:
                try:
                    await self.sync_once(ctx)
                except Exception as exc:        # report and keep going
                    ctx.set_status(SyncStatus.OUT_OF_SYNC)
                    ctx.report_error(exc)
                await ctx.wait_for_request(None)   # a local write wakes us

        async def sync_once(self, ctx: SyncContext) -> None:
            assert ctx.connection is not None
            frame = await ctx.connection.fetch(ctx.spec, self.params)
            await ctx.apply_remote(frame)       # store + cache + REMOTE change, off the loop
            ctx.set_status(SyncStatus.FULL_SYNC)

    sink = hubkit.open_sink(Item, "id", store=path, connection=conn, policy=FetchOnWrite())

Rules the built-in policies follow (and a custom one should):

- errors inside ``run`` go to ``ctx.report_error`` and the policy keeps going with a backoff;
  errors inside ``sync_once`` propagate (``force_sync`` raises them to its caller);
- a step that must not overlap a forced sync runs inside ``ctx.exclusive()`` when the context
  offers it (the sink's does; see ``SinkContext``);
- decisions are pure functions (``plan_pull``, ``backoff_delay``, ``hubkit.gapfill``), so they
  are tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import polars as pl

from hubkit.errors import (
    DecodeError,
    HubkitError,
    Rejected,
    RemoteError,
    SyncError,
    ValidationError,
)
from hubkit.gapfill import (
    RecentRows,
    StreamPosition,
    partition_positions,
    plan_partitioned_gap_fill,
    positions_from_cursor,
    positions_to_cursor,
)
from hubkit.types import (
    Connection,
    Gap,
    OutboxEntry,
    Reconnected,
    StreamEvent,
    StreamingConnection,
    SyncContext,
    SyncStatus,
)
from hubkit.writes import idempotency_key, takes_idempotency_key

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = [
    "Backfill",
    "Bidirectional",
    "Conflict",
    "PeriodicSync",
    "PullPlan",
    "PushAfterWrite",
    "QueryOnInit",
    "Resolver",
    "SinkContext",
    "WebSocketSubscription",
    "backoff_delay",
    "local_wins",
    "plan_pull",
    "push_pending",
    "remote_wins",
]

_log = logging.getLogger("hubkit.policies")

# A stream's cursor is committed with its rows at most this often (seconds).
_CURSOR_EVERY = 1.0

Row = Mapping[str, Any]

Resolver = Callable[[Row | None, Row], Row | None]
"""``resolver(local_row, remote_row) -> row``: settle a key changed on both sides.

``local_row`` is the local row with its unpushed writes (None if deleted locally),
``remote_row`` what the remote has now. Return the row to keep: the remote row (the local
writes are dropped and reported as rejected), the local row (it is pushed), or a new row
(it is stored and pushed). Returning None keeps the local side."""

Backfill = Callable[[SyncContext, datetime], Awaitable[pl.DataFrame]]
"""``async backfill(ctx, since) -> frame``: rows the remote has from ``since`` (UTC) on."""


def remote_wins(local: Row | None, remote: Row) -> Row:
    """The default conflict resolver: the remote row is kept."""
    return remote


def local_wins(local: Row | None, remote: Row) -> Row | None:
    """A conflict resolver that keeps the local side (it is pushed over the remote row)."""
    return local


@runtime_checkable
class SinkContext(SyncContext, Protocol):
    """The extra services a sink offers its policy beyond ``SyncContext``.

    The built-in policies use them when present and degrade gracefully without them, so a
    test can drive a policy with a minimal fake ``SyncContext``.
    """

    def exclusive(self) -> AbstractAsyncContextManager[Any]:
        """Held around a sync step; ``force_sync``/``schedule_sync``/close take it too."""
        ...

    async def ensure_connected(self) -> bool:
        """Connect the sink's connection if it is not connected (True if it had to)."""
        ...

    async def rows(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The current local rows for the key columns of ``keys`` (absent keys are missing)."""
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

    def note_reconnect(self) -> None:
        """Count a reconnect the connection made by itself (shown in ``status().reconnects``)."""
        ...


# -- small shared helpers --------------------------------------------------------------------


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``,
    at most ``cap``; 0 for ``attempt <= 0``."""
    if attempt <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(attempt - 1, 30)))


def _exclusive(ctx: SyncContext) -> AbstractAsyncContextManager[Any]:
    if isinstance(ctx, SinkContext):
        return ctx.exclusive()
    return contextlib.nullcontext()


def _connection(ctx: SyncContext) -> Connection:
    connection = ctx.connection
    if connection is None:
        raise SyncError("this policy needs a connection; open the sink with connection=...")
    return connection


def _streaming(ctx: SyncContext) -> StreamingConnection:
    connection = _connection(ctx)
    if not isinstance(connection, StreamingConnection):
        raise SyncError(
            f"WebSocketSubscription needs a streaming connection, not {type(connection)!r}"
        )
    return connection


async def _ensure_connected(ctx: SyncContext) -> Connection:
    connection = _connection(ctx)
    if isinstance(ctx, SinkContext):
        await ctx.ensure_connected()
    elif not connection.is_connected:
        await connection.connect()
    return connection


def _as_hubkit(exc: BaseException) -> HubkitError:
    if isinstance(exc, HubkitError):
        return exc
    error = SyncError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _now() -> datetime:
    return datetime.now(UTC)


async def _fetch_and_apply(ctx: SyncContext, params: Mapping[str, Any] | None) -> int:
    connection = await _ensure_connected(ctx)
    frame = await connection.fetch(ctx.spec, params)
    written = await ctx.apply_remote(frame)
    return written.height


async def _pull_until_done(
    ctx: SyncContext, step: Callable[[], Awaitable[None]], base: float, cap: float
) -> None:
    """Run ``step`` until it succeeds once, reporting failures and backing off."""
    attempt = 0
    while True:
        try:
            async with _exclusive(ctx):
                await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempt += 1
            ctx.set_status(SyncStatus.OUT_OF_SYNC)
            ctx.report_error(exc)
            await asyncio.sleep(backoff_delay(attempt, base=base, cap=max(base, cap)))


# -- QueryOnInit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryOnInit:
    """Fetch everything once when the sink starts (``connection.fetch(spec, params)``).

    A failed fetch is reported and retried after ``retry_interval``, doubling up to
    ``max_retry_interval``, until one succeeds; after that the policy is idle.
    ``force_sync()`` fetches again. Status: ``FULL_SYNC`` after the fetch.
    """

    params: Mapping[str, Any] | None = None
    retry_interval: timedelta | float = timedelta(seconds=0.5)
    max_retry_interval: timedelta | float = timedelta(seconds=30)

    pushes_local_writes: ClassVar[bool] = False

    async def run(self, ctx: SyncContext) -> None:
        await _pull_until_done(
            ctx,
            lambda: self.sync_once(ctx),
            _seconds(self.retry_interval),
            _seconds(self.max_retry_interval),
        )

    async def sync_once(self, ctx: SyncContext) -> None:
        await _fetch_and_apply(ctx, self.params)
        ctx.set_status(SyncStatus.FULL_SYNC)


# -- PeriodicSync ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicSync:
    """Fetch every ``interval`` (and at start when ``query_on_init``), REST or JSON-RPC alike.

    ``params`` are passed to ``connection.fetch``. A failed fetch is reported and retried
    after a backoff that starts at 0.5 s and never exceeds ``interval``; the regular rhythm
    resumes after a success. ``schedule_sync()`` runs an extra fetch right away.
    Status: ``FULL_SYNC`` after each successful fetch, ``OUT_OF_SYNC`` after a failure.
    """

    interval: timedelta | float = timedelta(minutes=5)
    query_on_init: bool = True
    params: Mapping[str, Any] | None = None

    pushes_local_writes: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if _seconds(self.interval) <= 0:
            raise ValueError("PeriodicSync.interval must be positive")

    async def run(self, ctx: SyncContext) -> None:
        interval = _seconds(self.interval)
        delay = 0.0 if self.query_on_init else interval
        failures = 0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with _exclusive(ctx):
                    await self.sync_once(ctx)
                failures = 0
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                ctx.set_status(SyncStatus.OUT_OF_SYNC)
                ctx.report_error(exc)
                delay = backoff_delay(failures, cap=interval)

    async def sync_once(self, ctx: SyncContext) -> None:
        await _fetch_and_apply(ctx, self.params)
        ctx.set_status(SyncStatus.FULL_SYNC)


# -- PushAfterWrite --------------------------------------------------------------------------


class _Pusher:
    """Sends outbox entries through one connection, each with its idempotency key.

    Whether each verb takes ``idempotency_key`` is read once per push round (a connection
    written before the keyword existed is called without it)."""

    def __init__(self, connection: Connection, spec: EntitySpec, sink: str) -> None:
        self.connection = connection
        self.spec = spec
        self.sink = sink
        self.keyed = {
            verb: takes_idempotency_key(getattr(connection, verb))
            for verb in ("create", "update", "remove")
        }

    def _options(self, verb: str, entry: OutboxEntry) -> dict[str, Any]:
        if not self.keyed[verb]:
            return {}
        return {"idempotency_key": idempotency_key(self.sink, entry)}

    async def push(self, entry: OutboxEntry) -> Row | None:
        connection, spec = self.connection, self.spec
        if entry.op == "remove":
            key = dict(zip(spec.key, entry.key, strict=True))
            await connection.remove(spec, key, **self._options("remove", entry))
            return None
        if entry.payload is None:
            raise SyncError(f"outbox entry {entry.id} ({entry.op}) has no payload")
        if entry.op == "create":
            return await connection.create(spec, entry.payload, **self._options("create", entry))
        if entry.op == "update":
            return await connection.update(spec, entry.payload, **self._options("update", entry))
        raise SyncError(f"outbox entry {entry.id} has an unknown op {entry.op!r}")


def _is_temporary(exc: BaseException) -> bool:
    """Whether pushing again can help. Unknown failures count as temporary: a local write is
    never rolled back because of an error that does not say the remote refused it."""
    if isinstance(exc, RemoteError):
        return exc.temporary
    return not isinstance(exc, Rejected)


@dataclass(frozen=True)
class PushOutcome:
    """What one push round did: entries pushed, rejected, and the error that stopped it."""

    pushed: int = 0
    rejected: int = 0
    error: HubkitError | None = None  # a temporary failure: the rest waits for a retry

    @property
    def complete(self) -> bool:
        return self.error is None


async def push_pending(ctx: SyncContext, *, max_attempts: int | None = None) -> PushOutcome:
    """Push the sink's outbox once, oldest entry first.

    A success acknowledges the entry; a permanent refusal (``Rejected``, or any
    ``RemoteError`` with ``temporary`` False) rejects it, which rolls the local row back and
    emits a REJECTED change; a temporary failure counts an attempt and stops the round so the
    order is kept (after ``max_attempts`` attempts the entry is rejected instead). Never
    raises for a push failure: the outcome says what happened.

    Each entry goes out with ``idempotency_key=hubkit.writes.idempotency_key(sink name,
    entry)`` when the connection's verb accepts that keyword (see ``PushAfterWrite``).
    """
    connection = await _ensure_connected(ctx)
    entries = await ctx.pending()
    if not entries:
        return PushOutcome()
    sink = getattr(ctx, "name", None)
    pusher = _Pusher(connection, ctx.spec, sink if isinstance(sink, str) else ctx.spec.table)
    pushed = rejected = 0
    refused_keys: set[tuple[Any, ...]] = set()
    for entry in entries:
        if entry.key in refused_keys:
            continue  # rejected together with an earlier write to the same key
        try:
            response = await pusher.push(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _as_hubkit(exc)
            attempts = entry.attempts + 1
            if _is_temporary(exc) and (max_attempts is None or attempts < max_attempts):
                if isinstance(ctx, SinkContext):
                    await ctx.bump([entry])
                return PushOutcome(pushed, rejected, error)
            if _is_temporary(exc):
                refusal: HubkitError = Rejected(f"gave up after {attempts} attempts: {error}")
                refusal.__cause__ = error
            else:
                refusal = error
            await ctx.reject(entry, refusal)
            refused_keys.add(entry.key)
            rejected += 1
            continue
        await ctx.acknowledge(entry, response)
        pushed += 1
    return PushOutcome(pushed, rejected, None)


@dataclass(frozen=True)
class PushAfterWrite:
    """Push local writes to the remote, in order, from the sink's durable outbox.

    Each ``sink.dao`` write commits its outbox entries in the same transaction as the rows,
    so a write survives a crash and is pushed after the next open. After a write the policy
    waits ``push_delay`` (to batch bursts), then pushes every pending entry in order with
    ``connection.create``/``update``/``remove``. Temporary errors (``RemoteError.temporary``)
    are retried after ``retry_interval``, doubling up to ``max_retry_interval``, and right
    after a reconnect; permanent ones (``Rejected``) reject the write: the local row is rolled
    back and a REJECTED change says why. ``max_attempts`` (None = forever) turns a write that
    keeps failing temporarily into a rejection. ``sink.status().pending_pushes`` counts the
    entries waiting; each write's ``WriteResult`` resolves when it is pushed.
    Status: ``LOCAL_DATA_PUSHED`` when the outbox is empty, ``OUT_OF_SYNC`` while it is not.

    Delivery: an entry leaves the outbox only once the remote answered its push, so a write
    whose answer was lost (a timeout, a dropped connection, the process killed between
    sending and recording) is pushed again, after a restart too. Every try carries the same
    ``idempotency_key`` (``"<sink name>:<outbox id>:<created µs>"``, see
    ``hubkit.writes.idempotency_key``; ``HttpConnection`` sends it as the ``Idempotency-Key``
    header, ``JsonRpcConnection`` as the request ``id``). So each write is applied **exactly
    once** provided the remote honours the key: it applies a key once and answers a repeat
    with the first result without applying it again. A remote that ignores the key, or a
    connection whose ``create``/``update``/``remove`` do not accept ``idempotency_key`` (it
    is then not passed), gets every write **at least once**.
    """

    push_delay: timedelta | float = timedelta(0)
    retry_interval: timedelta | float = timedelta(seconds=1)
    max_retry_interval: timedelta | float = timedelta(seconds=60)
    max_attempts: int | None = None

    pushes_local_writes: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def _retry_delay(self, failures: int) -> float:
        base = _seconds(self.retry_interval)
        return backoff_delay(failures, base=base, cap=max(base, _seconds(self.max_retry_interval)))

    async def _round(self, ctx: SyncContext) -> PushOutcome:
        async with _exclusive(ctx):
            outcome = await push_pending(ctx, max_attempts=self.max_attempts)
        if outcome.complete:
            ctx.set_status(SyncStatus.LOCAL_DATA_PUSHED)
        else:
            ctx.set_status(SyncStatus.OUT_OF_SYNC)
        return outcome

    async def run(self, ctx: SyncContext) -> None:
        await _push_loop(ctx, self._round, self._retry_delay, _seconds(self.push_delay))

    async def sync_once(self, ctx: SyncContext) -> None:
        outcome = await push_pending(ctx, max_attempts=self.max_attempts)
        if outcome.error is not None:
            ctx.set_status(SyncStatus.OUT_OF_SYNC)
            raise outcome.error
        ctx.set_status(SyncStatus.LOCAL_DATA_PUSHED)

    async def flush(self, ctx: SyncContext) -> None:
        """One push round without retries (the sink calls it on close, with a time limit)."""
        await push_pending(ctx, max_attempts=self.max_attempts)


async def _push_loop(
    ctx: SyncContext,
    push_round: Callable[[SyncContext], Awaitable[PushOutcome]],
    retry_delay: Callable[[int], float],
    push_delay: float,
) -> None:
    """Push at start, after each request (a local write, a reconnect) and on retry timers."""
    failures = 0
    requested = True  # the outbox may hold writes from an earlier session
    while True:
        if requested:
            if push_delay > 0:
                await asyncio.sleep(push_delay)
            try:
                outcome = await push_round(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. reconnect failed or the store is locked
                outcome = PushOutcome(error=_as_hubkit(exc))
            if outcome.error is None:
                failures = 0
            else:
                failures += 1
                ctx.report_error(outcome.error)
        if failures:
            # a failing remote is retried on the timer only: writes made meanwhile wait too
            await asyncio.sleep(retry_delay(failures))
            requested = True
        else:
            requested = await ctx.wait_for_request(None)


# -- Bidirectional ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """A key with unpushed local writes that the remote changed too, and its resolution."""

    entries: tuple[OutboxEntry, ...]
    local: dict[str, Any] | None
    remote: dict[str, Any]
    resolved: dict[str, Any]


@dataclass(frozen=True)
class PullPlan:
    """What to do with a fetched remote frame while local writes are pending.

    ``apply``: remote rows to store as they are. ``keep_local``: keys whose pending local
    writes stay queued (the remote row is not applied). ``remote_won``: conflicts settled in
    the remote's favour (drop the local writes, store the remote row, report REJECTED).
    ``merged``: conflicts settled with a new row (store it, push it instead of the writes).
    """

    apply: pl.DataFrame
    keep_local: tuple[tuple[Any, ...], ...] = ()
    remote_won: tuple[Conflict, ...] = ()
    merged: tuple[Conflict, ...] = ()


def _normalise(spec: EntitySpec, row: Row | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    return spec.to_frame([dict(row)]).row(0)


def plan_pull(
    spec: EntitySpec,
    remote: pl.DataFrame,
    pending: Sequence[OutboxEntry],
    local: pl.DataFrame,
    resolver: Resolver = remote_wins,
) -> PullPlan:
    """Decide how a pulled ``remote`` frame meets pending local writes (a pure function).

    ``pending`` are the outbox entries (oldest first), ``local`` the current local rows of
    their keys. For each key with pending writes (``before`` = the row before the first of
    them, ``L`` = local row now, ``R`` = remote row):

    - no ``R`` in the pull, ``R == L``, or ``R == before`` (the remote did not change it):
      no conflict, the local writes stay queued;
    - otherwise a conflict: ``resolver(L, R)``; ``R`` -> remote won, ``L`` or None -> keep
      local, anything else -> merged.

    Rows are compared after normalising through the entity's schema.
    """
    key = list(spec.key)
    by_key: dict[tuple[Any, ...], list[OutboxEntry]] = {}
    for entry in pending:
        by_key.setdefault(tuple(entry.key), []).append(entry)
    if not by_key:
        return PullPlan(apply=remote)
    key_positions = [remote.columns.index(k) for k in key] if remote.height else []
    local_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in local.iter_rows(named=True):
        local_rows[tuple(row[k] for k in key)] = row
    keep_mask: list[bool] = []
    keep_local: list[tuple[Any, ...]] = []
    remote_won: list[Conflict] = []
    merged: list[Conflict] = []
    for values, remote_row in zip(remote.iter_rows(), remote.iter_rows(named=True), strict=True):
        row_key = tuple(values[p] for p in key_positions)
        entries = _entries_for(by_key, row_key)
        if entries is None:
            keep_mask.append(True)
            continue
        keep_mask.append(False)
        local_row = local_rows.get(row_key)
        remote_norm = values
        if remote_norm == _normalise(spec, local_row) or remote_norm == _normalise(
            spec, entries[0].before
        ):
            keep_local.append(row_key)
            continue
        resolved = resolver(local_row, remote_row)
        resolved_norm = _normalise(spec, resolved)
        if resolved is None or resolved_norm == _normalise(spec, local_row):
            keep_local.append(row_key)
            continue
        conflict = Conflict(
            entries=tuple(entries),
            local=local_row,
            remote=remote_row,
            resolved=dict(resolved),
        )
        if resolved_norm == remote_norm:
            remote_won.append(conflict)
        else:
            merged.append(conflict)
    apply = remote.filter(pl.Series(keep_mask, dtype=pl.Boolean)) if remote.height else remote
    return PullPlan(
        apply=apply,
        keep_local=tuple(keep_local),
        remote_won=tuple(remote_won),
        merged=tuple(merged),
    )


def _entries_for(
    by_key: Mapping[tuple[Any, ...], list[OutboxEntry]], row_key: tuple[Any, ...]
) -> list[OutboxEntry] | None:
    found = by_key.get(row_key)
    if found is not None:
        return found
    # outbox keys may come back from the store as text (e.g. a datetime key): compare as text
    text_key = tuple(str(v) for v in row_key)
    for entry_key, entries in by_key.items():
        if tuple(str(v) for v in entry_key) == text_key:
            return entries
    return None


@dataclass(frozen=True)
class Bidirectional:
    """Push local writes, then pull remote rows; every ``interval`` and after local writes.

    A local write wakes the policy to push (after ``push_delay``); every ``interval`` it
    pushes and then fetches (``params``). A key changed locally (a write still in the outbox)
    and remotely is a conflict settled by ``resolver(local_row, remote_row)`` (default
    ``remote_wins``; see ``Resolver`` and ``plan_pull``). Temporary push errors are retried
    as in ``PushAfterWrite``. Status: ``FULL_SYNC`` after a push and pull that both completed.
    """

    interval: timedelta | float = timedelta(minutes=1)
    resolver: Resolver = field(default=remote_wins)
    params: Mapping[str, Any] | None = None
    push_delay: timedelta | float = timedelta(0)
    retry_interval: timedelta | float = timedelta(seconds=1)
    max_attempts: int | None = None

    pushes_local_writes: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if _seconds(self.interval) <= 0:
            raise ValueError("Bidirectional.interval must be positive")

    async def run(self, ctx: SyncContext) -> None:
        interval = _seconds(self.interval)
        base = _seconds(self.retry_interval)
        push_delay = _seconds(self.push_delay)
        loop = asyncio.get_running_loop()
        next_pull = loop.time()  # push and pull at start
        failures = 0
        requested = False
        pulled = False  # the last pull succeeded: a completed push then means FULL_SYNC
        while True:
            pull = failures > 0 or loop.time() >= next_pull
            if requested and not pull and push_delay > 0:
                await asyncio.sleep(push_delay)
            try:
                async with _exclusive(ctx):
                    if pull:
                        await self.sync_once(ctx)
                    else:
                        outcome = await push_pending(ctx, max_attempts=self.max_attempts)
                        if outcome.error is not None:
                            raise outcome.error
                        ctx.set_status(
                            SyncStatus.FULL_SYNC if pulled else SyncStatus.LOCAL_DATA_PUSHED
                        )
                failures = 0
                if pull:
                    pulled = True
                    next_pull = loop.time() + interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pulled = False
                failures += 1
                ctx.set_status(SyncStatus.OUT_OF_SYNC)
                ctx.report_error(exc)
            if failures:
                # a failing remote is retried on the timer only: writes made meanwhile wait
                await asyncio.sleep(backoff_delay(failures, base=base, cap=max(base, interval)))
                requested = False
            else:
                requested = await ctx.wait_for_request(max(0.0, next_pull - loop.time()))

    async def sync_once(self, ctx: SyncContext) -> None:
        """Push the outbox, then fetch and apply remote rows, settling conflicts."""
        try:
            outcome = await push_pending(ctx, max_attempts=self.max_attempts)
            connection = await _ensure_connected(ctx)
            remote = ctx.spec.to_frame(await connection.fetch(ctx.spec, self.params))
            pending = await ctx.pending()
            local = ctx.spec.to_frame([])
            if pending and isinstance(ctx, SinkContext):
                keys = _keys_frame(ctx.spec, [e.key for e in pending])
                local = await ctx.rows(keys)
            plan = plan_pull(ctx.spec, remote, pending, local, self.resolver)
            await ctx.apply_remote(plan.apply)
            if isinstance(ctx, SinkContext):
                for conflict in plan.remote_won:
                    await ctx.supersede(
                        conflict.entries,
                        ctx.spec.to_frame([conflict.resolved]),
                        push=False,
                        reason="conflict: the remote changed this row too and its version won",
                    )
                for conflict in plan.merged:
                    await ctx.supersede(
                        conflict.entries,
                        ctx.spec.to_frame([conflict.resolved]),
                        push=True,
                        reason="conflict: local and remote versions were merged",
                    )
            if plan.merged or (outcome.error is not None and plan.remote_won):
                # merged rows wait to be pushed; a conflict may have cleared a blocked entry
                outcome = await push_pending(ctx, max_attempts=self.max_attempts)
        except Exception:
            ctx.set_status(SyncStatus.OUT_OF_SYNC)
            raise
        if outcome.error is not None:
            ctx.set_status(SyncStatus.REMOTE_DATA_RECEIVED)
            raise outcome.error
        ctx.set_status(SyncStatus.FULL_SYNC)

    async def flush(self, ctx: SyncContext) -> None:
        """One push round without retries (the sink calls it on close, with a time limit)."""
        await push_pending(ctx, max_attempts=self.max_attempts)


def _keys_frame(spec: EntitySpec, keys: Sequence[Sequence[Any]]) -> pl.DataFrame:
    schema = spec.schema
    columns = {
        name: pl.Series(name, [k[i] for k in keys], dtype=schema[name], strict=False)
        for i, name in enumerate(spec.key)
    }
    return pl.DataFrame(columns)


# -- WebSocketSubscription -------------------------------------------------------------------


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

    Messages are read while the previous batch is being stored (at most ``max_buffer``
    waiting; beyond that the stream is not read, which lets the connection push back), and
    stored together: one transaction and one REMOTE change per batch. The cursor is
    committed with a batch at most once a second and when the policy stops.

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
        finally:
            await stream.close()


class _Stream:
    """The state of one run of a ``WebSocketSubscription``: positions, dedupe window, backoff."""

    def __init__(
        self,
        policy: WebSocketSubscription,
        ctx: SyncContext,
        connection: StreamingConnection | None,
    ) -> None:
        self.policy = policy
        self.ctx = ctx
        self.connection = connection
        self.spec = ctx.spec
        self.key = tuple(ctx.spec.key)
        self.time_column = _time_column(ctx.spec, policy.time_column)
        self.partition = policy.partition
        if self.partition is not None and self.partition not in ctx.spec.schema:
            raise SyncError(f"partition {self.partition!r} is not a column of {ctx.spec.table}")
        self.recent = RecentRows(self.key, policy.dedupe_window)
        self.positions: dict[str, StreamPosition] = {}
        self.rest_connected = False
        self._cursor_at = -_CURSOR_EVERY  # monotonic time of the last cursor commit
        self._unsaved = False  # positions moved since the last cursor commit

    async def close(self) -> None:
        if self.rest_connected and self.policy.rest is not None:
            self.rest_connected = False
            try:
                await self.policy.rest.disconnect()
            except Exception as exc:
                _log.debug("disconnecting the backfill connection failed: %s", exc)

    async def load_positions(self) -> None:
        self.positions = positions_from_cursor((await self.ctx.state()).cursor)

    @staticmethod
    def _newer(old: StreamPosition | None, new: StreamPosition) -> bool:
        return old is None or old.time is None or new.time is None or new.time >= old.time

    def _advance(self, found: Mapping[str, StreamPosition]) -> None:
        """Move positions forward (never back: a late message does not rewind them)."""
        for name, position in found.items():
            if self._newer(self.positions.get(name), position):
                self.positions[name] = position

    def _cursor_after(self, found: Mapping[str, StreamPosition]) -> str:
        merged = dict(self.positions)
        for name, position in found.items():
            if self._newer(merged.get(name), position):
                merged[name] = position
        return positions_to_cursor(merged)

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
                    # e.g. the store was locked or the connection gave up: rows may be lost,
                    # so backfill from the last stored position once we can
                    ctx.report_error(exc)
                    ctx.set_status(SyncStatus.OUT_OF_SYNC)
                    down_since = down_since or _now()
                    if not self.connection.is_connected:
                        subscribe = True
                    failures += 1
                await asyncio.sleep(backoff_delay(failures, cap=_seconds(policy.max_backoff)))
        finally:
            await self._save_position()

    async def _consume(self) -> None:
        """Read the stream into a bounded buffer while the previous batch is being stored, so
        whatever arrives during one store write is stored together in the next: under load
        the batches grow and the per-write cost is shared by more rows. Returns when the
        iteration ends; raises what it raised."""
        assert self.connection is not None
        messages = self.connection.messages()
        buffer: deque[StreamEvent] = deque()
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()
        outcome: list[BaseException | None] = []
        limit = self.policy.max_buffer

        async def read() -> None:
            try:
                async for event in messages:
                    buffer.append(event)
                    ready.set()
                    if len(buffer) >= limit:  # backpressure: stop reading the stream
                        room.clear()
                        await room.wait()
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)
            finally:
                ready.set()

        reader = asyncio.create_task(read(), name="hubkit-stream-reader")
        try:
            while True:
                await ready.wait()
                ready.clear()
                events = list(buffer)
                buffer.clear()
                room.set()
                if events:
                    await self._handle(events)
                if outcome and not buffer:
                    error = outcome[0]
                    if error is not None:
                        raise error
                    return
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _handle(self, events: Sequence[StreamEvent]) -> None:
        """Store a run of stream events in order: consecutive messages as one batch."""
        ctx = self.ctx
        frames: list[pl.DataFrame] = []
        for event in events:
            if isinstance(event, Reconnected):
                await self._store(frames)
                frames = []
                if isinstance(ctx, SinkContext):
                    ctx.note_reconnect()
                await self.fill(event.down_since)
                continue
            try:
                if event.kind == "delta" and self.policy.merge_deltas:
                    await self._store(frames)  # a delta merges into the rows stored before it
                    frames = [self.spec.to_frame(await self._merge_delta(event.frame))]
                    await self._store(frames)
                    frames = []
                else:
                    frames.append(self.spec.to_frame(event.frame))
            except (DecodeError, ValidationError) as exc:
                ctx.report_error(exc)  # a malformed message: nothing of it is stored
        await self._store(frames)

    async def _store(self, frames: Sequence[pl.DataFrame]) -> None:
        if not frames:
            return
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
        fresh = self.recent.fresh(frame, remember=False)
        found = partition_positions(
            frame, key=self.key, time_column=self.time_column, partition=self.partition
        )
        if fresh.height:
            await self.ctx.apply_remote(fresh, cursor=self._cursor_if_due(found))
            self.recent.remember(fresh)
            self.ctx.set_status(SyncStatus.REMOTE_DATA_RECEIVED)
        elif found:
            self._unsaved = True
        self._advance(found)

    def _cursor_if_due(self, found: Mapping[str, StreamPosition]) -> str | None:
        """The cursor to commit with this batch, at most once per ``_CURSOR_EVERY`` seconds
        (a state write per message would double the cost of storing a stream); the last
        position is saved when the policy stops."""
        now = time.monotonic()
        if now - self._cursor_at < _CURSOR_EVERY:
            self._unsaved = True
            return None
        self._cursor_at = now
        self._unsaved = False
        return self._cursor_after(found)

    async def _save_position(self) -> None:
        if not self._unsaved or not self.positions:
            return
        self._unsaved = False
        try:
            await self.ctx.apply_remote(self.spec.to_frame([]), cursor=self._cursor_after({}))
        except Exception as exc:
            _log.debug("saving the stream position failed: %s", exc)

    async def _merge_delta(self, delta: pl.DataFrame) -> pl.DataFrame:
        """Fill the fields a delta leaves out (missing or null) from the current local row."""
        if not isinstance(self.ctx, SinkContext) or delta.height == 0:
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
        connection = self.ctx.connection
        return not ("rest" in dir(connection) and getattr(connection, "rest", None) is None)

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

    async def fill(self, down_since: datetime, *, report_gap: bool = True) -> None:
        """Backfill after an outage that began at ``down_since``; emit a GAP per partition
        that the backfill cannot prove continuous."""
        ctx, policy = self.ctx, self.policy
        now = _now()
        known = [p.time for p in self.positions.values() if p.time is not None]
        since = min([*known, down_since]) if known else down_since
        if not self.can_backfill():
            if report_gap:
                await ctx.emit_gap(
                    Gap(start=since, end=max(since, now), reason="no backfill is configured")
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
                    Gap(start=since, end=max(since, now), reason=f"the backfill failed: {exc}")
                )
            return
        plan = plan_partitioned_gap_fill(
            backfill,
            key=self.key,
            time_column=self.time_column,
            partition=self.partition,
            positions=self.positions,
            down_since=down_since,
            now=now,
            complete=policy.backfill_complete,
        )
        rows = self.recent.fresh(plan.rows, remember=False)
        rows = await self._drop_stored(rows)
        found = partition_positions(
            plan.rows, key=self.key, time_column=self.time_column, partition=self.partition
        )
        if rows.height:
            await ctx.apply_remote(rows, cursor=self._cursor_after(found))
            self._cursor_at = time.monotonic()
            self.recent.remember(rows)
            ctx.set_status(SyncStatus.REMOTE_DATA_RECEIVED)
        elif found:
            self._unsaved = True
        self._advance(found)
        if report_gap:
            for gap in plan.gaps:
                await ctx.emit_gap(gap)

    async def _drop_stored(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rows whose stored version is identical are not applied again (no REMOTE event)."""
        if rows.height == 0 or not isinstance(self.ctx, SinkContext):
            return rows
        stored = await self.ctx.rows(rows.select(list(self.key)))
        if stored.height == 0:
            return rows
        stored = stored.select(rows.columns)
        known = set(stored.iter_rows())
        keep = [row not in known for row in rows.iter_rows()]
        return rows.filter(pl.Series(keep, dtype=pl.Boolean))
