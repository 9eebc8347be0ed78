"""``hubkit.load`` / ``hubkit.aload`` / ``hubkit.datasets``: the named datasets in one call.

::

    df = hubkit.load("instruments")                     # every category, one frame
    df = hubkit.load("klines", symbol="BTCUSDT", interval="1h", start="2024-01-01")
    df = await hubkit.aload("trades", symbol="ETHUSDT")
    hubkit.datasets()                                   # {name: description}

Without ``catalog=``, the datasets are ByBit's (``hubkit.bybit.datasets.default_catalog``),
imported on first use so that ``import hubkit`` stays cheap. The freshness rule is
``hubkit.catalog``'s.

Module state: the default catalogue's ``LoadCache`` (``_DEFAULT_CACHE``: the stores its loads
opened and the frames of fresh datasets, see ``hubkit.loadcache``) lives as long as the
process, so that a repeated ``load`` of a fresh dataset answers in well under a millisecond
without touching the store. Like the bridge's loop it is per process: a forked child starts
with an empty one; the stores close at exit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from hubkit.catalog import aload_dataset, load_dataset
from hubkit.loadcache import LoadCache

if TYPE_CHECKING:
    import polars as pl

    from hubkit.catalog import Catalog

__all__ = ["aload", "datasets", "load"]

_DEFAULT_CACHE = LoadCache()
os.register_at_fork(after_in_child=_DEFAULT_CACHE.forget)


def _catalog(catalog: Catalog | None) -> Catalog:
    if catalog is not None:
        return catalog
    from hubkit.bybit.datasets import default_catalog

    return default_catalog(cache=_DEFAULT_CACHE)


def load(
    name: str,
    *,
    catalog: Catalog | None = None,
    store: Any = None,
    follow: bool = False,
    **params: Any,
) -> pl.DataFrame:
    """Return dataset ``name`` as a Polars frame, synced first if it is stale.

    ``catalog`` defaults to ByBit's datasets; ``store`` is a ``Store``, a path or a SQLAlchemy
    URL (default: ``$HUBKIT_HOME/hubkit.db``). ``params`` are the dataset's parameters (e.g.
    ``symbol="BTCUSDT"``). Blocking; the work runs on hubkit's loop. Raises ``OfflineError``
    when the remote is unreachable and nothing is stored; warns with ``StaleDataWarning`` when
    it returns stored rows it could not refresh.

    ``follow=True`` reads a store that others write to (e.g. a ``hubkit collect`` process):
    it returns what the store holds for ``params`` now, without syncing or contacting the
    remote, e.g. ``load("trades", symbol="BTCUSDT", store=shared_url, follow=True)``.
    """
    return load_dataset(
        _catalog(catalog), name, store=store, params=params, stacklevel=3, follow=follow
    )


async def aload(
    name: str,
    *,
    catalog: Catalog | None = None,
    store: Any = None,
    follow: bool = False,
    **params: Any,
) -> pl.DataFrame:
    """``load``, awaited: the work runs on hubkit's loop; the caller's loop stays free."""
    return await aload_dataset(
        _catalog(catalog), name, store=store, params=params, stacklevel=3, follow=follow
    )


def datasets(catalog: Catalog | None = None) -> dict[str, str]:
    """What ``load`` knows: ``{name: description}``, sorted by name.

    ``catalog`` defaults to ByBit's datasets, as for ``load``.
    """
    return _catalog(catalog).descriptions()
