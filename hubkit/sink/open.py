"""Opening a sink: ``open_sink`` / ``aopen_sink`` (the blocking one is a thin wrapper over the
awaited one). A sink is returned fully initialised or not at all."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from hubkit.bridge import get_bridge, run_sync_in_worker
from hubkit.errors import HubkitError, ParameterError, StaleDataWarning
from hubkit.sink._core import Core, Parts, PolicyTraits
from hubkit.sink.sink import Sink
from hubkit.sink.warm import bind_cache, warm_cache
from hubkit.types import Connection, OutboxEntry, SyncPolicy, SyncState

if TYPE_CHECKING:
    from hubkit.cache import FrameCache
    from hubkit.store import Store

__all__ = ["DEFAULT_CACHE", "FIRST_SYNC_TIMEOUT", "SinkOpening", "aopen_sink", "open_sink"]

# How long opening waits for the first sync of a policy that syncs at start (seconds).
FIRST_SYNC_TIMEOUT: Final = 30.0


class _DefaultCache:
    """Marker type for ``open_sink``'s default ``cache`` argument: a new ``FrameCache()``."""

    def __repr__(self) -> str:
        return "FrameCache()"


DEFAULT_CACHE: Final = _DefaultCache()


def open_sink(
    entity: Any,
    key: str | Sequence[str] | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    connection: Connection | None = None,
    policy: SyncPolicy | None = None,
    cache: FrameCache | _DefaultCache | None = DEFAULT_CACHE,
    table: str | None = None,
    name: str | None = None,
    first_sync_timeout: float | None = FIRST_SYNC_TIMEOUT,
    strict: bool = False,
    indexes: Sequence[str | Sequence[str]] = (),
) -> Sink:
    """Open a sink for the dataclass ``entity`` keyed by ``key`` (a field name or a tuple).

    ``store``: a path, a SQLAlchemy URL, an open ``Store`` (shared: the sink does not close
    it) or None for ``$HUBKIT_HOME/hubkit.db``. ``connection``: None for a local-only table.
    ``policy``: when and what to sync (``hubkit.policies``); None syncs only on
    ``force_sync()``. ``cache``: a ``FrameCache`` (default: a new ``FrameCache()``, a window
    of the newest 100,000 rows by the entity's first datetime field, else by write order,
    read alone from the store so that opening costs the same at any table size;
    ``FrameCache(max_rows=None)`` for the whole table), or None to read from the store.
    ``table`` overrides the table name, ``name`` the sink's name (default: the table name; it
    also keys the sync state and the outbox). ``indexes``: secondary indexes (column names,
    or tuples of them such as ``("symbol", "time")``) besides those the entity declares with
    ``hubkit.index``; created with the table, and added to an existing table that lacks them
    (building an index on a big table takes a while, once).

    Blocking; returns only a fully initialised sink (table created, cache warmed from the
    store, connection connected, policy running). A policy that syncs at start
    (``QueryOnInit``, ``PeriodicSync`` with ``query_on_init``, ``Bidirectional``) has done
    its first sync when the sink is returned: opening waits for it at most
    ``first_sync_timeout`` seconds (None: no limit). If that sync fails or takes longer, the
    sink opens with the stored rows, ``OUT_OF_SYNC``, the error in ``status().last_error``
    and a ``StaleDataWarning`` (the policy keeps retrying); with ``strict=True`` opening
    raises the error instead, having closed the sink. Raises ``SchemaError`` for an entity
    hubkit cannot map, and any error of the steps after, having closed what it opened. Must
    not be called on hubkit's loop thread (use ``aopen_sink`` there).
    """
    opening = SinkOpening(
        entity,
        key,
        store=store,
        connection=connection,
        policy=policy,
        cache=cache,
        table=table,
        name=name,
        first_sync_timeout=first_sync_timeout,
        strict=strict,
        indexes=indexes,
    )
    sink, error = get_bridge().run(opening._start())
    return _settle(sink, error, strict, stacklevel=3)


def aopen_sink(
    entity: Any,
    key: str | Sequence[str] | None = None,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    connection: Connection | None = None,
    policy: SyncPolicy | None = None,
    cache: FrameCache | _DefaultCache | None = DEFAULT_CACHE,
    table: str | None = None,
    name: str | None = None,
    first_sync_timeout: float | None = FIRST_SYNC_TIMEOUT,
    strict: bool = False,
    indexes: Sequence[str | Sequence[str]] = (),
) -> SinkOpening:
    """Async twin of ``open_sink`` (same arguments and promises): the store work runs in a
    worker thread and the start on hubkit's loop, so the caller's loop keeps running. Await
    it, or use it directly in ``async with``::

        sink = await hubkit.aopen_sink(Trade, "trade_id", store=path)
        async with hubkit.aopen_sink(Trade, "trade_id", store=path) as sink:
            ...
    """
    return SinkOpening(
        entity,
        key,
        store=store,
        connection=connection,
        policy=policy,
        cache=cache,
        table=table,
        name=name,
        first_sync_timeout=first_sync_timeout,
        strict=strict,
        indexes=indexes,
    )


def _settle(sink: Sink, error: HubkitError | None, strict: bool, stacklevel: int) -> Sink:
    """The caller's side of a first sync that failed: a warning, or (strict) the error."""
    if error is None:
        return sink
    if strict:
        sink.close()
        raise error
    status = sink.status()
    rows = f"its {status.rows}" if status.window is None else f"the newest {status.rows} of its"
    warnings.warn(
        f"sink {sink.name!r} opened with {rows} stored rows: the first sync "
        f"failed ({type(error).__name__}: {error}); it keeps retrying",
        StaleDataWarning,
        stacklevel=stacklevel,
    )
    return sink


class SinkOpening:
    """What ``aopen_sink`` returns: awaitable (-> ``Sink``) and an async context manager
    (opens on enter, closes on exit). Awaiting it twice opens two sinks."""

    def __init__(self, entity: Any, key: str | Sequence[str] | None, **options: Any) -> None:
        self._entity = entity
        self._key = key
        self._options = options
        self._sink: Sink | None = None

    def __await__(self) -> Generator[Any, None, Sink]:
        return self._open().__await__()

    async def __aenter__(self) -> Sink:
        self._sink = await self._open()
        return self._sink

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            await sink.aclose()

    async def _open(self) -> Sink:
        sink, error = await get_bridge().arun(self._start())
        if error is not None and self._options["strict"]:
            await sink.aclose()
            raise error
        return _settle(sink, error, False, stacklevel=4)

    async def _start(self) -> tuple[Sink, HubkitError | None]:
        """Open and start on hubkit's loop; the sink and the error of its first sync."""
        options = dict(self._options)
        connection: Connection | None = options.pop("connection")
        policy: SyncPolicy | None = options.pop("policy")
        timeout: float | None = options.pop("first_sync_timeout")
        options.pop("strict")
        parts, pending, state = await run_sync_in_worker(
            functools.partial(_open_parts, self._entity, self._key, **options)
        )
        try:
            sink = _build(parts, pending, state, connection, policy, options["name"])
            runner = sink._runner
            try:
                await runner.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await runner.abort_start()
                raise
        except BaseException:
            await run_sync_in_worker(_release_parts, parts)
            raise
        return sink, await runner.first_sync(timeout)


def _open_parts(
    entity: Any,
    key: str | Sequence[str] | None,
    *,
    store: Store | str | os.PathLike[str] | None,
    cache: FrameCache | _DefaultCache | None,
    table: str | None,
    name: str | None,
    indexes: Sequence[str | Sequence[str]] = (),
) -> tuple[Parts, list[OutboxEntry], SyncState]:
    """The blocking half of opening: reflect, open the store and table, warm the cache."""
    from hubkit.entity import EntitySpec, reflect
    from hubkit.store import Store

    if isinstance(entity, EntitySpec):
        spec = entity
    else:
        if key is None:
            raise TypeError("open_sink needs key=... (a field name or a tuple of names)")
        spec = reflect(entity, key, table=table)
    owns_store = not isinstance(store, Store)
    store_obj = Store(store) if not isinstance(store, Store) else store
    owns_cache = False
    cache_obj: FrameCache | None = None
    try:
        table_obj = store_obj.table(spec, name=name, indexes=indexes)
        if isinstance(cache, _DefaultCache):
            from hubkit.cache import FrameCache

            cache_obj = FrameCache()
            owns_cache = True
        else:
            cache_obj = cache
        if cache_obj is not None:
            bind_cache(cache_obj, spec)
            warm_cache(cache_obj, table_obj)
        pending = table_obj.outbox_pending()
        state = table_obj.state()
    except BaseException:
        if owns_cache and cache_obj is not None:
            cache_obj.clear()
        if owns_store:
            store_obj.close()
        raise
    parts = Parts(
        spec=spec,
        store=store_obj,
        owns_store=owns_store,
        table=table_obj,
        cache=cache_obj,
        owns_cache=owns_cache,
    )
    return parts, pending, state


def _build(
    parts: Parts,
    pending: list[OutboxEntry],
    state: SyncState,
    connection: Connection | None,
    policy: SyncPolicy | None,
    name: str | None,
) -> Sink:
    if PolicyTraits.of(policy).pushes_local_writes and connection is None:
        raise ParameterError(f"{type(policy).__name__} pushes local writes and needs a connection")
    core = Core(
        parts,
        connection=connection,
        policy=policy,
        bridge=get_bridge(),
        name=name or parts.table.name,
        pending=pending,
        state=state,
    )
    return Sink(core)


def _release_parts(parts: Parts) -> None:
    if parts.owns_cache and parts.cache is not None:
        parts.cache.clear()
    if parts.owns_store:
        parts.store.close()
