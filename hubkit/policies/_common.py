"""What the policies share: the resolver and backfill types, the two stock resolvers, and
small helpers (durations, backoff, the connection of a context, one fetch applied)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.errors import SyncError
from hubkit.types import Connection, StreamingConnection, SyncContext, SyncStatus

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

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


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``,
    at most ``cap``; 0 for ``attempt <= 0`` (``Backoff`` without jitter)."""
    if attempt <= 0:
        return 0.0
    # imported here: the connections package pulls in httpx and websockets, which a policy
    # without failures (or without a connection) should not pay for
    from hubkit.connections.retry import Backoff

    return Backoff(base=base, cap=cap, jitter=False).ceiling(attempt - 1)


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
    await ctx.ensure_connected()
    return connection


def _now() -> datetime:
    return datetime.now(UTC)


async def _pull_until_done(
    ctx: SyncContext, step: Callable[[], Awaitable[None]], base: float, cap: float
) -> None:
    """Run ``step`` until it succeeds once, reporting failures and backing off."""
    attempt = 0
    while True:
        try:
            async with ctx.exclusive():
                await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempt += 1
            ctx.set_status(SyncStatus.OUT_OF_SYNC)
            ctx.report_error(exc)
            await asyncio.sleep(backoff_delay(attempt, base=base, cap=max(base, cap)))


def _keys_frame(spec: EntitySpec, keys: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """A frame of the key columns of ``spec`` holding ``keys`` (tuples)."""
    schema = spec.schema
    columns = {
        name: pl.Series(name, [k[i] for k in keys], dtype=schema[name], strict=False)
        for i, name in enumerate(spec.key)
    }
    return pl.DataFrame(columns)
