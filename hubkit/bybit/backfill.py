"""Resumable kline backfill: every candle of a series over a time range, safe to kill.

::

    from hubkit import bybit

    result = bybit.backfill_klines("BTCUSDT", "60", start="2024-01-01", store="data.db")
    result.covered_until        # the series is complete up to here

Pages are fetched oldest first; each page's rows and the cursor (the range complete so far,
see ``hubkit.bybit.klines.Coverage``) commit in one transaction, so a crash, a ``kill -9`` or a
lost connection costs at most the page in flight, and the next call resumes where the stored
cursor says. Candles go to the table ``bybit_kline_<category>_<symbol>_<interval>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from hubkit.bridge import arun, run, run_sync_in_worker
from hubkit.bybit.entities import KLINE_KEY, Kline
from hubkit.bybit.klines import Coverage, align_down, align_up, interval_ms, page_end, to_ms
from hubkit.bybit.presets import CATEGORIES, kline_table
from hubkit.bybit.rest import BybitRest
from hubkit.changeset import ChangeSet
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import ParameterError

if TYPE_CHECKING:
    from hubkit.store import Store, TableStore

__all__ = ["CLOSE_GUARD_MS", "BackfillResult", "ProgressFn", "abackfill_klines", "backfill_klines"]

CLOSE_GUARD_MS: Final = 2_000
"""A candle counts as closed only this long (server clock) after its end."""

ProgressFn = Callable[[int, int | None], object]
"""``progress(done, total)``: candles covered so far and the candles the range holds
(``total`` is None when the range runs up to the open candle)."""


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
        # The candle open at the answer is never counted as stored. A server may compute the
        # rows a moment before it stamps the answer, so a candle that closed in that moment
        # could carry values from before its close: candles closing within CLOSE_GUARD_MS of
        # the stamp count as open too, and are fetched again by the next run.
        current = align_down(now - CLOSE_GUARD_MS, interval)
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
    """A page of klines and the cursor after it, in one transaction (the cursor alone for
    an empty page)."""
    table.apply(ChangeSet(upsert=frame, cursor=cursor))


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
        raise ParameterError(f"klines exist for spot, linear and inverse, not {category!r}")
    interval = str(interval)
    interval_ms(interval)  # validates
    if not 1 <= limit <= 1000:
        raise ParameterError("limit must be within [1, 1000]")
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
    from hubkit._progress import progress as make_progress

    bar = make_progress(None, desc)
    last = [0]

    def report(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.set_total(total)
        if done > last[0]:
            bar.update(done - last[0])
            last[0] = done

    return report, bar


@contextlib.contextmanager
def _progress_display(progress: bool | ProgressFn, desc: str) -> Iterator[ProgressFn | None]:
    """Yield the report callback; close the display (marked failed on an error) afterwards.

    Entered in the caller's thread, so a notebook widget appears in the caller's cell.
    """
    report, bar = _progress_reporter(progress, desc)
    try:
        yield report
    except BaseException:
        if bar is not None:
            bar.close(failed=True)
        raise
    if bar is not None:
        bar.close()


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
    with _progress_display(progress, f"klines {symbol} {interval}") as report:
        return run(
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
    with _progress_display(progress, f"klines {symbol} {interval}") as report:
        return await arun(
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
