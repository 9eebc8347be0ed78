"""Sync policies: when and what a sink syncs. Plain frozen dataclasses, one small protocol.

Pick one and pass it to ``open_sink(..., policy=...)``::

    QueryOnInit()                                  # fetch everything once at start
    PeriodicSync(interval=timedelta(minutes=5))    # fetch at start, then every interval
    WebSocketSubscription(topics=["publicTrade.BTCUSDT"], rest=rest_conn,
                          since_param="start")     # stream; backfill gaps over REST
    PushAfterWrite(push_delay=timedelta(0))        # push local writes from the outbox
    Bidirectional(interval=timedelta(minutes=1), resolver=remote_wins)  # push, then pull
    Follow()                                       # follow other processes' commits to the store

The protocol (``hubkit.SyncPolicy``) is two coroutines: ``run(ctx)`` lives as long as the sink
(it is cancelled on close and restarted by ``reconnect()``); ``sync_once(ctx)`` performs one
sync now and is what ``force_sync()``/``schedule_sync()`` call. A policy works only through its
``SyncContext`` (``ctx.connection``, ``ctx.apply_remote``, ``ctx.pending``, ...). Optional
extras: ``pushes_local_writes = True`` makes the sink's DAO write outbox entries with each
local write; ``waits_for_first_sync = True`` makes ``open_sink`` wait for the first sync;
``async start(ctx)`` runs before ``open_sink`` returns (a failure there fails the open);
``async flush(ctx)`` is called once, with a time limit, when the sink closes.

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
- a step that must not overlap a forced sync runs inside ``ctx.exclusive()``;
- decisions are pure functions (``plan_pull``, ``backoff_delay``, ``hubkit.gapfill``), so they
  are tested without sockets.

The package by policy: ``_common`` (resolvers, helpers), ``pull`` (``QueryOnInit``,
``PeriodicSync``), ``push`` (``PushAfterWrite``, ``push_pending``), ``bidirectional``
(``Bidirectional``, ``plan_pull``), ``stream`` (``WebSocketSubscription``), ``follow``
(``Follow``, ``net_change``).
"""

from __future__ import annotations

from hubkit.policies._common import (
    Backfill,
    Resolver,
    backoff_delay,
    local_wins,
    remote_wins,
)
from hubkit.policies.bidirectional import Bidirectional, Conflict, PullPlan, plan_pull
from hubkit.policies.follow import Follow
from hubkit.policies.pull import PeriodicSync, QueryOnInit
from hubkit.policies.push import PushAfterWrite, PushOutcome, push_pending
from hubkit.policies.stream import WebSocketSubscription

__all__ = [
    "Backfill",
    "Bidirectional",
    "Conflict",
    "Follow",
    "PeriodicSync",
    "PullPlan",
    "PushAfterWrite",
    "PushOutcome",
    "QueryOnInit",
    "Resolver",
    "WebSocketSubscription",
    "backoff_delay",
    "local_wins",
    "plan_pull",
    "push_pending",
    "remote_wins",
]
