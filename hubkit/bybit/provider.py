"""ByBit providers: instruments kept current, live trades with gap fill, resumable kline backfill.

::

    from hubkit import bybit

    with bybit.InstrumentProvider(store="data.db", on_listing=print) as provider:
        provider.active_instruments("linear")        # status == "Trading", as a Polars frame
        provider.changes                             # listings/delistings seen so far

    with bybit.open_trades(["BTCUSDT", "ETHUSDT"], store="data.db") as trades:
        trades.subscribe(lambda change: print(change.frame.height, "new trades"))

    result = bybit.backfill_klines("BTCUSDT", "60", start="2024-01-01", store="data.db")

The kline backfill lives in ``hubkit.bybit.backfill`` (re-exported here). Store tables
(shared with ``hubkit.load``): ``bybit_instrument``, ``bybit_ticker``,
``bybit_public_trade_<category>`` and one ``bybit_kline_<category>_<symbol>_<interval>`` per
kline series (each series keeps its own backfill cursor).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.bridge import get_bridge, run_sync_in_worker
from hubkit.bybit.backfill import BackfillResult, abackfill_klines, backfill_klines
from hubkit.bybit.entities import INSTRUMENT_KEY, PUBLIC_TRADE_KEY, Instrument, PublicTrade
from hubkit.bybit.presets import CATEGORIES, INSTRUMENT_TABLE, kline_table, trade_table
from hubkit.bybit.rest import BybitRest
from hubkit.bybit.streams import trades_ws_connection
from hubkit.errors import OfflineError, ParameterError, RemoteError, StaleDataWarning
from hubkit.policies import PeriodicSync, WebSocketSubscription
from hubkit.sink import Sink, aopen_sink, open_sink
from hubkit.types import Change, Op, Source

if TYPE_CHECKING:
    from hubkit.store import Store

__all__ = [
    "INSTRUMENT_TABLE",
    "BackfillResult",
    "InstrumentChange",
    "InstrumentProvider",
    "abackfill_klines",
    "aopen_trades",
    "backfill_klines",
    "kline_table",
    "open_trades",
    "trade_table",
]


def _categories(category: str | Sequence[str] | None) -> tuple[str, ...]:
    if category is None:
        return CATEGORIES
    names = (category,) if isinstance(category, str) else tuple(category)
    for name in names:
        if name not in CATEGORIES:
            raise ParameterError(f"unknown ByBit category {name!r}; expected one of {CATEGORIES}")
    return names


# -- instruments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentChange:
    """One listing or delisting seen by an ``InstrumentProvider``.

    ``kind`` is ``"listed"`` (now ``Trading``: new, or out of ``PreLaunch``) or
    ``"delisted"`` (no longer ``Trading``: another status, or gone from ByBit's list).
    ``new_status`` is None when the instrument is gone.
    """

    kind: str
    category: str
    symbol: str
    old_status: str | None
    new_status: str | None
    at: datetime


InstrumentHandler = Callable[[InstrumentChange], object]


class InstrumentProvider:
    """ByBit instruments in a local table, refreshed by a ``PeriodicSync`` sink it owns.

    ``InstrumentProvider(categories=None, *, store=None, rest_url=None, connection=None,
    interval=timedelta(hours=1), on_listing=None, on_delisting=None, **sink_options)``

    ``connection`` replaces the ``BybitRest(rest_url)`` it would create (the sink owns and
    closes it); ``sink_options`` go to ``open_sink`` (``cache``, ``name``, ``table``).

    Blocking; returns once the first sync is done. If ByBit cannot be reached it starts from
    the stored instruments with a ``StaleDataWarning``, or raises ``OfflineError`` when none
    are stored. ``sink`` is the nested sink (status, panel, subscribe...). Each sync is a full
    snapshot of the provider's categories; comparing snapshots, the provider records
    listings and delistings in ``changes`` and calls ``on_listing``/``on_delisting`` with
    an ``InstrumentChange`` (on hubkit's loop thread; keep them short). Instruments gone
    from ByBit's list are deleted from the table. The first snapshot into an empty table
    only sets the baseline. Close it (or use ``with``/``async with``) to stop syncing.
    """

    sink: Sink
    categories: tuple[str, ...]

    def __init__(
        self,
        categories: str | Sequence[str] | None = None,
        *,
        store: Store | str | None = None,
        rest_url: str | None = None,
        connection: BybitRest | None = None,
        interval: timedelta | float = timedelta(hours=1),
        on_listing: InstrumentHandler | None = None,
        on_delisting: InstrumentHandler | None = None,
        max_changes: int = 10_000,
        **sink_options: Any,
    ) -> None:
        self._prepare(categories, on_listing, on_delisting, max_changes)
        opening = self._aopen_sink(store, rest_url, connection, interval, sink_options)
        offline = get_bridge().run(opening)
        if offline is not None:
            try:
                self._offline(offline)
            except BaseException:
                self.sink.close()
                raise

    @classmethod
    async def aopen(
        cls,
        categories: str | Sequence[str] | None = None,
        *,
        store: Store | str | None = None,
        rest_url: str | None = None,
        connection: BybitRest | None = None,
        interval: timedelta | float = timedelta(hours=1),
        on_listing: InstrumentHandler | None = None,
        on_delisting: InstrumentHandler | None = None,
        max_changes: int = 10_000,
        **sink_options: Any,
    ) -> InstrumentProvider:
        """The constructor, awaited: ``provider = await InstrumentProvider.aopen(...)``."""
        self = cls.__new__(cls)
        self._prepare(categories, on_listing, on_delisting, max_changes)
        opening = self._aopen_sink(store, rest_url, connection, interval, sink_options)
        offline = await get_bridge().arun(opening)
        if offline is not None:
            try:
                self._offline(offline)
            except BaseException:
                await self.sink.aclose()
                raise
        return self

    async def _aopen_sink(
        self,
        store: Store | str | None,
        rest_url: str | None,
        connection: BybitRest | None,
        interval: timedelta | float,
        sink_options: dict[str, Any],
    ) -> RemoteError | None:
        """Open the sink and run the first sync (on hubkit's loop); the error that kept ByBit
        from answering it, or None."""
        self.sink = await aopen_sink(
            Instrument,
            INSTRUMENT_KEY,
            store=store,
            connection=connection if connection is not None else BybitRest(rest_url),
            policy=self._policy(interval),
            table=sink_options.pop("table", INSTRUMENT_TABLE),
            **sink_options,
        )
        try:
            await run_sync_in_worker(self._start)
            try:
                await self.sink.aforce_sync()
            except RemoteError as exc:
                return exc
        except BaseException:
            await self.sink.aclose()
            raise
        return None

    def _prepare(
        self,
        categories: str | Sequence[str] | None,
        on_listing: InstrumentHandler | None,
        on_delisting: InstrumentHandler | None,
        max_changes: int,
    ) -> None:
        self.categories = _categories(categories)
        self._on_listing = on_listing
        self._on_delisting = on_delisting
        self._lock = threading.Lock()
        self._changes: deque[InstrumentChange] = deque(maxlen=max_changes)
        self._known: dict[tuple[str, str], str] = {}

    def _policy(self, interval: timedelta | float) -> PeriodicSync:
        # The first sync is forced by the constructor so that it returns with fresh data. Each
        # sync is a complete snapshot of the categories: instruments gone from it are deleted
        # in the same transaction as the snapshot is stored.
        params = {"category": list(self.categories)}
        return PeriodicSync(interval=interval, query_on_init=False, params=params, snapshot=params)

    def _start(self) -> None:
        frame = self.sink.frame(full=True).select("category", "symbol", "status")
        self._known = {(c, s): st for c, s, st in frame.iter_rows()}
        self.sink.subscribe(self._on_change)

    def _offline(self, exc: RemoteError) -> None:
        import warnings

        if not self._known:
            raise OfflineError(
                f"cannot reach ByBit to load instruments ({exc}) and none are stored; "
                "run `hubkit simulate` and set HUBKIT_BYBIT_REST_URL to its REST URL"
            ) from exc
        warnings.warn(
            f"using {len(self._known)} stored instruments: ByBit could not be reached ({exc})",
            StaleDataWarning,
            stacklevel=3,
        )

    # -- reaction to updates ----------------------------------------------------------------

    async def _on_change(self, change: Change) -> None:
        if change.source is not Source.REMOTE:
            return
        if change.op is Op.UPSERT:
            events, baseline = self._compare(change.frame)
        elif change.op is Op.DELETE:
            events, baseline = self._vanished(change.frame)
        else:
            return
        if baseline:
            for event in events:
                handler = self._on_listing if event.kind == "listed" else self._on_delisting
                if handler is not None:
                    outcome = handler(event)
                    if isinstance(outcome, Awaitable):
                        await outcome

    def _compare(self, frame: pl.DataFrame) -> tuple[list[InstrumentChange], bool]:
        """Listings and delistings between the known instruments and a stored snapshot."""
        snapshot = {
            (c, s): st for c, s, st in frame.select("category", "symbol", "status").iter_rows()
        }
        now = datetime.now(UTC)
        events: list[InstrumentChange] = []
        with self._lock:
            baseline = bool(self._known)
            for key, status in snapshot.items():
                old = self._known.get(key)
                if old == status:
                    continue
                if status == "Trading":
                    events.append(InstrumentChange("listed", *key, old, status, now))
                elif old == "Trading":
                    events.append(InstrumentChange("delisted", *key, old, status, now))
            gone = [k for k in self._known if k[0] in self.categories and k not in snapshot]
            self._forget(gone, events, now)
            self._known.update(snapshot)
            if baseline:
                self._changes.extend(events)
        return events, baseline

    def _vanished(self, frame: pl.DataFrame) -> tuple[list[InstrumentChange], bool]:
        """Delistings of deleted instruments a snapshot did not account for already."""
        now = datetime.now(UTC)
        events: list[InstrumentChange] = []
        with self._lock:
            baseline = bool(self._known)
            gone = [k for k in frame.select("category", "symbol").iter_rows() if k in self._known]
            self._forget(gone, events, now)
            if baseline:
                self._changes.extend(events)
        return events, baseline

    def _forget(
        self, gone: list[tuple[str, str]], events: list[InstrumentChange], now: datetime
    ) -> None:
        for key in gone:
            if self._known[key] == "Trading":
                events.append(InstrumentChange("delisted", *key, "Trading", None, now))
            del self._known[key]

    @property
    def changes(self) -> list[InstrumentChange]:
        """Listings and delistings seen since the provider opened, oldest first."""
        with self._lock:
            return list(self._changes)

    # -- reading ------------------------------------------------------------------------------

    def instruments(self, category: str | None = None) -> pl.DataFrame:
        """Every stored instrument (of ``category``, if given), any status."""
        frame = self.sink.frame(full=True)
        if category is not None:
            frame = frame.filter(pl.col("category") == category)
        return frame.sort("category", "symbol")

    def active_instruments(self, category: str | None = None) -> pl.DataFrame:
        """Instruments whose status is ``Trading`` (of ``category``, if given)."""
        return self.instruments(category).filter(pl.col("status") == "Trading")

    def refresh(self) -> None:
        """Sync now and wait for it (raises the sync's error)."""
        self.sink.force_sync()

    async def arefresh(self) -> None:
        await self.sink.aforce_sync()

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop syncing and close the nested sink. Idempotent."""
        self.sink.close()

    async def aclose(self) -> None:
        await self.sink.aclose()

    def __enter__(self) -> InstrumentProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> InstrumentProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<InstrumentProvider {','.join(self.categories)} {self.sink!r}>"


# -- live trades ------------------------------------------------------------------------------


def _trades_parts(
    symbols: str | Iterable[str],
    category: str,
    rest_url: str | None,
    ws_url: str | None,
    ws_options: dict[str, Any],
) -> tuple[Any, WebSocketSubscription, list[str]]:
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    if not names:
        raise ParameterError("open_trades needs at least one symbol")
    _categories(category)
    rest = BybitRest(rest_url)
    connection = trades_ws_connection(category, ws_url, **ws_options)
    policy = WebSocketSubscription(
        topics=[f"publicTrade.{name}" for name in names],
        rest=rest,
        rest_params={"symbols": names, "category": category},
        time_column="time",
        partition="symbol",
    )
    return connection, policy, names


def open_trades(
    symbols: str | Iterable[str],
    category: str = "linear",
    *,
    store: Store | str | None = None,
    rest_url: str | None = None,
    ws_url: str | None = None,
    ws_options: dict[str, Any] | None = None,
    **sink_options: Any,
) -> Sink:
    """A live sink of the public trades of ``symbols`` (table ``bybit_public_trade_<category>``).

    Subscribes to ``publicTrade.<symbol>`` over WebSocket; after each reconnect (and at start,
    if trades are stored) it backfills every symbol over REST ``recent-trade`` (the newest
    1000), drops trades already stored, and emits a GAP change for a symbol whose backfill
    does not reach back to its last stored trade. Blocking; returns once subscribed.
    ``ws_options`` go to ``WebSocketConnection`` (e.g. ``ping_interval``); ``sink_options``
    to ``open_sink`` (``cache``, ``name``, ``table``).
    """
    connection, policy, _ = _trades_parts(symbols, category, rest_url, ws_url, ws_options or {})
    return open_sink(
        PublicTrade,
        PUBLIC_TRADE_KEY,
        store=store,
        connection=connection,
        policy=policy,
        table=sink_options.pop("table", trade_table(category)),
        **sink_options,
    )


async def aopen_trades(
    symbols: str | Iterable[str],
    category: str = "linear",
    *,
    store: Store | str | None = None,
    rest_url: str | None = None,
    ws_url: str | None = None,
    ws_options: dict[str, Any] | None = None,
    **sink_options: Any,
) -> Sink:
    """``open_trades``, awaited."""
    connection, policy, _ = _trades_parts(symbols, category, rest_url, ws_url, ws_options or {})
    return await aopen_sink(
        PublicTrade,
        PUBLIC_TRADE_KEY,
        store=store,
        connection=connection,
        policy=policy,
        table=sink_options.pop("table", trade_table(category)),
        **sink_options,
    )
