"""Entities the connection tests decode into, reflected by ``hubkit.entity.reflect``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from hubkit.entity import reflect, wire


@dataclass
class Instrument:
    symbol: str
    status: str
    tick_size: Annotated[float, wire("priceFilter.tickSize")]


@dataclass
class Trade:
    """A ByBit ``publicTrade`` item, by its short WebSocket keys."""

    trade_id: Annotated[str, wire("i")]
    symbol: Annotated[str, wire("s")]
    price: Annotated[float, wire("p")]
    size: Annotated[float, wire("v")]
    side: Annotated[str, wire("S")]
    time: Annotated[int, wire("T")]


@dataclass
class Kline:
    start: Annotated[int, wire("startTime")]
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float


@dataclass
class SymbolOnly:
    symbol: Annotated[str, wire("s")]


@dataclass
class PriceSymbol:
    price: float
    symbol: str


INSTRUMENT = reflect(Instrument, "symbol")
TRADE = reflect(Trade, "trade_id")
KLINE = reflect(Kline, "start")
SYMBOL_ONLY = reflect(SymbolOnly, "symbol")
PRICE_SYMBOL = reflect(PriceSymbol, "symbol")
