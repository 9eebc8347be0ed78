"""ByBit providers: instruments kept current, live trades with gap fill, resumable kline backfill.

::

    from hubkit import bybit

    with bybit.InstrumentProvider(store="data.db", on_listing=print) as provider:
        provider.active_instruments("linear")        # status == "Trading", as a Polars frame
        provider.changes                             # listings/delistings seen so far

    with bybit.open_trades(["BTCUSDT", "ETHUSDT"], store="data.db") as trades:
        trades.subscribe(lambda change: print(change.frame.height, "new trades"))

    result = bybit.backfill_klines("BTCUSDT", "60", start="2024-01-01", store="data.db")

Store tables (shared with ``hubkit.load``): ``bybit_instrument``, ``bybit_ticker``,
``bybit_public_trade_<category>`` and one ``bybit_kline_<category>_<symbol>_<interval>`` per
kline series (each series keeps its own backfill cursor).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from hubkit.bridge import arun, run, run_sync_in_worker
from hubkit.bybit.entities import (
    INSTRUMENT_KEY,
    KLINE_KEY,
    PUBLIC_TRADE_KEY,
    Instrument,
    Kline,
    PublicTrade,
)
from hubkit.bybit.klines import (
    Coverage,
    align_down,
    align_up,
    interval_ms,
    page_end,
    to_ms,
)
from hubkit.bybit.presets import CATEGORIES, trades_ws_connection
from hubkit.bybit.rest import BybitRest
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import OfflineError, RemoteError, StaleDataWarning
from hubkit.policies import PeriodicSync, WebSocketSubscription
from hubkit.sink import Sink, aopen_sink, open_sink
from hubkit.types import Change, Op, Source

if TYPE_CHECKING:
    from hubkit.store import Store, TableStore

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

INSTRUMENT_TABLE: Final = "bybit_instrument"
TICKER_TABLE: Final = "bybit_ticker"

ProgressFn = Callable[[int, int | None], object]
"""``progress(done, total)``: candles covered so far and the candles the range holds."""


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def trade_table(category: str) -> str:
    """The table of one category's public trades: ``bybit_public_trade_linear``."""
    return f"bybit_public_trade_{_slug(category)}"


def kline_table(category: str, symbol: str, interval: str) -> str:
    """The table of one kline series: ``bybit_kline_linear_btcusdt_60``."""
    return f"bybit_kline_{_slug(category)}_{_slug(symbol)}_{_slug(interval)}"


def _categories(category: str | Sequence[str] | None) -> tuple[str, ...]:
    if category is None:
        return CATEGORIES
    names = (category,) if isinstance(category, str) else tuple(category)
    for name in names:
        if name not in CATEGORIES:
            raise ValueError(f"unknown ByBit category {name!r}; expected one of {CATEGORIES}")
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

    ``InstrumentProvider(categories=None, *, store=None, rest_url=None,
    interval=timedelta(hours=1), on_listing=None, on_delisting=None, cache=...)``

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
        interval: timedelta | float = timedelta(hours=1),
        on_listing: InstrumentHandler | None = None,
        on_delisting: InstrumentHandler | None = None,
        max_changes: int = 10_000,
        **sink_options: Any,
    ) -> None:
        self._prepare(categories, on_listing, on_delisting, max_changes)
        self.sink = open_sink(
            Instrument,
            INSTRUMENT_KEY,
            store=store,
            connection=BybitRest(rest_url),
            policy=self._policy(interval),
            table=sink_options.pop("table", INSTRUMENT_TABLE),
            **sink_options,
        )
        try:
            self._start()
            try:
                self.sink.force_sync()
            except RemoteError as exc:
                self._offline(exc)
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
        interval: timedelta | float = timedelta(hours=1),
        on_listing: InstrumentHandler | None = None,
        on_delisting: InstrumentHandler | None = None,
        max_changes: int = 10_000,
        **sink_options: Any,
    ) -> InstrumentProvider:
        """The constructor, awaited: ``provider = await InstrumentProvider.aopen(...)``."""
        self = cls.__new__(cls)
        self._prepare(categories, on_listing, on_delisting, max_changes)
        self.sink = await aopen_sink(
            Instrument,
            INSTRUMENT_KEY,
            store=store,
            connection=BybitRest(rest_url),
            policy=self._policy(interval),
            table=sink_options.pop("table", INSTRUMENT_TABLE),
            **sink_options,
        )
        try:
            self._start()
            try:
                await self.sink.aforce_sync()
            except RemoteError as exc:
                self._offline(exc)
        except BaseException:
            await self.sink.aclose()
            raise
        return self

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
        # The first sync is forced by the constructor so that it returns with fresh data.
        params = {"category": list(self.categories)}
        return PeriodicSync(interval=interval, query_on_init=False, params=params)

    def _start(self) -> None:
        frame = self.sink.frame().select("category", "symbol", "status")
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
        if change.source is not Source.REMOTE or change.op is not Op.UPSERT:
            return
        snapshot = {
            (c, s): st
            for c, s, st in change.frame.select("category", "symbol", "status").iter_rows()
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
            for key in gone:
                if self._known[key] == "Trading":
                    events.append(InstrumentChange("delisted", *key, "Trading", None, now))
                del self._known[key]
            self._known.update(snapshot)
            if baseline:
                self._changes.extend(events)
        if gone:
            await self.sink.dao.adelete(gone)
        if not baseline:
            return
        for event in events:
            handler = self._on_listing if event.kind == "listed" else self._on_delisting
            if handler is not None:
                outcome = handler(event)
                if isinstance(outcome, Awaitable):
                    await outcome

    @property
    def changes(self) -> list[InstrumentChange]:
        """Listings and delistings seen since the provider opened, oldest first."""
        with self._lock:
            return list(self._changes)

    # -- reading ------------------------------------------------------------------------------

    def instruments(self, category: str | None = None) -> pl.DataFrame:
        """Every stored instrument (of ``category``, if given), any status."""
        frame = self.sink.frame()
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
        raise ValueError("open_trades needs at least one symbol")
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


# -- kline backfill -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillResult:
    """What a kline backfill did. ``covered_until`` is the first candle start not yet stored
    as closed (the series is complete in [start, covered_until))."""

    category: str
    symbol: str
    interval: str
    table: str
    start: datetime
    end: datetime | None
    covered_until: datetime
    pages: int
    rows: int
    resumed: bool

    @property
    def complete(self) -> bool:
        """True when every closed candle of the range is stored."""
        return self.end is None or self.covered_until > self.end


def _utc_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _open_store(store: Store | str | None) -> tuple[Store, bool]:
    from hubkit.store import Store

    if isinstance(store, Store):
        return store, False
    return Store(store), True


async def _backfill(
    table: TableStore,
    rest: BybitRest,
    spec: EntitySpec,
    *,
    category: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int | None,
    limit: int,
    report: ProgressFn | None,
) -> BackfillResult:
    """Page through [start, end] oldest first; each page's rows and the new coverage cursor
    are committed in one transaction, so a crash loses at most the page in flight."""
    first = align_up(start_ms, interval)
    state = await run_sync_in_worker(table.state)
    old = Coverage.from_cursor(state.cursor)
    resume = old.resume_point(first) if old is not None else None
    lo = old.start if resume is not None and old is not None else first
    pos = resume if resume is not None else first
    resumed = resume is not None
    horizon = end_ms if end_ms is not None else 2**62  # "up to the open candle"
    step = interval_ms(interval)
    pages = rows = 0
    total = None if end_ms is None else max(0, (end_ms - first) // step + 1)
    if report is not None:
        report(max(0, (pos - first) // step), total)
    while pos <= horizon:
        if old is not None and old.start <= pos < old.next and lo <= old.start:
            pos = old.next  # joined a range stored by an earlier run
            await run_sync_in_worker(_set_cursor, table, Coverage(lo, pos).to_cursor())
            continue
        window_end = page_end(pos, interval, limit, horizon)
        frame, server_ms = await rest.kline_page(
            symbol, interval, start=pos, end=window_end, category=category, limit=limit, spec=spec
        )
        now = server_ms if server_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        current = align_down(now, interval)  # the open candle: never counted as stored
        closed = frame.get_column("start") < _utc_ms(current)
        frame = frame.with_columns(confirm=closed)
        nxt = min(window_end + 1, current)
        if frame.height and not closed.all():
            nxt = min(nxt, to_ms(frame.filter(~closed).get_column("start").min()))
        nxt = max(nxt, pos)
        await run_sync_in_worker(_commit, table, frame, Coverage(lo, max(nxt, lo)).to_cursor())
        pages += 1
        rows += frame.height
        if report is not None:
            report(max(0, (nxt - first) // step), total)
        if nxt <= pos or nxt >= current:
            pos = nxt
            break  # reached the open candle: nothing newer exists yet
        pos = nxt
    return BackfillResult(
        category=category,
        symbol=symbol,
        interval=interval,
        table=table.name,
        start=_utc_ms(first),
        end=None if end_ms is None else _utc_ms(end_ms),
        covered_until=_utc_ms(pos),
        pages=pages,
        rows=rows,
        resumed=resumed,
    )


def _set_cursor(table: TableStore, cursor: str) -> None:
    table.set_state(cursor=cursor)


def _commit(table: TableStore, frame: pl.DataFrame, cursor: str) -> None:
    if frame.height:
        table.upsert(frame, cursor=cursor)
    else:
        table.set_state(cursor=cursor)


async def _abackfill(
    symbol: str,
    interval: str,
    start: Any,
    end: Any,
    *,
    category: str,
    store: Store | str | None,
    rest_url: str | None,
    limit: int,
    report: ProgressFn | None,
    rest: BybitRest | None = None,
) -> BackfillResult:
    if category == "option" or category not in CATEGORIES:
        raise ValueError(f"klines exist for spot, linear and inverse, not {category!r}")
    interval = str(interval)
    interval_ms(interval)  # validates
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be within [1, 1000]")
    start_ms = to_ms(start)
    end_ms = None if end is None else to_ms(end)
    spec = reflect(Kline, KLINE_KEY)
    st, own = await run_sync_in_worker(_open_store, store)
    connection = rest if rest is not None else BybitRest(rest_url)
    try:
        name = kline_table(category, symbol, interval)
        table = await run_sync_in_worker(lambda: st.table(spec, name=name))
        return await _backfill(
            table,
            connection,
            spec,
            category=category,
            symbol=symbol,
            interval=interval,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            report=report,
        )
    finally:
        if rest is None:
            await connection.disconnect()
        if own:
            await run_sync_in_worker(st.close)


def _progress_reporter(progress: bool | ProgressFn, desc: str) -> tuple[ProgressFn | None, Any]:
    """A report callback, and the hubkit progress display to close (or None)."""
    if progress is False:
        return None, None
    if callable(progress):
        return progress, None
    from hubkit.progress import progress as make_progress

    bar = make_progress(None, desc)
    last = [0]

    def report(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.set_total(total)
        if done > last[0]:
            bar.update(done - last[0])
            last[0] = done

    return report, bar


def backfill_klines(
    symbol: str,
    interval: str,
    start: Any,
    end: Any = None,
    *,
    category: str = "linear",
    store: Store | str | None = None,
    rest_url: str | None = None,
    limit: int = 1000,
    progress: bool | ProgressFn = True,
) -> BackfillResult:
    """Store every candle of ``symbol``/``interval`` from ``start`` to ``end`` (default: up to
    the open candle), in table ``bybit_kline_<category>_<symbol>_<interval>``.

    ``start``/``end``: ms since the epoch, ``datetime``/``date`` (naive = UTC) or ISO text.
    Pages of ``limit`` candles are fetched oldest first; each page is committed together with
    the cursor ``{"from", "next"}`` (the range complete so far), so after a crash or a kill
    the next call resumes at ``next`` and the table never has a gap inside [from, next).
    A run whose range is already covered makes no request. The open candle is stored with
    ``confirm=False`` and fetched again next time. ``progress``: True for a hubkit progress
    display (widget, terminal bar or nothing, by where it runs), False for none, or a
    callable ``progress(done, total)`` in candles. Blocking; see ``abackfill_klines``.
    """
    report, bar = _progress_reporter(progress, f"klines {symbol} {interval}")
    try:
        result = run(
            _abackfill(
                symbol,
                interval,
                start,
                end,
                category=category,
                store=store,
                rest_url=rest_url,
                limit=limit,
                report=report,
            )
        )
    except BaseException:
        if bar is not None:
            bar.close(failed=True)
        raise
    if bar is not None:
        bar.close()
    return result


async def abackfill_klines(
    symbol: str,
    interval: str,
    start: Any,
    end: Any = None,
    *,
    category: str = "linear",
    store: Store | str | None = None,
    rest_url: str | None = None,
    limit: int = 1000,
    progress: bool | ProgressFn = True,
) -> BackfillResult:
    """``backfill_klines``, awaited (the work runs on hubkit's loop)."""
    report, bar = _progress_reporter(progress, f"klines {symbol} {interval}")
    try:
        result = await arun(
            _abackfill(
                symbol,
                interval,
                start,
                end,
                category=category,
                store=store,
                rest_url=rest_url,
                limit=limit,
                report=report,
            )
        )
    except BaseException:
        if bar is not None:
            bar.close(failed=True)
        raise
    if bar is not None:
        bar.close()
    return result
