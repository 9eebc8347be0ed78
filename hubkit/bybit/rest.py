"""``BybitRest``: a ``hubkit.Connection`` for ByBit's public market data over REST.

::

    async with BybitRest() as rest:                       # $HUBKIT_BYBIT_REST_URL or mainnet
        instruments = await rest.instruments()            # every category, one frame
        trades = await rest.recent_trades("BTCUSDT")      # newest trades, oldest first
        page = await rest.klines("BTCUSDT", "60", start=ms, end=ms2, limit=1000)

As a connection, ``fetch(spec, params)`` serves the four ByBit entities (``Instrument``,
``PublicTrade``, ``Ticker``, ``Kline``; any spec whose class is one of them), so it can back
a sink with ``QueryOnInit``/``PeriodicSync``. It is read-only: ``create``/``update``/``remove``
raise ``ProtocolError``.

It wraps an ``HttpConnection`` (retries with backoff, 429/10006/403 waits, a client-side rate
limit, error translation) and adds what ByBit's rows do not carry themselves: the category of
instruments and tickers, and the series of kline arrays. Errors are those of
``HttpConnection``: ``TransportError``/``RemoteTimeout`` when ByBit cannot be reached,
``ProtocolError`` for ``retCode != 0``, ``RateLimited``, ``DecodeError`` for rows that do not
decode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import polars as pl

from hubkit.bybit.entities import (
    INSTRUMENT_KEY,
    KLINE_KEY,
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
    kline_row,
    normalize_instrument,
    normalize_ticker,
)
from hubkit.bybit.envelope import BYBIT_RATE_LIMIT_HEADERS
from hubkit.bybit.klines import kline_interval
from hubkit.bybit.presets import (
    CATEGORIES,
    INSTRUMENTS_ROUTE,
    KLINE_ROUTE,
    RECENT_TRADE_ROUTE,
    ROUTES,
    TICKERS_ROUTE,
    rest_url,
)
from hubkit.connections.http import HttpConnection
from hubkit.connections.retry import RetryPolicy, TokenBucket
from hubkit.connections.routes import Route
from hubkit.entity import EntitySpec, reflect
from hubkit.errors import DecodeError, ParameterError, ProtocolError, SchemaError

__all__ = ["RECENT_TRADE_LIMITS", "BybitRest", "rest_connection"]

#: The largest ``limit`` recent-trade accepts, per category.
RECENT_TRADE_LIMITS: Mapping[str, int] = {
    "spot": 60,
    "linear": 1000,
    "inverse": 1000,
    "option": 1000,
}

_MAX_PAGES = 1000


def _category(params: Mapping[str, Any], default: str | None = "linear") -> str:
    category = params.get("category") or default
    if category not in CATEGORIES:
        raise ParameterError(f"unknown ByBit category {category!r}; expected one of {CATEGORIES}")
    return str(category)


class BybitRest:
    """ByBit v5 public market REST endpoints as one read-only ``hubkit.Connection``.

    ``BybitRest(url=None, *, timeout=10.0, retries=3, rate_limit=50.0, transport=None)``:
    ``url`` as ``presets.rest_url`` resolves it; ``rate_limit`` in requests per second (ByBit
    bans an IP for minutes above 600 requests per 5 s), None for no client-side limit;
    ``transport`` an ``httpx.AsyncBaseTransport`` for tests. Use it from one event loop.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int | RetryPolicy = 3,
        rate_limit: float | TokenBucket | None = 50.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = rest_url(url)
        self.http = HttpConnection(
            self.url,
            dict(ROUTES),
            timeout=timeout,
            retries=retries,
            rate_limit=rate_limit,
            transport=transport,
            rate_limit_headers=BYBIT_RATE_LIMIT_HEADERS,
        )
        self._specs = {
            Instrument: reflect(Instrument, INSTRUMENT_KEY),
            PublicTrade: reflect(PublicTrade, PUBLIC_TRADE_KEY),
            Ticker: reflect(Ticker, TICKER_KEY),
            Kline: reflect(Kline, KLINE_KEY),
        }

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"<BybitRest {self.url} {state}>"

    # -- lifetime -------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.http.connect()

    async def disconnect(self) -> None:
        await self.http.disconnect()

    async def __aenter__(self) -> BybitRest:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self.http.is_connected

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (every retry counts)."""
        return self.http.requests_made

    # -- raw pages ------------------------------------------------------------------------

    async def _body(self, route: Route, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """One request; the envelope checked and ``result.list`` present."""
        body = await self.http.request(
            route.method,
            route.path,
            params={**route.params, **{k: v for k, v in params.items() if v is not None}},
            envelope=route.envelope,
        )
        result = body.get("result") if isinstance(body, Mapping) else None
        if not isinstance(result, Mapping) or not isinstance(result.get("list"), list):
            raise DecodeError(f"GET {route.path}: the response has no result.list", field="list")
        return body  # type: ignore[no-any-return]

    async def _get(self, route: Route, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """One request's ``result`` object."""
        return (await self._body(route, params))["result"]  # type: ignore[no-any-return]

    async def _paged(self, route: Route, params: Mapping[str, Any]) -> list[Any]:
        """Every item over ``nextPageCursor`` pages."""
        items: list[Any] = []
        query = dict(params)
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            result = await self._get(route, query)
            items.extend(result["list"])
            cursor = result.get("nextPageCursor")
            if not cursor:
                return items
            if cursor in seen:
                raise ProtocolError(
                    f"GET {route.path}: the cursor did not advance ({cursor!r})", temporary=False
                )
            seen.add(str(cursor))
            query["cursor"] = cursor
        raise ProtocolError(f"GET {route.path}: more than {_MAX_PAGES} pages", temporary=False)

    @staticmethod
    def _decode(spec: EntitySpec, items: Sequence[Mapping[str, Any]], what: str) -> pl.DataFrame:
        try:
            return spec.from_wire(items)
        except DecodeError as exc:
            exc.args = (f"{what}: {exc}", *exc.args[1:])
            raise

    # -- the four entities ----------------------------------------------------------------

    async def instruments(
        self,
        category: str | Sequence[str] | None = None,
        *,
        spec: EntitySpec | None = None,
        **params: Any,
    ) -> pl.DataFrame:
        """Instruments of ``category`` (a name, several, or None for every category) as one
        frame; every page is followed. ``params`` are passed on (``status``, ``baseCoin``...).
        """
        if category is None:
            categories: Sequence[str] = CATEGORIES
        elif isinstance(category, str):
            categories = (category,)
        else:
            categories = tuple(category)
        items: list[dict[str, Any]] = []
        for name in categories:
            _category({"category": name})
            raw = await self._paged(INSTRUMENTS_ROUTE, {**params, "category": name})
            items.extend(normalize_instrument(item, name) for item in raw)
        return self._decode(spec or self._specs[Instrument], items, "instruments-info")

    async def recent_trades(
        self,
        symbol: str,
        category: str = "linear",
        *,
        limit: int | None = None,
        spec: EntitySpec | None = None,
    ) -> pl.DataFrame:
        """The newest trades of ``symbol``, oldest first (``limit`` default: the maximum)."""
        _category({"category": category})
        top = RECENT_TRADE_LIMITS[category]
        count = top if limit is None else max(1, min(limit, top))
        result = await self._get(
            RECENT_TRADE_ROUTE, {"category": category, "symbol": symbol, "limit": count}
        )
        frame = self._decode(spec or self._specs[PublicTrade], result["list"], "recent-trade")
        return frame.sort("time", maintain_order=True) if frame.height > 1 else frame

    async def tickers(
        self,
        category: str = "linear",
        symbol: str | None = None,
        *,
        spec: EntitySpec | None = None,
        **params: Any,
    ) -> pl.DataFrame:
        """Tickers of ``category`` (one ``symbol``, or all; option needs a symbol or
        ``baseCoin=...``). ``ts`` is the response time."""
        _category({"category": category})
        body = await self._body(TICKERS_ROUTE, {**params, "category": category, "symbol": symbol})
        ts = body.get("time")
        items = [normalize_ticker(item, category, ts) for item in body["result"]["list"]]
        return self._decode(spec or self._specs[Ticker], items, "tickers")

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        category: str = "linear",
        limit: int = 1000,
        spec: EntitySpec | None = None,
    ) -> pl.DataFrame:
        """One kline request: candles of ``symbol`` whose start lies in [start, end] (ms),
        at most ``limit``, oldest first. ``confirm`` is left None (see ``kline_page``)."""
        frame, _ = await self.kline_page(
            symbol, interval, start=start, end=end, category=category, limit=limit, spec=spec
        )
        return frame

    async def kline_page(
        self,
        symbol: str,
        interval: str,
        *,
        start: int | None = None,
        end: int | None = None,
        category: str = "linear",
        limit: int = 1000,
        spec: EntitySpec | None = None,
    ) -> tuple[pl.DataFrame, int | None]:
        """``klines`` plus the server's clock (the envelope's ``time``, ms) at the answer, which
        tells which candle is still open. ``interval``: ByBit's name or a usual one (``"1h"``).
        """
        _category({"category": category})
        interval = kline_interval(interval)
        body = await self._body(
            KLINE_ROUTE,
            {
                "category": category,
                "symbol": symbol,
                "interval": interval,
                "start": start,
                "end": end,
                "limit": limit,
            },
        )
        try:
            items = [
                kline_row(row, category=category, symbol=symbol, interval=interval)
                for row in body["result"]["list"]
            ]
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"kline: {exc}", field="list") from exc
        frame = self._decode(spec or self._specs[Kline], items, "kline")
        if frame.height > 1:
            frame = frame.sort("start")
        server = body.get("time")
        try:
            server_ms = int(server) if server is not None else None
        except (TypeError, ValueError):
            server_ms = None
        return frame, server_ms

    # -- hubkit.Connection ----------------------------------------------------------------

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Rows of ``spec``'s ByBit entity. Parameters by entity:

        - ``Instrument``: ``category`` (None/absent: every category), other query params;
        - ``PublicTrade``: ``symbol`` (or ``symbols``: several), ``category``, ``limit``;
        - ``Ticker``: ``category``, ``symbol``, other query params;
        - ``Kline``: ``symbol``, ``interval``, ``start``, ``end`` (ms), ``category``, ``limit``.
        """
        p = dict(params or {})
        cls = spec.cls
        if cls is Instrument:
            category = p.pop("category", None)
            return await self.instruments(category, spec=spec, **p)
        if cls is PublicTrade:
            symbols = p.get("symbols") or [p["symbol"]]
            frames = [
                await self.recent_trades(s, _category(p), limit=p.get("limit"), spec=spec)
                for s in symbols
            ]
            return pl.concat(frames) if len(frames) > 1 else frames[0]
        if cls is Ticker:
            category = _category(p)
            p.pop("category", None)
            symbol = p.pop("symbol", None)
            return await self.tickers(category, symbol, spec=spec, **p)
        if cls is Kline:
            return await self.klines(
                p["symbol"],
                str(p["interval"]),
                start=p.get("start"),
                end=p.get("end"),
                category=_category(p),
                limit=int(p.get("limit", 1000)),
                spec=spec,
            )
        raise SchemaError(f"BybitRest serves no {cls.__name__} rows", field=spec.table)

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        raise ProtocolError("ByBit public market data is read-only", temporary=False)

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        raise ProtocolError("ByBit public market data is read-only", temporary=False)

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        raise ProtocolError("ByBit public market data is read-only", temporary=False)


def rest_connection(url: str | None = None, **options: Any) -> BybitRest:
    """A ``BybitRest`` connection for ``rest_url(url)``; ``options`` go to ``BybitRest``."""
    return BybitRest(url, **options)
