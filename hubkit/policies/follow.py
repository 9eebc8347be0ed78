"""``Follow``: a sink that follows what other processes commit to its table.

A collector writes a shared store; a notebook opens the same table with
``policy=hubkit.Follow()`` and no connection. Its cache and its change events (source
``REMOTE``) follow the collector's commits; the notebook never talks to the exchange::

    sink = hubkit.open_sink(Trade, "exec_id", store="/data/shared.db", policy=hubkit.Follow())
    sink.on_change(lambda change: print(change.op, change.frame.height))

How: every hubkit write logs the keys it changed in the store's change log, in the same
transaction (``hubkit.store.changelog``). The follower remembers the last logged commit it
applied, polls the table's newest logged commit every ``interval`` seconds (one index
lookup; on PostgreSQL it LISTENs for the announcements of commits and polls once a second
as a safety net), and when it moved, reads the new log entries, then the current rows of the keys
they upserted; keys they deleted leave the cache. One poll's entries are merged: a key
written several times is read once (its row as it is now), a key written then deleted gives
only a DELETE. Writes made through the follower's own table object are already in its
cache and are not replayed. A follower that falls more than the log keeps behind
(``changelog.KEEP`` commits per table) re-reads the table and emits the difference to its
cache (without a cache: a GAP change).

Opening loads the cache as for any sink (the default cache: the newest rows only); the
changes committed since then are applied before ``open_sink`` returns (the follower takes
its log position, then reads what its cache holds once more, the newest rows or the whole
table with ``FrameCache(max_rows=None)``, and applies the difference to the cache).
``status().behind`` (shown in the status panel's lag column) is the delay from the writer's
commit of the newest change applied to the moment it was applied. Reopening a follower
starts from what the store holds then.

The decisions (``net_change``, ``resync_diff``) are pure functions of the log entries and
frames; the policy does the I/O.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, cast

import polars as pl

from hubkit.bridge import run_sync_in_worker, wait_event
from hubkit.errors import SyncError, ValidationError
from hubkit.policies._common import _seconds, backoff_delay
from hubkit.types import Gap, SyncContext, SyncStatus

if TYPE_CHECKING:
    from hubkit.cache import FrameCache
    from hubkit.entity import EntitySpec
    from hubkit.store import TableStore
    from hubkit.store.changelog import Entry

__all__ = ["Follow", "NetChange", "net_change", "resync_diff"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Above this many changed keys in one step, re-reading the whole table is cheaper than
# reading the rows key by key (500 keys per query).
REREAD_ABOVE: Final = 50_000
# While LISTENing (PostgreSQL), the log is still polled this often (seconds).
LISTENING_POLL: Final = 1.0


# -- pure decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class NetChange:
    """What a run of log entries amounts to: keys to re-read, keys deleted (logged form,
    one tuple per key), the last ``seq`` covered and the newest writer commit time (µs)."""

    upsert: list[tuple[Any, ...]]
    delete: list[tuple[Any, ...]]
    last_seq: int
    committed_at: int | None


def net_change(
    entries: Sequence[Entry], position: int, own_origin: str | None = None
) -> NetChange | None:
    """Merge the log entries after ``position`` (oldest first) into one net change.

    None when they do not start right after ``position`` (the log was pruned past it), or
    when another writer's entry logged no keys (``Entry.whole``): the caller must re-read
    the table. Within an entry deletes come before upserts (the order
    ``TableStore.apply`` runs them); across entries the last write of a key wins. A key whose
    last write came from ``own_origin`` is left out (its writer already applied it).
    ``committed_at`` is the newest commit time among the entries of other origins.
    """
    if not entries:
        return NetChange([], [], position, None)
    if entries[0].seq != position + 1:
        return None
    last: dict[tuple[Any, ...], tuple[bool, bool]] = {}  # key -> (upserted, by own origin)
    newest: int | None = None
    for entry in entries:
        own = own_origin is not None and entry.origin == own_origin
        if entry.whole and not own:
            return None
        if not own:
            newest = entry.committed_at if newest is None else max(newest, entry.committed_at)
        for key in zip(*entry.deleted, strict=True):
            last[key] = (False, own)
        for key in zip(*entry.upserted, strict=True):
            last[key] = (True, own)
    upsert = [k for k, (up, own) in last.items() if up and not own]
    delete = [k for k, (up, own) in last.items() if not up and not own]
    return NetChange(upsert, delete, entries[-1].seq, newest)


def resync_diff(
    key: Sequence[str], cached: pl.DataFrame, stored: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows of ``stored`` absent from or different in ``cached``, rows of ``cached`` whose
    key ``stored`` lacks): what a follower that lost track applies to its cache."""
    keys = list(key)
    stored = stored.select(cached.columns)
    now = stored.with_columns(pl.Series("_h", stored.hash_rows(seed=7)))
    had = cached.select(keys).with_columns(pl.Series("_h_cached", cached.hash_rows(seed=7)))
    joined = now.join(had, on=keys, how="left", nulls_equal=True)
    same = (pl.col("_h") == pl.col("_h_cached")).fill_null(False)
    changed = joined.filter(~same).select(stored.columns)
    gone = cached.join(stored.select(keys), on=keys, how="anti", nulls_equal=True)
    return changed, gone


def _key_frame(spec: EntitySpec, keys: list[tuple[Any, ...]]) -> pl.DataFrame:
    from hubkit.store import changelog  # the store (and SQLAlchemy) only when following

    columns = [list(c) for c in zip(*keys, strict=True)] if keys else [[] for _ in spec.key]
    return changelog.decode_keys(spec, columns)


def deleted_rows(spec: EntitySpec, keys: pl.DataFrame, cached: pl.DataFrame | None) -> pl.DataFrame:
    """The frame of a DELETE change for ``keys``: the cached rows of those keys, and for keys
    not cached, the key with the other columns null."""
    schema = spec.schema
    found = spec.empty() if cached is None else cached.join(keys, on=list(spec.key), how="semi")
    missing = keys.join(found.select(list(spec.key)), on=list(spec.key), how="anti")
    if missing.height == 0:
        return found
    padded = missing.with_columns(
        [pl.lit(None, dtype=schema[n]).alias(n) for n in schema if n not in spec.key]
    ).select(list(schema))
    return pl.concat([found, padded.cast(schema)]) if found.height else padded


# -- the policy -----------------------------------------------------------------------------


class _FollowContext(Protocol):
    """The parts of a sink's context a follower needs (``hubkit.sink.context.SinkContext``)."""

    @property
    def spec(self) -> EntitySpec: ...

    @property
    def table(self) -> TableStore: ...

    @property
    def cache(self) -> FrameCache | None: ...

    def apply_committed(
        self,
        upserted: pl.DataFrame,
        deleted: pl.DataFrame,
        *,
        committed_at: datetime | None = None,
    ) -> Awaitable[None]: ...

    async def emit_gap(self, gap: Gap) -> None: ...


def _following(ctx: SyncContext) -> _FollowContext:
    if not (hasattr(ctx, "apply_committed") and hasattr(ctx, "table")):
        raise SyncError("Follow needs a sink's context (open the sink with open_sink)")
    return cast("_FollowContext", ctx)


@dataclass
class _Position:
    seq: int = 0


@dataclass(frozen=True)
class _Read:
    """One poll's reading: the rows to apply and where it leaves the follower."""

    upserted: pl.DataFrame
    deleted: pl.DataFrame
    seq: int
    committed_at: datetime | None
    gap: bool = False


@dataclass(frozen=True)
class Follow:
    """Follow the commits other processes make to the sink's table (see the module doc).

    ``interval``: how often the table's newest logged commit is polled (seconds or a timedelta);
    ``batch``: at most this many logged commits are read per step. Needs no connection
    (``open_sink(..., store=shared, policy=Follow())``). ``force_sync()`` catches up with
    everything committed so far. Status: ``FULL_SYNC`` when caught up, ``OUT_OF_SYNC`` after
    a failed read (reported, retried with a backoff up to 5 s).
    """

    interval: timedelta | float = timedelta(milliseconds=50)
    batch: int = 1_000

    pushes_local_writes: ClassVar[bool] = False
    waits_for_first_sync: ClassVar[bool] = False

    _positions: weakref.WeakKeyDictionary[Any, _Position] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if _seconds(self.interval) <= 0:
            raise ValidationError(f"Follow.interval must be positive, not {self.interval!r}")
        if self.batch < 1:
            raise ValidationError(f"Follow.batch must be at least 1, not {self.batch!r}")

    def _position(self, ctx: SyncContext) -> _Position:
        position = self._positions.get(ctx)
        if position is None:
            position = self._positions[ctx] = _Position()
        return position

    async def start(self, ctx: SyncContext) -> None:
        """Take the log position, then bring the cache (warmed at open) up to it."""
        fctx = _following(ctx)
        position = self._position(ctx)
        read = await run_sync_in_worker(_resync, fctx)
        await self._apply(fctx, position, read, quiet=True)

    async def run(self, ctx: SyncContext) -> None:
        fctx = _following(ctx)
        position = self._position(ctx)
        interval = _seconds(self.interval)
        nudge = asyncio.Event()
        listening = _Listening()
        url = _postgresql_url(fctx.table)
        listener = None
        if url is not None:
            listener = asyncio.create_task(_listen(ctx, url, fctx.table.name, nudge, listening))
        failures = 0
        try:
            while True:
                try:
                    async with ctx.exclusive():
                        moved = await self._step(fctx, position)
                    failures = 0
                    if not moved:
                        ctx.set_status(SyncStatus.FULL_SYNC)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    ctx.set_status(SyncStatus.OUT_OF_SYNC)
                    ctx.report_error(exc)
                    await asyncio.sleep(backoff_delay(failures, cap=5.0))
                    continue
                if not moved:
                    # told by NOTIFY when listening; polling stays the safety net
                    wait = max(interval, LISTENING_POLL) if listening.on else interval
                    await wait_event(nudge, wait)
                    nudge.clear()
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def sync_once(self, ctx: SyncContext) -> None:
        fctx = _following(ctx)
        position = self._position(ctx)
        while await self._step(fctx, position):
            pass
        ctx.set_status(SyncStatus.FULL_SYNC)

    async def _step(self, ctx: _FollowContext, position: _Position) -> bool:
        """Apply the next logged commits; False when there was nothing new."""
        read = await run_sync_in_worker(_read_next, ctx, position.seq, self.batch)
        if read is None:
            return False
        await self._apply(ctx, position, read, quiet=False)
        return True

    async def _apply(
        self, ctx: _FollowContext, position: _Position, read: _Read, *, quiet: bool
    ) -> None:
        if read.gap and not quiet:
            now = datetime.now(UTC)
            reason = "the change log no longer holds every commit since the last one applied"
            await ctx.emit_gap(Gap(start=read.committed_at or now, end=now, reason=reason))
        if read.upserted.height or read.deleted.height or read.committed_at is not None:
            await ctx.apply_committed(read.upserted, read.deleted, committed_at=read.committed_at)
        position.seq = read.seq


@dataclass
class _Listening:
    on: bool = False


def _postgresql_url(table: TableStore) -> str | None:
    """The store's URL when it is a PostgreSQL one (its followers LISTEN), else None."""
    import sqlalchemy as sa

    url = getattr(table.store, "url", None)
    if not isinstance(url, str) or "://" not in url:
        return None
    return url if sa.make_url(url).get_backend_name() == "postgresql" else None


async def _listen(
    ctx: SyncContext, url: str, name: str, nudge: asyncio.Event, listening: _Listening
) -> None:
    """Set ``nudge`` whenever a commit of table ``name`` is announced (and after each
    (re)connect, announcements may have been missed); reconnect with a backoff."""
    from hubkit.pgnotify import Listener

    failures = 0
    while True:
        try:
            async with Listener(url) as listener:
                listening.on, failures = True, 0
                nudge.set()
                async for commit in listener:
                    if commit.table == name:
                        nudge.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.report_error(exc)
        listening.on = False
        failures += 1
        await asyncio.sleep(backoff_delay(failures, cap=30.0))


def _micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _read_next(ctx: _FollowContext, after: int, batch: int) -> _Read | None:
    """Blocking: the rows of the commits logged after ``after`` (None: nothing new)."""
    from hubkit.store import changelog

    table = ctx.table
    head = changelog.head(table)
    if head == after:
        return None
    if head < after:  # the log was reset (the store was replaced): start over
        return _resync(ctx)
    entries = changelog.entries(table, after, batch)
    net = net_change(entries, after, table.origin)
    if net is None or (len(net.upsert) > REREAD_ABOVE and ctx.cache is not None):
        return _resync(ctx)
    spec = ctx.spec
    upserted = table.get_rows(_key_frame(spec, net.upsert)) if net.upsert else table.empty()
    deleted = table.empty()
    if net.delete:
        cache = ctx.cache
        cached = None if cache is None else cache.frame()
        deleted = deleted_rows(spec, _key_frame(spec, net.delete), cached)
    return _Read(upserted, deleted, net.last_seq, _micros(net.committed_at))


def _resync(ctx: _FollowContext) -> _Read:
    """Blocking: the log position now, and the difference between the table and the cache
    (for a cache that keeps a window: between the table's newest rows and the cache, so a
    follower of a large table never reads all of it)."""
    from hubkit.store import changelog

    table = ctx.table
    head = changelog.head(table)
    cache = ctx.cache
    if cache is None:
        empty = table.empty()
        return _Read(empty, empty, head, None, gap=True)
    if cache.max_rows is None:
        changed, gone = resync_diff(table.spec.key, cache.frame(), table.read_all())
        return _Read(changed, gone, head, None, gap=False)
    newest = table.read_newest(cache.max_rows + 1, cache.window_by)
    changed, left = resync_diff(table.spec.key, cache.frame(), newest)
    # Rows that only left the window are not deleted: a DELETE only for keys the store lacks.
    key = list(table.spec.key)
    stored = table.get_rows(left.select(key)) if left.height else left
    gone = left.join(stored.select(key), on=key, how="anti", nulls_equal=True)
    return _Read(changed, gone, head, None, gap=False)
