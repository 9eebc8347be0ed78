"""``Bidirectional``: push local writes, then pull and settle conflicts (``plan_pull``, a pure
function, decides how a pulled frame meets pending local writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from hubkit.errors import ParameterError
from hubkit.policies._common import (
    Resolver,
    Row,
    _ensure_connected,
    _keys_frame,
    _seconds,
    backoff_delay,
    remote_wins,
)
from hubkit.policies.push import push_pending
from hubkit.types import OutboxEntry, SyncContext, SyncStatus

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["Bidirectional", "Conflict", "PullPlan", "plan_pull"]


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
    waits_for_first_sync: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if _seconds(self.interval) <= 0:
            raise ParameterError("Bidirectional.interval must be positive")

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
                async with ctx.exclusive():
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
            if pending:
                keys = _keys_frame(ctx.spec, [e.key for e in pending])
                local = await ctx.rows(keys)
            plan = plan_pull(ctx.spec, remote, pending, local, self.resolver)
            await ctx.apply_remote(plan.apply)
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
