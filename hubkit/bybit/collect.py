"""ByBit's datasets for ``hubkit collect``: the rules a collector file is checked against and
the feeds that do each job.

============  ========  ===============  ==============================================
dataset       how       default every    parameters
============  ========  ===============  ==============================================
trades        live      -                ``symbols`` (required), ``category="linear"``
tickers       polled    15 s             ``category``, ``symbol``/``symbols``, ``base_coin``
instruments   polled    1 h              ``category`` (default: every category)
klines        polled    1 min            ``symbol``/``symbols``, ``interval``, ``start``,
                                         ``end``, ``category``
============  ========  ===============  ==============================================

``trades`` keeps a live WebSocket sink open (``open_trades``): at start, and after each
reconnect, it fills the gap since the last stored trade over REST, so a restarted
collector resumes where it stopped. REST reaches back 1000 trades per symbol: a gap it
cannot fill is reported as an error of the collector (logged, counted in its status row).
The polled datasets sync through the catalogue as ``hubkit.load`` does (a ``klines``
backfill resumes from its stored cursor).
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from hubkit.bybit.presets import CATEGORIES
from hubkit.collector import DatasetRule, Job, first_line

if TYPE_CHECKING:
    from hubkit.catalog import Catalog
    from hubkit.collector import Feed
    from hubkit.errors import HubkitError
    from hubkit.sink import Sink
    from hubkit.store import Store
    from hubkit.types import Change

__all__ = ["TRADES_PARAMS", "bybit_collect_rules", "open_bybit_feed"]

TRADES_PARAMS: Final = ("symbols", "category")
_EVERY: Final = {"tickers": 15.0, "instruments": 3600.0, "klines": 60.0}


def _check_trades(params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - set(TRADES_PARAMS))
    if unknown:
        raise ValueError(
            f"trades has no parameter {', '.join(unknown)} (parameters: {', '.join(TRADES_PARAMS)})"
        )
    if "symbols" not in params:
        raise ValueError('trades needs symbols = ["BTCUSDT", ...]')
    category = params.get("category", "linear")
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, not {category!r}")


def bybit_collect_rules(catalog: Catalog) -> dict[str, DatasetRule]:
    """The collector rules of ByBit's datasets (see the module docstring); the polled ones
    check their parameters with the dataset's own ``prepare``."""
    rules = {"trades": DatasetRule("trades", live=True, check=_check_trades)}
    for name, every in _EVERY.items():
        dataset = catalog[name]
        rules[name] = DatasetRule(
            name,
            default_every=every,
            per_symbol=name != "instruments",
            check=dataset.resolve_params,
        )
    return rules


class _Errors:
    """Errors a sink reports in the background, kept until taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[str] = []

    def __call__(self, exc: HubkitError) -> None:
        self.note(first_line(exc))

    def note(self, text: str) -> None:
        with self._lock:
            self._items.append(text)

    def take(self) -> list[str]:
        with self._lock:
            items, self._items = self._items, []
        return items


class _LiveTrades:
    """A live trades sink; counts the rows it stores (REMOTE upserts)."""

    def __init__(self, job: Job, store: Store) -> None:
        from hubkit.bybit.provider import open_trades

        self._errors = _Errors()
        self._lock = threading.Lock()
        self._rows = 0
        symbols = list(job.params["symbols"])
        category = str(job.params.get("category", "linear"))
        self._sink: Sink = open_trades(symbols, category, store=store)
        self._sink.set_error_handler(self._errors)
        self._subscription = self._sink.subscribe(self._count)

    def _count(self, change: Change) -> None:
        from hubkit.types import Op, Source

        if change.op is Op.GAP and change.gap is not None:
            gap = change.gap
            self._errors.note(
                f"gap {gap.start:%Y-%m-%d %H:%M:%S}..{gap.end:%H:%M:%S}: {gap.reason}"
            )
        elif change.source is Source.REMOTE and change.op is Op.UPSERT:
            with self._lock:
                self._rows += change.frame.height

    def sync(self) -> int:
        return 0

    def rows(self) -> int:
        with self._lock:
            return self._rows

    def lag(self) -> float | None:
        return self._sink.status().lag

    def take_errors(self) -> list[str]:
        return self._errors.take()

    def close(self) -> None:
        self._sink.close()


class _Polled:
    """One catalogue dataset, synced at each ``sync()`` whatever its freshness."""

    def __init__(self, catalog: Catalog, job: Job, store: Store) -> None:
        from hubkit.catalog import Catalog

        dataset = dataclasses.replace(catalog[job.dataset], stale_after=timedelta(0))
        self._catalog = Catalog([dataset])
        self._job = job
        self._store = store

    def sync(self) -> int:
        from hubkit.errors import StaleDataWarning, SyncError

        with warnings.catch_warnings():
            warnings.simplefilter("error", StaleDataWarning)
            try:
                frame = self._catalog.load(self._job.dataset, store=self._store, **self._job.params)
            except StaleDataWarning as exc:  # stored rows returned: the sync itself failed
                raise SyncError(str(exc)) from None
        return frame.height

    def rows(self) -> int:
        return 0

    def lag(self) -> float | None:
        return None

    def take_errors(self) -> list[str]:
        return []

    def close(self) -> None:
        self._catalog.close()


def open_bybit_feed(catalog: Catalog, job: Job, store: Store) -> Feed:
    """The feed of one job of a ByBit collector file (``trades`` live, the rest polled)."""
    if job.live:
        return _LiveTrades(job, store)
    return _Polled(catalog, job, store)
