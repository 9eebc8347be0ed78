"""REST handlers of the simulator: ``/v5/market/*`` requests to ByBit's JSON answers.

``RestApi.handle(path, params)`` is pure request-to-response logic (faults and rate limits live
in the server). Answers follow ByBit exactly: the ``{retCode, retMsg, result, retExtInfo,
time}`` envelope, string-typed numbers, business errors as HTTP 200 with ``retCode`` 10001 and
ByBit's messages, HTTP 404 for an unknown route.

Simulator choices where ByBit is silent: out-of-range ``limit`` values are an error (10001
``params error: limit invalid``) rather than clamped; ``recent-trade`` lists newest first.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from hubkit.testing.bybit.instruments import CATEGORIES, Catalog, Instrument
from hubkit.testing.bybit.market import Candle, Market
from hubkit.testing.bybit.pricing import INTERVALS, SimClock, candle_start, key_hash, mix64, unit
from hubkit.testing.bybit.trades import Trade

__all__ = ["TICKER_FIELDS", "RestApi", "RestResult", "envelope"]

ENCODER = msgspec.json.Encoder()

# REST ticker fields per category, in ByBit's order
_TICKER_FIELDS: dict[str, tuple[str, ...]] = {
    "linear": (
        "symbol", "lastPrice", "indexPrice", "markPrice", "prevPrice24h", "price24hPcnt",
        "highPrice24h", "lowPrice24h", "prevPrice1h", "openInterest", "openInterestValue",
        "turnover24h", "volume24h", "fundingRate", "nextFundingTime", "predictedDeliveryPrice",
        "basisRate", "deliveryFeeRate", "deliveryTime", "ask1Size", "bid1Price", "ask1Price",
        "bid1Size", "basis", "preOpenPrice", "preQty", "curPreListingPhase",
        "fundingIntervalHour", "basisRateYear", "fundingCap",
    ),
    "spot": (
        "symbol", "bid1Price", "bid1Size", "ask1Price", "ask1Size", "lastPrice", "prevPrice24h",
        "price24hPcnt", "highPrice24h", "lowPrice24h", "turnover24h", "volume24h",
        "usdIndexPrice",
    ),
    "option": (
        "symbol", "bid1Price", "bid1Size", "bid1Iv", "ask1Price", "ask1Size", "ask1Iv",
        "lastPrice", "highPrice24h", "lowPrice24h", "markPrice", "indexPrice", "markIv",
        "underlyingPrice", "openInterest", "turnover24h", "volume24h", "totalVolume",
        "totalTurnover", "delta", "gamma", "vega", "theta", "predictedDeliveryPrice",
        "change24h",
    ),
}  # fmt: skip
TICKER_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {**_TICKER_FIELDS, "inverse": _TICKER_FIELDS["linear"]}
)

RECENT_LIMITS = MappingProxyType(
    {
        "spot": (60, 60),
        "linear": (1000, 500),
        "inverse": (1000, 500),
        "option": (1000, 500),
    }
)
BOOK_LIMITS = MappingProxyType(
    {"spot": (1000, 1), "linear": (1000, 25), "inverse": (1000, 25), "option": (25, 1)}
)
OI_INTERVALS = MappingProxyType(
    {"5min": 5, "15min": 15, "30min": 30, "1h": 60, "4h": 240, "1d": 1440}
)

MSG_CATEGORY = "Illegal category"
MSG_CATEGORY_UNSUPPORTED = "params error: Category is invalid"
MSG_SYMBOL = "params error: symbol invalid"


def envelope(result: object, now_ms: int, code: int = 0, msg: str = "OK") -> dict[str, Any]:
    """ByBit's response envelope."""
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


@dataclass
class RestResult:
    """An HTTP answer: status, extra headers and body bytes."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ParamError(Exception):
    """A request parameter ByBit would refuse (answered as retCode 10001)."""


KlineRecorder = Callable[[Instrument, str, Candle, bool], None]


class RestApi:
    """Answers ``/v5/market/*`` GET requests from the market model.

    ``on_kline`` (optional) is called for every candle served, for the ground-truth log.
    """

    def __init__(
        self,
        market: Market,
        catalog: Catalog,
        clock: SimClock,
        on_kline: KlineRecorder | None = None,
    ) -> None:
        self.market = market
        self.catalog = catalog
        self.clock = clock
        self.on_kline = on_kline
        self.routes: dict[str, Callable[[Mapping[str, str], int], object]] = {
            "/v5/market/time": self._time,
            "/v5/market/instruments-info": self._instruments,
            "/v5/market/recent-trade": self._recent_trade,
            "/v5/market/tickers": self._tickers,
            "/v5/market/kline": self._kline,
            "/v5/market/orderbook": self._orderbook,
            "/v5/market/open-interest": self._open_interest,
        }

    def handle(self, path: str, params: Mapping[str, str]) -> RestResult:
        """Answer one request; ``params`` are the decoded query parameters."""
        route = self.routes.get(path)
        if route is None:
            return RestResult(404, b"404 page not found", content_type="text/plain")
        now = self.clock.now_ms()
        try:
            result = route(params, now)
        except ParamError as exc:
            body = envelope({}, now, 10001, str(exc))
        else:
            body = envelope(result, now)
        return RestResult(200, ENCODER.encode(body))

    # -- parameter helpers ----------------------------------------------------------------

    @staticmethod
    def _category(params: Mapping[str, str], allowed: tuple[str, ...] = CATEGORIES) -> str:
        category = params.get("category", "")
        if category not in CATEGORIES:
            raise ParamError(MSG_CATEGORY)
        if category not in allowed:
            raise ParamError(MSG_CATEGORY_UNSUPPORTED)
        return category

    @staticmethod
    def _limit(params: Mapping[str, str], high: int, default: int) -> int:
        raw = params.get("limit", "")
        if raw == "":
            return default
        try:
            limit = int(raw)
        except ValueError:
            raise ParamError("params error: limit invalid") from None
        if not 1 <= limit <= high:
            raise ParamError("params error: limit invalid")
        return limit

    @staticmethod
    def _int(params: Mapping[str, str], name: str) -> int | None:
        raw = params.get(name, "")
        if raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise ParamError(f"params error: {name} invalid") from None

    def _symbol(self, category: str, params: Mapping[str, str]) -> Instrument:
        inst = self.catalog.get(category, params.get("symbol", ""))
        if inst is None:
            raise ParamError(MSG_SYMBOL)
        return inst

    # -- routes -----------------------------------------------------------------------------

    def _time(self, params: Mapping[str, str], now: int) -> object:
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000 + 423_213)}

    def _instruments(self, params: Mapping[str, str], now: int) -> object:
        category = self._category(params)
        items = list(self.catalog.lists[category])
        symbol = params.get("symbol", "")
        if symbol:
            items = [i for i in items if i.symbol == symbol]
        status = params.get("status", "")
        if status:
            items = [i for i in items if i.status == status]
        elif not symbol:
            default = (
                ("PreLaunch", "Trading", "Delivering") if category == "option" else ("Trading",)
            )
            items = [i for i in items if i.status in default]
        base = params.get("baseCoin", "") or ("BTC" if category == "option" and not symbol else "")
        if base and category != "spot":
            items = [i for i in items if i.base_coin == base]
        if category == "spot":
            return {"category": category, "list": [i.item for i in items]}
        limit = self._limit(params, 1000, 500)
        cursor = params.get("cursor", "")
        if cursor:
            after = _decode_cursor(cursor)
            items = [i for i in items if i.symbol > after]
        page = items[:limit]
        next_cursor = ""
        if len(items) > limit:
            next_cursor = urllib.parse.quote(
                f"first={page[0].symbol}&last={page[-1].symbol}", safe=""
            )
        return {
            "category": category,
            "list": [i.item for i in page],
            "nextPageCursor": next_cursor,
        }

    def _recent_trade(self, params: Mapping[str, str], now: int) -> object:
        category = self._category(params)
        high, default = RECENT_LIMITS[category]
        symbol = params.get("symbol", "")
        if category == "option":
            if symbol:
                inst = self._symbol(category, params)
                base = inst.base_coin
            else:
                base = params.get("baseCoin", "") or "BTC"
            limit = self._limit(params, high, default)
            stream = self.market.activate("option", symbol or base)
            if stream is None:
                raise ParamError("params error: baseCoin invalid")
            self.market.advance(self.clock.now_ms())
            opt_type = params.get("optionType", "")
            picked: list[Trade] = []
            if symbol:  # the symbol's own trades, newest first
                st = self.market.state(category, symbol)
                picked = st.recent(limit) if st is not None else []
                if opt_type and symbol.split("-")[3] != opt_type[:1]:
                    picked = []
            else:
                for k in range(stream.count - 1, -1, -1):
                    name = stream.member_of(k).inst.symbol
                    if opt_type and name.split("-")[3] != opt_type[:1]:
                        continue
                    picked.append(stream.trade(k))
                    if len(picked) >= limit:
                        break
            return {"category": category, "list": [t.rest_item() for t in picked]}
        inst = self._symbol(category, params)
        limit = self._limit(params, high, default)
        self.market.activate(category, inst.symbol)
        self.market.advance(self.clock.now_ms())
        st = self.market.state(category, inst.symbol)
        trades = st.recent(limit) if st is not None else []
        return {"category": category, "list": [t.rest_item() for t in trades]}

    def _tickers(self, params: Mapping[str, str], now: int) -> object:
        category = self._category(params)
        symbol = params.get("symbol", "")
        base = params.get("baseCoin", "")
        if symbol:
            inst = self._symbol(category, params)
            self.market.activate(category, inst.symbol)
            self.market.advance(self.clock.now_ms())
            insts = [inst]
        elif category == "option":
            if not base:
                raise ParamError("params error: symbol or baseCoin is required")
            exp = params.get("expDate", "")
            insts = [
                i
                for i in self.catalog.lists[category]
                if i.base_coin == base and (not exp or i.symbol.split("-")[1] == exp)
            ]
        else:
            insts = [i for i in self.catalog.lists[category] if i.status == "Trading"]
        names = TICKER_FIELDS[category]
        out = []
        for inst in insts:
            values = self.market.ticker_values(inst, now)
            out.append({name: values[name] for name in names})
        return {"category": category, "list": out}

    def _kline(self, params: Mapping[str, str], now: int) -> object:
        category = params.get("category", "") or "linear"
        if category not in CATEGORIES:
            raise ParamError(MSG_CATEGORY)
        if category == "option":
            raise ParamError(MSG_CATEGORY_UNSUPPORTED)
        inst = self._symbol(category, params)
        interval = params.get("interval", "")
        if interval not in INTERVALS:
            raise ParamError("params error: interval invalid")
        limit = self._limit(params, 1000, 200)
        start = self._int(params, "start")
        end = self._int(params, "end")
        self.market.activate(category, inst.symbol)
        now = self.clock.now_ms()
        self.market.advance(now)
        current = candle_start(interval, now)
        rows = []
        for s in self.market.kline_starts(inst, interval, start, end, limit, now):
            candle = self.market.candle(inst, interval, s, now)
            if self.on_kline is not None:
                self.on_kline(inst, interval, candle, s < current)
            rows.append(self.market.candle_strings(inst, candle))
        return {"symbol": inst.symbol, "category": category, "list": rows}

    def _orderbook(self, params: Mapping[str, str], now: int) -> object:
        category = self._category(params)
        inst = self._symbol(category, params)
        high, default = BOOK_LIMITS[category]
        limit = self._limit(params, high, default)
        self.market.activate(category, inst.symbol)
        self.market.advance(now)
        book = self.market.book(inst, depth=limit)
        self.market.step_book(book, now, mutations=0)
        bids, asks = book.top(limit)
        return {
            "s": inst.symbol,
            "b": book.fmt(bids),
            "a": book.fmt(asks),
            "ts": now,
            "u": book.update_id,
            "seq": book.seq,
            "cts": book.ts,
        }

    def _open_interest(self, params: Mapping[str, str], now: int) -> object:
        category = self._category(params, allowed=("linear", "inverse"))
        inst = self._symbol(category, params)
        minutes = OI_INTERVALS.get(params.get("intervalTime", ""))
        if minutes is None:
            raise ParamError("params error: intervalTime invalid")
        step = minutes * 60_000
        limit = self._limit(params, 200, 50)
        end = self._int(params, "endTime")
        start = self._int(params, "startTime") or 0
        cursor = params.get("cursor", "")
        newest = (now if end is None else min(end, now)) // step * step
        if cursor:
            newest = min(newest, _decode_oi_cursor(cursor) * 1000 - step)
        h = key_hash(self.market.seed, "oi", category, inst.symbol)
        rows: list[dict[str, str]] = []
        t = newest
        while t >= start and len(rows) < limit:
            level = 1e6 * (1 + 0.3 * unit(h)) * (0.9 + 0.2 * unit(mix64(h ^ (t // step))))
            rows.append({"openInterest": f"{level:.8f}", "timestamp": str(t)})
            t -= step
        next_cursor = ""
        if rows and t >= start:
            last = int(rows[-1]["timestamp"]) // 1000
            next_cursor = urllib.parse.quote(f"lastid={last}&lasttime={last}", safe="")
        return {
            "symbol": inst.symbol,
            "category": category,
            "list": rows,
            "nextPageCursor": next_cursor,
        }


def _unquote_all(text: str) -> str:
    for _ in range(3):
        decoded = urllib.parse.unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _decode_cursor(cursor: str) -> str:
    """The ``last`` symbol of an instruments cursor, however many times it was URL-encoded."""
    fields = dict(urllib.parse.parse_qsl(_unquote_all(cursor)))
    last = fields.get("last")
    if not last:
        raise ParamError("params error: cursor invalid")
    return last


def _decode_oi_cursor(cursor: str) -> int:
    fields = dict(urllib.parse.parse_qsl(_unquote_all(cursor)))
    try:
        return int(fields["lasttime"])
    except (KeyError, ValueError):
        raise ParamError("params error: cursor invalid") from None
