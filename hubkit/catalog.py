"""Named datasets and the freshness rule: one call that returns an up-to-date Polars frame.

::

    catalog = Catalog([Dataset("notes", Note, "id", sync_notes)])
    df = catalog.load("notes")                          # synced first if stale
    df = await catalog.aload("notes", author="ada")

A ``Dataset`` says which entity it holds, how to bring it up to date (an async ``sync``
function that writes into the store) and how long a successful sync stays fresh
(``stale_after``). A ``Catalog`` is a plain collection of datasets built by its user (there is
no global registry). ``hubkit.load``/``hubkit.aload`` are these calls on the default catalog
of the ByBit datasets (``hubkit._api``); nothing here knows a provider.

The freshness rule, per dataset and per set of parameters:

- fresh (last successful sync younger than ``stale_after``) -> the stored rows, no network;
- stale -> sync, then the stored rows;
- sync failed because the remote is unreachable (``TransportError``, ``RemoteTimeout``, or
  another temporary ``RemoteError``) and rows are stored -> the stored rows, and a
  ``StaleDataWarning`` saying how old they are;
- unreachable and nothing stored -> ``OfflineError`` saying how to point hubkit at a
  simulator.

The time of the last successful sync is kept in the store's sync state next to the rows, so
freshness survives restarts and is shared by every process using the same store file.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.bridge import run_sync_in_worker
from hubkit.errors import (
    HubkitError,
    NotFoundError,
    OfflineError,
    ParameterError,
    RemoteError,
    StaleDataWarning,
    TransportError,
)
from hubkit.loadcache import FileToken, LoadCache, file_token

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec
    from hubkit.store import TableStore

__all__ = [
    "Catalog",
    "Dataset",
    "SyncRequest",
    "aload_dataset",
    "load_dataset",
]

SyncFn = Callable[["SyncRequest"], Awaitable[None]]
"""``async def sync(request) -> None``: fetch from the remote and write into ``request``."""

ReadFn = Callable[["TableStore", Mapping[str, Any]], pl.DataFrame]
"""``read(table, params) -> frame``: the stored rows that answer ``params`` (blocking)."""

PrepareFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""``prepare(params) -> params``: validate and canonicalise the caller's parameters."""

CoveredFn = Callable[[Mapping[str, Any], datetime], bool]
"""``covered(params, last_sync) -> bool``: a sync made at ``last_sync`` left nothing to fetch
for ``params`` (a range that ended before it, say), so the stored rows answer them."""

_FRESH = "fresh"  # key in SyncState.extra: {params key: ISO time of the last successful sync}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _params_key(params: Mapping[str, Any]) -> str:
    """A stable text key for a parameter set (sorted JSON; dates and the like as text)."""
    return json.dumps(dict(params), sort_keys=True, default=str, separators=(",", ":"))


def _default_read(table: TableStore, params: Mapping[str, Any]) -> pl.DataFrame:
    """Rows whose columns equal the parameters that name columns (all rows without any)."""
    columns = {c.name for c in table.spec.columns}
    where = {k: v for k, v in params.items() if k in columns and v is not None}
    return table.query(where or None, order_by=list(table.spec.key))


@dataclass(frozen=True)
class Dataset:
    """A named, loadable dataset.

    ``entity`` and ``key`` define the table (as for ``open_sink``); ``table`` names it, or
    computes the name from the prepared parameters (datasets that keep a cursor per series
    use one table per series). ``sync`` brings the table up to date for the parameters;
    ``read`` returns the rows that answer them (default: equality on the parameters that name
    columns). ``params`` are defaults under the caller's; ``prepare`` validates and
    canonicalises the merged parameters (raise ``ValueError`` to refuse them).

    Ranges: ``range_params`` name parameters that only choose which stored rows ``read``
    returns (``start``/``end``), not what ``sync`` fetches; they are left out of the
    freshness key, so a sync for one range makes every range of the same series fresh.
    ``covered(params, last_sync)`` says a sync at ``last_sync`` already brought everything
    these parameters ask for: such a load reads the store without syncing, even when stale.
    """

    name: str
    entity: type
    key: str | tuple[str, ...]
    sync: SyncFn
    stale_after: timedelta = timedelta(minutes=5)
    params: Mapping[str, Any] = field(default_factory=dict)
    table: str | Callable[[Mapping[str, Any]], str] | None = None
    read: ReadFn = _default_read
    prepare: PrepareFn | None = None
    description: str = ""
    offline_hint: str = ""  # appended to OfflineError: how to reach a source or simulator
    range_params: tuple[str, ...] = ()
    covered: CoveredFn | None = None

    def fresh_key(self, params: Mapping[str, Any]) -> str:
        """The key freshness is kept under: the parameters that change what sync fetches."""
        return _params_key({k: v for k, v in params.items() if k not in self.range_params})

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults, then the caller's parameters, then ``prepare``."""
        merged = {**self.params, **params}
        if self.prepare is None:
            return merged
        try:
            return dict(self.prepare(merged))
        except HubkitError:
            raise
        except (ValueError, TypeError, KeyError) as exc:  # a catalogue's own prepare
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            if repr(self.name) not in message:
                message = f"dataset {self.name!r}: {message}"
            raise ParameterError(message) from exc

    def table_name(self, params: Mapping[str, Any]) -> str | None:
        """The store table for these (prepared) parameters; ``None`` = the entity's default."""
        if callable(self.table):
            return self.table(params)
        return self.table

    def spec(self) -> EntitySpec:
        """The reflected entity spec of this dataset."""
        from hubkit.entity import reflect

        key = (self.key,) if isinstance(self.key, str) else self.key
        return reflect(self.entity, key)


@dataclass(frozen=True)
class SyncRequest:
    """What a dataset's ``sync`` gets: its parameters and async access to its table.

    The store calls run in a worker thread (never on the event loop).
    """

    dataset: Dataset
    params: Mapping[str, Any]
    table: TableStore
    progress: Callable[[int, int | None], object] | None = None

    async def upsert(self, rows: Any, *, cursor: str | None = None) -> pl.DataFrame:
        """Write rows (and the cursor, if given) in one transaction."""
        return await run_sync_in_worker(partial(self.table.upsert, rows, cursor=cursor))

    async def delete(self, keys: Any) -> pl.DataFrame:
        """Delete rows by key; returns the deleted rows."""
        return await run_sync_in_worker(self.table.delete, keys)

    async def query(self, where: Mapping[str, Any] | None = None) -> pl.DataFrame:
        return await run_sync_in_worker(self.table.query, where)

    async def cursor(self) -> str | None:
        """The table's stored cursor (committed with the rows by ``upsert``)."""
        state = await run_sync_in_worker(self.table.state)
        return state.cursor


class Catalog:
    """A collection of datasets, built by its user: ``Catalog([ds1, ds2])``, ``add(ds)``.

    ``catalog.load(name, **params)`` / ``await catalog.aload(...)`` are ``load`` with this
    catalog. ``cache`` (default: the catalog's own) keeps the stores its loads opened and the
    frames of fresh datasets they returned (``LoadCache``); ``close()`` releases them. Names
    are unique; ``add`` refuses a duplicate unless ``replace=True``.
    """

    def __init__(
        self,
        datasets: Iterator[Dataset] | list[Dataset] | tuple[Dataset, ...] = (),
        *,
        cache: LoadCache | None = None,
    ) -> None:
        self.cache = cache if cache is not None else LoadCache()
        if cache is None:  # its own: the stores it opened close with the catalog
            weakref.finalize(self, self.cache.close)
        self._datasets: dict[str, Dataset] = {}
        for ds in datasets:
            self.add(ds)

    def add(self, dataset: Dataset, *, replace: bool = False) -> Dataset:
        if dataset.name in self._datasets and not replace:
            raise ParameterError(f"dataset {dataset.name!r} is already in this catalog")
        self._datasets[dataset.name] = dataset
        return dataset

    def remove(self, name: str) -> None:
        del self._datasets[name]

    def __getitem__(self, name: str) -> Dataset:
        try:
            return self._datasets[name]
        except KeyError:
            known = ", ".join(sorted(self._datasets)) or "none"
            raise NotFoundError(f"no dataset {name!r} in this catalog (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._datasets

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._datasets))

    def __len__(self) -> int:
        return len(self._datasets)

    def names(self) -> list[str]:
        return sorted(self._datasets)

    def __repr__(self) -> str:
        return f"Catalog({self.names()!r})"

    def close(self) -> None:
        """Close the stores this catalog's loads keep open (see ``LoadCache``)."""
        self.cache.close()

    def descriptions(self) -> dict[str, str]:
        """``{name: description}`` of every dataset, sorted by name."""
        return {name: self._datasets[name].description for name in self.names()}

    def load(
        self, name: str, *, store: Any = None, follow: bool = False, **params: Any
    ) -> pl.DataFrame:
        """Dataset ``name`` as a Polars frame, synced first if it is stale (see
        ``load_dataset``; ``follow=True`` reads what the store holds, never syncing)."""
        return load_dataset(self, name, store=store, params=params, stacklevel=3, follow=follow)

    async def aload(
        self, name: str, *, store: Any = None, follow: bool = False, **params: Any
    ) -> pl.DataFrame:
        """``load``, awaited (see ``aload_dataset``)."""
        return await aload_dataset(
            self, name, store=store, params=params, stacklevel=3, follow=follow
        )


# -- the freshness rule ---------------------------------------------------------------------


def _last_sync(extra: Mapping[str, Any], key: str) -> datetime | None:
    fresh = extra.get(_FRESH)
    if not isinstance(fresh, Mapping):
        return None
    value = fresh.get(key)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _mark_fresh(table: TableStore, key: str, when: datetime) -> None:
    state = table.state()
    extra = dict(state.extra)
    fresh = dict(extra.get(_FRESH) or {})
    fresh[key] = when.isoformat()
    extra[_FRESH] = fresh
    table.set_state(last_sync=when, extra=extra)


def _age_text(age: timedelta | None) -> str:
    if age is None:
        return "of unknown age"
    seconds = int(age.total_seconds())
    if seconds < 120:
        return f"{seconds} s old"
    if seconds < 7200:
        return f"{seconds // 60} min old"
    if seconds < 172800:
        return f"{seconds // 3600} h old"
    return f"{seconds // 86400} days old"


def _is_unreachable(exc: BaseException) -> bool:
    """Errors that mean "the remote cannot be reached now" (stored data may stand in)."""
    return isinstance(exc, TransportError) or (isinstance(exc, RemoteError) and exc.temporary)


@dataclass(frozen=True)
class _Loaded:
    frame: pl.DataFrame
    warning: str | None = None
    fresh_until: datetime | None = None  # set when the rows answer a fresh dataset
    token: FileToken | None = None  # the store file's token taken before the rows were read


def _store_file(store: Any) -> str | None:
    """The SQLite file a ``store`` argument names, or None (a server, or an in-memory one)."""
    from hubkit.store import Store, default_store_url

    if isinstance(store, Store):
        url = store.url
    elif store is None:
        url = default_store_url()
    elif isinstance(store, os.PathLike) or (isinstance(store, str) and "://" not in store):
        return str(Path(os.fspath(store)).expanduser().resolve())
    else:
        url = str(store)
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix or ":memory:" in url or "?" in url:
        return None  # a server, memory, or a URL with options the kept store would not have
    return url[len(prefix) :]


def _read(
    dataset: Dataset, table: TableStore, params: Mapping[str, Any], path: str | None
) -> tuple[pl.DataFrame, FileToken | None]:
    """The rows that answer ``params``, and the file token taken just before reading them."""
    token = None if path is None else file_token(path)
    return dataset.read(table, params), token


async def _aload_core(
    dataset: Dataset,
    store: Any,
    params: Mapping[str, Any],
    path: str | None,
    cache: LoadCache,
    follow: bool = False,
) -> _Loaded:
    from hubkit.store import Store

    own = False
    if isinstance(store, Store):
        st = store
    elif path is not None:
        st = await run_sync_in_worker(cache.store, path)
    else:
        st, own = await run_sync_in_worker(Store, store), True
    try:
        spec = dataset.spec()
        table = await run_sync_in_worker(partial(st.table, spec, name=dataset.table_name(params)))
        if follow:  # what the store's writers committed, never fetched here
            return _Loaded(await run_sync_in_worker(dataset.read, table, params))
        key = dataset.fresh_key(params)
        state = await run_sync_in_worker(table.state)
        last = _last_sync(state.extra, key)
        now = _utcnow()
        if last is not None and now - last < dataset.stale_after:
            frame, token = await run_sync_in_worker(_read, dataset, table, params, path)
            return _Loaded(frame, fresh_until=last + dataset.stale_after, token=token)
        if last is not None and dataset.covered is not None and dataset.covered(params, last):
            frame, token = await run_sync_in_worker(_read, dataset, table, params, path)
            return _Loaded(frame, fresh_until=now + dataset.stale_after, token=token)
        try:
            await dataset.sync(SyncRequest(dataset, params, table))
        except HubkitError as exc:
            if not _is_unreachable(exc):
                raise
            frame = await run_sync_in_worker(dataset.read, table, params)
            if frame.height == 0:
                hint = f" {dataset.offline_hint}" if dataset.offline_hint else ""
                raise OfflineError(
                    f"cannot sync dataset {dataset.name!r} ({exc}) and the store "
                    f"{st.url} holds no rows for {key}.{hint}"
                ) from exc
            seen = last or state.last_sync
            age = None if seen is None else now - seen
            return _Loaded(
                frame,
                f"dataset {dataset.name!r} could not be synced ({exc}); returning the "
                f"{frame.height} stored rows, {_age_text(age)}",
            )
        synced = _utcnow()
        await run_sync_in_worker(_mark_fresh, table, key, synced)
        frame, token = await run_sync_in_worker(_read, dataset, table, params, path)
        return _Loaded(frame, fresh_until=synced + dataset.stale_after, token=token)
    finally:
        if own:
            await run_sync_in_worker(st.close)


def _prepare(
    catalog: Catalog, name: str, params: Mapping[str, Any]
) -> tuple[Dataset, dict[str, Any]]:
    dataset = catalog[name]
    return dataset, dataset.resolve_params(params)


@dataclass(frozen=True)
class _Request:
    """One ``load``: the dataset, its prepared parameters, the store and what the cache kept."""

    catalog: Catalog
    dataset: Dataset
    params: dict[str, Any]
    store: Any
    path: str | None  # the SQLite file, when the store is one
    key: tuple[str, ...] | None  # the cache key of the answer, when it may be kept
    kept: pl.DataFrame | None  # the kept answer of a fresh dataset, if any
    follow: bool = False  # read what the store holds; never sync

    @classmethod
    def of(
        cls,
        catalog: Catalog,
        name: str,
        store: Any,
        params: Mapping[str, Any] | None,
        follow: bool = False,
    ) -> _Request:
        dataset, prepared = _prepare(catalog, name, params or {})
        path = _store_file(store)
        key = kept = None
        if follow:
            return cls(catalog, dataset, prepared, store, path, None, None, follow=True)
        if path is not None:
            key = (path, dataset.name, dataset.table_name(prepared) or "", _params_key(prepared))
            kept = catalog.cache.frame(key, path, _utcnow())
        return cls(catalog, dataset, prepared, store, path, key, kept)

    def load(self) -> Coroutine[Any, Any, _Loaded]:
        """The freshness rule's work, to run on hubkit's loop."""
        return _aload_core(
            self.dataset, self.store, self.params, self.path, self.catalog.cache, self.follow
        )

    def remember(self, loaded: _Loaded) -> pl.DataFrame:
        """Keep what answered a fresh dataset (see ``LoadCache``); the caller gets a copy."""
        if self.key is None or loaded.fresh_until is None or loaded.token is None:
            return loaded.frame
        self.catalog.cache.keep(self.key, loaded.frame, loaded.fresh_until, loaded.token)
        return loaded.frame.clone()


def load_dataset(
    catalog: Catalog,
    name: str,
    *,
    store: Any = None,
    params: Mapping[str, Any] | None = None,
    stacklevel: int = 2,
    follow: bool = False,
) -> pl.DataFrame:
    """Return dataset ``name`` of ``catalog`` as a Polars frame, synced first if it is stale.

    ``store`` is a ``Store``, a path or a SQLAlchemy URL (default: ``$HUBKIT_HOME/hubkit.db``).
    ``params`` are the dataset's parameters (e.g. ``{"symbol": "BTCUSDT"}``). Blocking; the
    work runs on hubkit's loop. Raises ``OfflineError`` when the remote is unreachable and
    nothing is stored; warns with ``StaleDataWarning`` (attributed ``stacklevel`` frames up)
    when it returns stored rows it could not refresh.

    The store of a SQLite file stays open in ``catalog.cache`` for the next call; a repeated
    call for a dataset that is still fresh, on a file nobody wrote to since, returns a copy of
    the frame the cache kept, without touching the store.

    ``follow=True``: the store is one that others write to (a collector, see ``hubkit
    collect``); return the rows it holds for ``params`` as they are now, never syncing and
    never contacting the remote (an empty frame when nothing was collected).
    """
    from hubkit.bridge import run

    request = _Request.of(catalog, name, store, params, follow)
    if request.kept is not None:
        return request.kept
    loaded = run(request.load())
    if loaded.warning is not None:
        warnings.warn(loaded.warning, StaleDataWarning, stacklevel=stacklevel)
    return request.remember(loaded)


async def aload_dataset(
    catalog: Catalog,
    name: str,
    *,
    store: Any = None,
    params: Mapping[str, Any] | None = None,
    stacklevel: int = 2,
    follow: bool = False,
) -> pl.DataFrame:
    """``load_dataset``, awaited: the work runs on hubkit's loop; the caller's loop stays free."""
    from hubkit.bridge import arun

    request = _Request.of(catalog, name, store, params, follow)
    if request.kept is not None:
        return request.kept
    loaded = await arun(request.load())
    if loaded.warning is not None:
        warnings.warn(loaded.warning, StaleDataWarning, stacklevel=stacklevel)
    return request.remember(loaded)
