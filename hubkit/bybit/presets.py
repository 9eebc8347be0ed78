"""Where ByBit is: REST and WebSocket base URLs, the REST routes and the store tables.

Pure data and pure functions (no connection is made here: ``hubkit.bybit.rest`` and
``hubkit.bybit.streams`` build them).

Each URL comes from, in order: the argument, the environment (``HUBKIT_BYBIT_REST_URL``,
``HUBKIT_BYBIT_WS_URL``), ByBit mainnet. The WebSocket value is the *base* of the public
streams (``ws://127.0.0.1:9000/v5/public``); the category is appended
(``.../v5/public/linear``). To point hubkit at a local simulator::

    hubkit simulate            # prints the two URLs to export
    export HUBKIT_BYBIT_REST_URL=http://127.0.0.1:9000
    export HUBKIT_BYBIT_WS_URL=ws://127.0.0.1:9000/v5/public
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from hubkit.bybit.entities import Instrument, Kline, PublicTrade, Ticker
from hubkit.bybit.envelope import bybit_route
from hubkit.bybit.klines import kline_interval
from hubkit.connections.routes import Route
from hubkit.errors import ParameterError

__all__ = [
    "CATEGORIES",
    "INSTRUMENTS_ROUTE",
    "INSTRUMENT_TABLE",
    "KLINE_ROUTE",
    "MAINNET_REST_URL",
    "MAINNET_WS_URL",
    "RECENT_TRADE_ROUTE",
    "REST_URL_ENV",
    "ROUTES",
    "TICKERS_ROUTE",
    "TICKER_TABLE",
    "WS_URL_ENV",
    "kline_table",
    "rest_url",
    "trade_table",
    "ws_url",
]

MAINNET_REST_URL: Final = "https://api.bybit.com"
MAINNET_WS_URL: Final = "wss://stream.bybit.com/v5/public"
REST_URL_ENV: Final = "HUBKIT_BYBIT_REST_URL"
WS_URL_ENV: Final = "HUBKIT_BYBIT_WS_URL"

#: ByBit v5 public categories, in the order hubkit syncs them.
CATEGORIES: Final = ("spot", "linear", "inverse", "option")


def rest_url(url: str | None = None) -> str:
    """The REST base URL: ``url`` if given, else ``$HUBKIT_BYBIT_REST_URL``, else mainnet.

    Returned without a trailing slash, e.g. ``"https://api.bybit.com"``.
    """
    chosen = url or os.environ.get(REST_URL_ENV) or MAINNET_REST_URL
    return chosen.rstrip("/")


def ws_url(category: str = "linear", url: str | None = None) -> str:
    """The public WebSocket URL of ``category``: ``url`` (a base) if given, else
    ``$HUBKIT_BYBIT_WS_URL``, else mainnet, with ``/{category}`` appended.

    A base that already ends with ``/{category}`` is returned as is, so a full stream URL
    may be passed too.
    """
    if category not in CATEGORIES:
        raise ParameterError(f"unknown ByBit category {category!r}; expected one of {CATEGORIES}")
    base = (url or os.environ.get(WS_URL_ENV) or MAINNET_WS_URL).rstrip("/")
    if base.endswith("/" + category):
        return base
    return f"{base}/{category}"


# -- REST routes ------------------------------------------------------------------------------
# Rows sit at ``result.list``; errors follow the ``retCode`` envelope. ``BybitRest`` adds what a
# route cannot know from one item (the category, the kline series) before decoding.

INSTRUMENTS_ROUTE: Final = bybit_route("/v5/market/instruments-info", {"limit": 1000})
"""Instruments of one category; follows ``nextPageCursor`` (spot answers in one page)."""

RECENT_TRADE_ROUTE: Final = bybit_route("/v5/market/recent-trade", paginated=False)
"""The newest trades of a symbol (limit: spot 60, others 1000)."""

TICKERS_ROUTE: Final = bybit_route("/v5/market/tickers", paginated=False)
"""Tickers of a category (option needs ``symbol`` or ``baseCoin``)."""

KLINE_ROUTE: Final = bybit_route("/v5/market/kline", paginated=False)
"""Candles as 7-string arrays, newest first (limit 1000)."""

ROUTES: Final[Mapping[type | str, Route]] = {
    Instrument: INSTRUMENTS_ROUTE,
    PublicTrade: RECENT_TRADE_ROUTE,
    Ticker: TICKERS_ROUTE,
    Kline: KLINE_ROUTE,
}


# -- store tables (shared by the providers and ``hubkit.load``) -----------------------------------

INSTRUMENT_TABLE: Final = "bybit_instrument"
TICKER_TABLE: Final = "bybit_ticker"


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def trade_table(category: str) -> str:
    """The table of one category's public trades: ``bybit_public_trade_linear``."""
    return f"bybit_public_trade_{_slug(category)}"


def kline_table(category: str, symbol: str, interval: str) -> str:
    """The table of one kline series (each keeps its own backfill cursor):
    ``bybit_kline_linear_btcusdt_60``; ``"1h"`` names the same table as ``"60"``."""
    return f"bybit_kline_{_slug(category)}_{_slug(symbol)}_{_slug(kline_interval(interval))}"
