"""ByBit WebSocket connections: public trades and tickers decoded into the ByBit entities.

::

    conn = trades_ws_connection("linear")           # $HUBKIT_BYBIT_WS_URL or mainnet
    await conn.subscribe(["publicTrade.BTCUSDT"])

Each builder returns a ``WebSocketConnection`` speaking ``BybitWsProtocol`` to
``presets.ws_url(category, url)``; ``options`` go to ``WebSocketConnection``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hubkit.bybit.entities import (
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    WS_TRADE_WIRE,
    PublicTrade,
    Ticker,
    TickerMerger,
    normalize_ticker,
)
from hubkit.bybit.presets import ws_url
from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections.websocket import WebSocketConnection
from hubkit.connections.wsdecode import Extractor, TopicDecoder
from hubkit.entity import EntitySpec, reflect

if TYPE_CHECKING:
    from hubkit.types import Connection, ErrorHandler

__all__ = [
    "ticker_extractor",
    "tickers_ws_connection",
    "trades_ws_connection",
    "ws_trade_spec",
]


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
    return WebSocketConnection(
        ws_url(category, url),
        {"publicTrade": ws_trade_spec()},
        protocol=BybitWsProtocol(),
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
    decoder = TopicDecoder(reflect(Ticker, TICKER_KEY), ticker_extractor(category))
    return WebSocketConnection(
        ws_url(category, url),
        {"tickers": decoder},
        protocol=BybitWsProtocol(),
        rest=rest,
        on_error=on_error,
        **options,
    )
