"""Pushing local writes from the durable outbox: ``push_pending`` (one round) and the
``PushAfterWrite`` policy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from hubkit.errors import HubkitError, ParameterError, Rejected, RemoteError, SyncError, as_hubkit
from hubkit.policies._common import Row, _ensure_connected, _seconds, backoff_delay
from hubkit.types import Connection, OutboxEntry, SyncContext, SyncStatus
from hubkit.writes import idempotency_key, takes_idempotency_key

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["PushAfterWrite", "PushOutcome", "push_pending"]


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
    pusher = _Pusher(connection, ctx.spec, ctx.name)
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
            error = as_hubkit(exc)
            attempts = entry.attempts + 1
            if _is_temporary(exc) and (max_attempts is None or attempts < max_attempts):
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
            raise ParameterError("max_attempts must be at least 1 (or None)")

    def _retry_delay(self, failures: int) -> float:
        base = _seconds(self.retry_interval)
        return backoff_delay(failures, base=base, cap=max(base, _seconds(self.max_retry_interval)))

    async def _round(self, ctx: SyncContext) -> PushOutcome:
        async with ctx.exclusive():
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
                outcome = PushOutcome(error=as_hubkit(exc))
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
