"""Where ByBit is: REST and WebSocket base URLs, and the REST routes of the provider.

Each URL comes from, in order: the argument, the environment (``HUBKIT_BYBIT_REST_URL``,
``HUBKIT_BYBIT_WS_URL``), ByBit mainnet. The WebSocket value is the *base* of the public
streams (``ws://127.0.0.1:9000/v5/public``); the category is appended
(``.../v5/public/linear``). To point hubkit at a local simulator::

    hubkit simulate            # prints the two URLs to export
    export HUBKIT_BYBIT_REST_URL=http://127.0.0.1:9000
    export HUBKIT_BYBIT_WS_URL=ws://127.0.0.1:9000/v5/public
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from hubkit.bybit.entities import (
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    WS_TRADE_WIRE,
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
    TickerMerger,
    normalize_ticker,
)
from hubkit.connections.http import Route
from hubkit.entity import EntitySpec, reflect

if TYPE_CHECKING:
    from hubkit.bybit.rest import BybitRest
    from hubkit.connections.websocket import WebSocketConnection
    from hubkit.connections.wsdecode import Extractor
    from hubkit.types import Connection, ErrorHandler

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
    "rest_connection",
    "rest_url",
    "ticker_extractor",
    "tickers_ws_connection",
    "trade_table",
    "trades_ws_connection",
    "ws_trade_spec",
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
        raise ValueError(f"unknown ByBit category {category!r}; expected one of {CATEGORIES}")
    base = (url or os.environ.get(WS_URL_ENV) or MAINNET_WS_URL).rstrip("/")
    if base.endswith("/" + category):
        return base
    return f"{base}/{category}"


# -- REST routes ------------------------------------------------------------------------------
# Rows sit at ``result.list``; errors follow the ``retCode`` envelope. ``BybitRest`` adds what a
# route cannot know from one item (the category, the kline series) before decoding.

INSTRUMENTS_ROUTE: Final = Route.bybit("/v5/market/instruments-info", {"limit": 1000})
"""Instruments of one category; follows ``nextPageCursor`` (spot answers in one page)."""

RECENT_TRADE_ROUTE: Final = Route.bybit("/v5/market/recent-trade", paginated=False)
"""The newest trades of a symbol (limit: spot 60, others 1000)."""

TICKERS_ROUTE: Final = Route.bybit("/v5/market/tickers", paginated=False)
"""Tickers of a category (option needs ``symbol`` or ``baseCoin``)."""

KLINE_ROUTE: Final = Route.bybit("/v5/market/kline", paginated=False)
"""Candles as 7-string arrays, newest first (limit 1000)."""

ROUTES: Final[Mapping[type | str, Route]] = {
    Instrument: INSTRUMENTS_ROUTE,
    PublicTrade: RECENT_TRADE_ROUTE,
    Ticker: TICKERS_ROUTE,
    Kline: KLINE_ROUTE,
}


def rest_connection(url: str | None = None, **options: Any) -> BybitRest:
    """A ``BybitRest`` connection for ``rest_url(url)``; ``options`` go to ``BybitRest``."""
    from hubkit.bybit.rest import BybitRest

    return BybitRest(url, **options)


# -- WebSocket --------------------------------------------------------------------------------


def ws_trade_spec(spec: EntitySpec | None = None) -> EntitySpec:
    """``PublicTrade``'s spec with the WebSocket short names (``i p v S T BT s``) as wire names.

    Same columns, table and fingerprint as the REST spec, so the frames it decodes are
    ``PublicTrade`` frames; decoding needs no renaming pass over the items.
    """
    base = spec if spec is not None else reflect(PublicTrade, PUBLIC_TRADE_KEY)
    by_rest = {rest: ws for ws, rest in WS_TRADE_WIRE.items()}
    columns = tuple(
        dataclasses.replace(c, wire_path=(by_rest.get(c.wire_name, c.wire_name),))
        for c in base.columns
    )
    return dataclasses.replace(base, columns=columns)


def trades_ws_connection(
    category: str = "linear",
    url: str | None = None,
    *,
    rest: Connection | None = None,
    on_error: ErrorHandler | None = None,
    **options: Any,
) -> WebSocketConnection:
    """A ``WebSocketConnection`` to ``ws_url(category, url)`` that decodes ``publicTrade.*``
    frames into ``PublicTrade`` rows. ``options`` go to ``WebSocketConnection``."""
    from hubkit.connections.websocket import WebSocketConnection

    return WebSocketConnection(
        ws_url(category, url),
        {"publicTrade": ws_trade_spec()},
        rest=rest,
        on_error=on_error,
        **options,
    )


def ticker_extractor(category: str) -> Extractor:
    """An extractor for ``tickers.*`` frames of ``category``: each object is merged into the
    last state of its symbol (linear/inverse deltas carry only changed fields), the option
    key names are mapped to the REST ones and ``category`` is added. One per connection:
    it keeps the last state of every symbol it saw."""
    merger = TickerMerger()

    def extract(data: Any) -> list[Mapping[str, Any]]:
        items = [data] if isinstance(data, Mapping) else list(data)
        out: list[Mapping[str, Any]] = []
        for item in items:
            merged = merger.merge_data(item)
            if merged is not None:
                out.append(normalize_ticker(merged, category))
        return out

    return extract


def tickers_ws_connection(
    category: str = "linear",
    url: str | None = None,
    *,
    rest: Connection | None = None,
    on_error: ErrorHandler | None = None,
    **options: Any,
) -> WebSocketConnection:
    """A ``WebSocketConnection`` to ``ws_url(category, url)`` that decodes ``tickers.*`` frames
    into complete ``Ticker`` rows (deltas merged, see ``ticker_extractor``)."""
    from hubkit.connections.websocket import WebSocketConnection
    from hubkit.connections.wsdecode import TopicDecoder

    decoder = TopicDecoder(reflect(Ticker, TICKER_KEY), ticker_extractor(category))
    return WebSocketConnection(
        ws_url(category, url), {"tickers": decoder}, rest=rest, on_error=on_error, **options
    )


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
    ``bybit_kline_linear_btcusdt_60``."""
    return f"bybit_kline_{_slug(category)}_{_slug(symbol)}_{_slug(interval)}"
