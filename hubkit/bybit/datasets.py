"""The ByBit datasets of ``hubkit.load``: ``instruments``, ``trades``, ``tickers``, ``klines``.

=============  ===========================================  ===========  =====================
name           parameters                                   stale after  table
=============  ===========================================  ===========  =====================
instruments    ``category`` (default: every category)       1 h          bybit_instrument
trades         ``symbol``, ``category="linear"``, ``limit``, 30 s         bybit_public_trade_<c>
               ``start``, ``end``
tickers        ``category="linear"``, ``symbol``,            15 s         bybit_ticker
               ``base_coin`` (option without a symbol)
klines         ``symbol``, ``interval``, ``start``, ``end``, 1 min        bybit_kline_<c>_<s>_<i>
               ``category="linear"``
=============  ===========================================  ===========  =====================

``instruments`` is a full snapshot: instruments gone from ByBit's list are deleted from the
table. ``trades`` stores ByBit's newest trades (REST ``recent-trade``) and returns the stored
trades of the symbol in [start, end] (both optional), oldest first; a range that ended before
the symbol's last sync is answered from the store without a request (ByBit's recent trades
could add nothing to it). ``klines`` uses the resumable backfill (a covered range makes no
request) and returns the candles in [start, end], oldest first. Both read only the asked
range from the store, through the tables' ``(symbol, time)``/``start`` indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from hubkit.bybit.backfill import _backfill
from hubkit.bybit.entities import (
    INSTRUMENT_KEY,
    KLINE_KEY,
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
)
from hubkit.bybit.klines import kline_interval, to_ms
from hubkit.bybit.presets import (
    CATEGORIES,
    INSTRUMENT_TABLE,
    TICKER_TABLE,
    kline_table,
    trade_table,
)
from hubkit.bybit.rest import BybitRest
from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.errors import ParameterError
from hubkit.loadcache import LoadCache

if TYPE_CHECKING:
    from hubkit.store import TableStore

__all__ = ["OFFLINE_HINT", "bybit_datasets", "default_catalog"]

OFFLINE_HINT: Final = (
    "To work without ByBit, start the local simulator with `hubkit simulate` and point hubkit "
    "at it: export HUBKIT_BYBIT_REST_URL=http://127.0.0.1:<port> and "
    "HUBKIT_BYBIT_WS_URL=ws://127.0.0.1:<port>/v5/public (the command prints both)."
)


def _category(value: Any, *, allow_option: bool = True) -> str:
    if value not in CATEGORIES or (value == "option" and not allow_option):
        allowed = CATEGORIES if allow_option else tuple(c for c in CATEGORIES if c != "option")
        raise ParameterError(f"category must be one of {allowed}, not {value!r}")
    return str(value)


def _required(params: Mapping[str, Any], name: str, dataset: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise ParameterError(f"dataset {dataset!r} needs the parameter {name}=...")
    return value


def _known(params: Mapping[str, Any], names: tuple[str, ...], dataset: str) -> None:
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ParameterError(
            f"dataset {dataset!r} has no parameter {', '.join(unknown)} "
            f"(parameters: {', '.join(names)})"
        )


# -- instruments --------------------------------------------------------------------------------


def _instruments_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    _known(params, ("category",), "instruments")
    category = params.get("category")
    return {} if category is None else {"category": _category(category)}


def _instruments_sync(rest_url: str | None) -> Any:
    async def sync(request: SyncRequest) -> None:
        category = request.params.get("category")
        categories = [category] if category else list(CATEGORIES)
        async with BybitRest(rest_url) as rest:
            frame = await rest.instruments(categories)
        await request.upsert(frame)
        stored = await request.query({"category": categories})
        fetched = set(frame.select(INSTRUMENT_KEY).iter_rows())
        gone = [k for k in stored.select(INSTRUMENT_KEY).iter_rows() if k not in fetched]
        if gone:
            await request.delete(gone)

    return sync


# -- trades -------------------------------------------------------------------------------------


def _trades_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    _known(params, ("symbol", "category", "limit", "start", "end"), "trades")
    out: dict[str, Any] = {
        "symbol": str(_required(params, "symbol", "trades")),
        "category": _category(params.get("category", "linear")),
    }
    if params.get("limit") is not None:
        try:
            out["limit"] = int(params["limit"])
        except (TypeError, ValueError):
            raise ParameterError(
                f"dataset 'trades': limit={params['limit']!r} is not a whole number"
            ) from None
    for bound in ("start", "end"):
        if params.get(bound) is not None:
            out[bound] = _time(bound, params[bound], "trades")
    if "start" in out and "end" in out and out["end"] < out["start"]:
        raise ParameterError(f"dataset 'trades': end={params['end']!r} is before start")
    return out


def _trades_covered(params: Mapping[str, Any], last_sync: datetime) -> bool:
    """A range that ended before the last sync: recent trades can add nothing to it."""
    return "end" in params and params["end"] < to_ms(last_sync)


def _trades_sync(rest_url: str | None) -> Any:
    async def sync(request: SyncRequest) -> None:
        p = request.params
        async with BybitRest(rest_url) as rest:
            frame = await rest.recent_trades(p["symbol"], p["category"], limit=p.get("limit"))
        await request.upsert(frame)

    return sync


def _trades_read(table: TableStore, params: Mapping[str, Any]) -> pl.DataFrame:
    c = table.table.c
    where = c.symbol == params["symbol"]
    if "start" in params:
        where = where & (c.time >= _ms_utc(params["start"]))
    if "end" in params:
        where = where & (c.time <= _ms_utc(params["end"]))
    return table.query(where, order_by=["time", "exec_id"])


# -- tickers ------------------------------------------------------------------------------------


def _tickers_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    _known(params, ("category", "symbol", "base_coin"), "tickers")
    out: dict[str, Any] = {"category": _category(params.get("category", "linear"))}
    if params.get("symbol"):
        out["symbol"] = str(params["symbol"])
    if params.get("base_coin"):
        out["base_coin"] = str(params["base_coin"])
    if out["category"] == "option" and "symbol" not in out and "base_coin" not in out:
        out["base_coin"] = "BTC"  # ByBit's own default for option lists
    return out


def _tickers_sync(rest_url: str | None) -> Any:
    async def sync(request: SyncRequest) -> None:
        p = request.params
        extra = {"baseCoin": p["base_coin"]} if "base_coin" in p else {}
        async with BybitRest(rest_url) as rest:
            frame = await rest.tickers(p["category"], p.get("symbol"), **extra)
        await request.upsert(frame)

    return sync


def _tickers_read(table: TableStore, params: Mapping[str, Any]) -> pl.DataFrame:
    where: dict[str, Any] = {"category": params["category"]}
    if "symbol" in params:
        where["symbol"] = params["symbol"]
    frame = table.query(where, order_by="symbol")
    if "base_coin" in params and "symbol" not in params:
        frame = frame.filter(pl.col("symbol").str.starts_with(f"{params['base_coin']}-"))
    return frame


# -- klines -------------------------------------------------------------------------------------


def _time(name: str, value: Any, dataset: str = "klines") -> int:
    """``to_ms(value)``; a value that is not a time is refused naming its parameter."""
    try:
        return to_ms(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ParameterError(
            f"dataset {dataset!r}: {name}={value!r} is not a time ({exc}); give a date or time "
            "such as 2024-01-01 or 2024-01-01T12:00:00Z, or ms since the epoch"
        ) from None


def _klines_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    _known(params, ("symbol", "interval", "start", "end", "category"), "klines")
    interval = kline_interval(_required(params, "interval", "klines"))
    end = params.get("end")
    return {
        "symbol": str(_required(params, "symbol", "klines")),
        "interval": interval,
        "start": _time("start", _required(params, "start", "klines")),
        "end": None if end is None else _time("end", end),
        "category": _category(params.get("category", "linear"), allow_option=False),
    }


def _klines_table(params: Mapping[str, Any]) -> str:
    return kline_table(params["category"], params["symbol"], params["interval"])


def _klines_sync(rest_url: str | None) -> Any:
    async def sync(request: SyncRequest) -> None:
        p = request.params
        async with BybitRest(rest_url) as rest:
            await _backfill(
                request.table,
                rest,
                request.table.spec,
                category=p["category"],
                symbol=p["symbol"],
                interval=p["interval"],
                start_ms=p["start"],
                end_ms=p["end"],
                limit=1000,
                report=None,
            )

    return sync


def _ms_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _klines_read(table: TableStore, params: Mapping[str, Any]) -> pl.DataFrame:
    start = table.table.c["start"]
    where = start >= _ms_utc(params["start"])
    if params["end"] is not None:
        where = where & (start <= _ms_utc(params["end"]))
    return table.query(where, order_by="start")


# -- the catalogue --------------------------------------------------------------------------------


def bybit_datasets(*, rest_url: str | None = None) -> list[Dataset]:
    """The four ByBit datasets (see the module docstring), reading from ``rest_url`` (default:
    ``$HUBKIT_BYBIT_REST_URL``, then mainnet, resolved at each sync)."""
    return [
        Dataset(
            "instruments",
            Instrument,
            INSTRUMENT_KEY,
            _instruments_sync(rest_url),
            stale_after=timedelta(hours=1),
            table=INSTRUMENT_TABLE,
            prepare=_instruments_params,
            description="ByBit instruments of every category (or one), as one table",
            offline_hint=OFFLINE_HINT,
        ),
        Dataset(
            "trades",
            PublicTrade,
            PUBLIC_TRADE_KEY,
            _trades_sync(rest_url),
            stale_after=timedelta(seconds=30),
            table=lambda p: trade_table(p["category"]),
            read=_trades_read,
            prepare=_trades_params,
            description="ByBit public trades of one symbol (REST recent-trade, accumulated), "
            "optionally in [start, end]",
            offline_hint=OFFLINE_HINT,
            range_params=("start", "end"),
            covered=_trades_covered,
        ),
        Dataset(
            "tickers",
            Ticker,
            TICKER_KEY,
            _tickers_sync(rest_url),
            stale_after=timedelta(seconds=15),
            table=TICKER_TABLE,
            read=_tickers_read,
            prepare=_tickers_params,
            description="ByBit 24 h tickers of a category (or one symbol)",
            offline_hint=OFFLINE_HINT,
        ),
        Dataset(
            "klines",
            Kline,
            KLINE_KEY,
            _klines_sync(rest_url),
            stale_after=timedelta(minutes=1),
            table=_klines_table,
            read=_klines_read,
            prepare=_klines_params,
            description="ByBit candles of one symbol and interval over [start, end]",
            offline_hint=OFFLINE_HINT,
        ),
    ]


def default_catalog(*, rest_url: str | None = None, cache: LoadCache | None = None) -> Catalog:
    """A new catalog with ByBit's ``instruments``, ``trades``, ``tickers`` and ``klines``.

    ``rest_url`` overrides ``$HUBKIT_BYBIT_REST_URL`` (default: ByBit mainnet); ``cache``
    (default: the catalog's own) keeps stores and fresh frames between loads
    (``hubkit.loadcache``).
    """
    return Catalog(bybit_datasets(rest_url=rest_url), cache=cache)
