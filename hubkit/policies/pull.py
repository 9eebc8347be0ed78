"""Pull policies: ``QueryOnInit`` (fetch once at start) and ``PeriodicSync`` (fetch every
interval), REST or JSON-RPC alike."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from hubkit.errors import ParameterError
from hubkit.policies._common import (
    _ensure_connected,
    _pull_until_done,
    _seconds,
    backoff_delay,
)
from hubkit.types import SyncContext, SyncStatus

__all__ = ["PeriodicSync", "QueryOnInit"]

Snapshot = bool | Mapping[str, Any]


async def _fetch_and_apply(
    ctx: SyncContext, params: Mapping[str, Any] | None, snapshot: Snapshot = False
) -> int:
    connection = await _ensure_connected(ctx)
    frame = await connection.fetch(ctx.spec, params)
    written = await ctx.apply_remote(frame, snapshot=snapshot)
    return written.height


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
    waits_for_first_sync: ClassVar[bool] = True

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

    ``params`` are passed to ``connection.fetch``. ``snapshot``: each fetch returns every
    remote row (True), or every remote row whose columns have the given values (a mapping,
    e.g. ``{"category": ["linear"]}``); stored rows (of that scope) the fetch no longer holds
    are deleted in the same transaction as the fetched rows are stored. A failed fetch is
    reported and retried after a backoff that starts at 0.5 s and never exceeds ``interval``;
    the regular rhythm resumes after a success. ``schedule_sync()`` runs an extra fetch right away.
    Status: ``FULL_SYNC`` after each successful fetch, ``OUT_OF_SYNC`` after a failure.
    """

    interval: timedelta | float = timedelta(minutes=5)
    query_on_init: bool = True
    params: Mapping[str, Any] | None = None
    snapshot: Snapshot = False

    pushes_local_writes: ClassVar[bool] = False

    @property
    def waits_for_first_sync(self) -> bool:
        """Opening waits for the first fetch when there is one at start."""
        return self.query_on_init

    def __post_init__(self) -> None:
        if _seconds(self.interval) <= 0:
            raise ParameterError("PeriodicSync.interval must be positive")

    async def run(self, ctx: SyncContext) -> None:
        interval = _seconds(self.interval)
        delay = 0.0 if self.query_on_init else interval
        failures = 0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with ctx.exclusive():
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
        await _fetch_and_apply(ctx, self.params, self.snapshot)
        ctx.set_status(SyncStatus.FULL_SYNC)
