"""The ByBit v5 public market-data entities: plain dataclasses whose hints are the schema.

Wire names default to the camelCase of each field (``base_coin`` <-> ``baseCoin``); an
``Annotated[..., wire("a.b")]`` appears only where ByBit nests a value or names it otherwise.
Prices and sizes are strings on the wire and floats here; millisecond timestamps become
tz-aware UTC datetimes; ``""`` (ByBit's "not applicable") becomes ``None``.

Every entity keeps one table for every category it is listed under, except ``PublicTrade``,
whose table is per category (a trade id is only unique inside its category's stream).

Rows that arrive in shapes the REST mapping does not cover are normalised by the small pure
helpers at the end of this module (``kline_row``, ``TickerMerger``, ``normalize_instrument``,
``normalize_ticker``); WebSocket trades decode with their own wire names through
``hubkit.bybit.presets.ws_trade_spec`` (built from ``WS_TRADE_WIRE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final

from hubkit.entity import wire

__all__ = [
    "INSTRUMENT_KEY",
    "KLINE_INTERVALS",
    "KLINE_KEY",
    "PUBLIC_TRADE_KEY",
    "TICKER_KEY",
    "WS_TRADE_WIRE",
    "Instrument",
    "Kline",
    "PublicTrade",
    "Ticker",
    "TickerMerger",
    "kline_row",
    "normalize_instrument",
    "normalize_ticker",
]


@dataclass
class Instrument:
    """One row of ``GET /v5/market/instruments-info``, for any category.

    Key ``(category, symbol)``: ``BTCUSDT`` is both a spot pair and a linear perpetual.
    Fields a category does not have are ``None`` (spot has no ``contract_type``, option has no
    leverage filter, ...). ``delivery_time`` is ``None`` for perpetuals (ByBit sends ``"0"``).
    Indexed by ``symbol`` (an instrument without its category).
    """

    __hubkit_indexes__: ClassVar = ["symbol"]

    category: str
    symbol: str
    status: str
    base_coin: str
    quote_coin: str
    settle_coin: str | None = None
    symbol_id: int | None = None
    contract_type: str | None = None
    options_type: str | None = None
    symbol_type: str | None = None
    display_name: str | None = None
    launch_time: datetime | None = None
    delivery_time: datetime | None = None
    delivery_fee_rate: float | None = None
    price_scale: int | None = None
    # priceFilter
    min_price: Annotated[float | None, wire("priceFilter.minPrice")] = None
    max_price: Annotated[float | None, wire("priceFilter.maxPrice")] = None
    tick_size: Annotated[float | None, wire("priceFilter.tickSize")] = None
    # leverageFilter (linear/inverse)
    min_leverage: Annotated[float | None, wire("leverageFilter.minLeverage")] = None
    max_leverage: Annotated[float | None, wire("leverageFilter.maxLeverage")] = None
    leverage_step: Annotated[float | None, wire("leverageFilter.leverageStep")] = None
    # lotSizeFilter (the set of fields differs by category)
    min_order_qty: Annotated[float | None, wire("lotSizeFilter.minOrderQty")] = None
    max_order_qty: Annotated[float | None, wire("lotSizeFilter.maxOrderQty")] = None
    max_mkt_order_qty: Annotated[float | None, wire("lotSizeFilter.maxMktOrderQty")] = None
    qty_step: Annotated[float | None, wire("lotSizeFilter.qtyStep")] = None
    post_only_max_order_qty: Annotated[float | None, wire("lotSizeFilter.postOnlyMaxOrderQty")] = (
        None
    )
    min_notional_value: Annotated[float | None, wire("lotSizeFilter.minNotionalValue")] = None
    base_precision: Annotated[float | None, wire("lotSizeFilter.basePrecision")] = None
    quote_precision: Annotated[float | None, wire("lotSizeFilter.quotePrecision")] = None
    min_order_amt: Annotated[float | None, wire("lotSizeFilter.minOrderAmt")] = None
    max_order_amt: Annotated[float | None, wire("lotSizeFilter.maxOrderAmt")] = None
    max_limit_order_qty: Annotated[float | None, wire("lotSizeFilter.maxLimitOrderQty")] = None
    max_market_order_qty: Annotated[float | None, wire("lotSizeFilter.maxMarketOrderQty")] = None
    post_only_max_limit_order_size: Annotated[
        float | None, wire("lotSizeFilter.postOnlyMaxLimitOrderSize")
    ] = None
    # riskParameters
    price_limit_ratio_x: Annotated[float | None, wire("riskParameters.priceLimitRatioX")] = None
    price_limit_ratio_y: Annotated[float | None, wire("riskParameters.priceLimitRatioY")] = None
    # linear/inverse
    unified_margin_trade: bool | None = None
    funding_interval: int | None = None  # minutes
    copy_trading: str | None = None
    upper_funding_rate: float | None = None
    lower_funding_rate: float | None = None
    forbid_upl_withdrawal: bool | None = None
    is_pre_listing: bool | None = None
    cur_auction_phase: Annotated[str | None, wire("preListingInfo.curAuctionPhase")] = None
    # spot
    margin_trading: str | None = None
    st_tag: str | None = None
    innovation: str | None = None


@dataclass
class PublicTrade:
    """One public trade (REST ``recent-trade`` item or WebSocket ``publicTrade`` item).

    Key ``exec_id``. The WebSocket short names (``i p v S T BT s``) map to these fields
    through ``WS_TRADE_WIRE`` (see ``hubkit.bybit.presets.ws_trade_spec``). Indexed by
    ``(symbol, time)``: one symbol's trades over a time range read only those rows.
    """

    __hubkit_indexes__: ClassVar = [("symbol", "time")]

    exec_id: str
    symbol: str
    price: float
    size: float
    side: str  # taker side: "Buy" | "Sell"
    time: datetime
    is_block_trade: bool = False
    seq: int | None = None


@dataclass
class Ticker:
    """The 24 h ticker of one symbol, for any category. Key ``(category, symbol)``.

    Linear/inverse WebSocket deltas carry only changed fields: ``TickerMerger`` merges them
    into the last snapshot before decoding, so a stored row is always complete.
    ``ts`` is the time of the message (WebSocket) or of the response (REST), if known.
    Indexed by ``symbol`` (a symbol's ticker without its category).
    """

    __hubkit_indexes__: ClassVar = ["symbol"]

    category: str
    symbol: str
    last_price: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    prev_price24h: float | None = None
    price24h_pcnt: float | None = None
    high_price24h: float | None = None
    low_price24h: float | None = None
    prev_price1h: float | None = None
    turnover24h: float | None = None
    volume24h: float | None = None
    bid1_price: float | None = None
    bid1_size: float | None = None
    ask1_price: float | None = None
    ask1_size: float | None = None
    open_interest: float | None = None
    open_interest_value: float | None = None
    funding_rate: float | None = None
    next_funding_time: datetime | None = None
    funding_interval_hour: int | None = None
    funding_cap: float | None = None
    predicted_delivery_price: float | None = None
    basis: float | None = None
    basis_rate: float | None = None
    basis_rate_year: float | None = None
    delivery_fee_rate: float | None = None
    delivery_time: datetime | None = None
    tick_direction: str | None = None
    pre_open_price: float | None = None
    pre_qty: float | None = None
    cur_pre_listing_phase: str | None = None
    usd_index_price: float | None = None  # spot
    # option
    bid1_iv: float | None = None
    ask1_iv: float | None = None
    mark_iv: float | None = None
    underlying_price: float | None = None
    total_volume: float | None = None
    total_turnover: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    change24h: float | None = None
    ts: datetime | None = None


@dataclass
class Kline:
    """One candle. Key ``(category, symbol, interval, start)``.

    REST rows are arrays ``[start, open, high, low, close, volume, turnover]`` (see
    ``kline_row``); WebSocket rows are objects that also say ``confirm`` (closed or not).
    ``confirm`` is ``None`` when the source did not say. Indexed by ``(symbol, start)``
    and ``start`` (a time range of one series' table, or of one symbol).
    """

    __hubkit_indexes__: ClassVar = [("symbol", "start"), "start"]

    category: str
    symbol: str
    interval: str
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    confirm: bool | None = None


INSTRUMENT_KEY: Final = ("category", "symbol")
PUBLIC_TRADE_KEY: Final = ("exec_id",)
TICKER_KEY: Final = ("category", "symbol")
KLINE_KEY: Final = ("category", "symbol", "interval", "start")

#: ByBit's kline intervals, in the order of their length.
KLINE_INTERVALS: Final = (
    "1",
    "3",
    "5",
    "15",
    "30",
    "60",
    "120",
    "240",
    "360",
    "720",
    "D",
    "W",
    "M",
)

#: WebSocket ``publicTrade`` short keys -> the REST wire keys ``PublicTrade`` reflects.
WS_TRADE_WIRE: Final[Mapping[str, str]] = {
    "i": "execId",
    "s": "symbol",
    "p": "price",
    "v": "size",
    "S": "side",
    "T": "time",
    "BT": "isBlockTrade",
    "seq": "seq",
}

#: Option WebSocket ticker keys that differ from the REST ones.
_WS_OPTION_TICKER_KEYS: Final[Mapping[str, str]] = {
    "bidPrice": "bid1Price",
    "bidSize": "bid1Size",
    "bidIv": "bid1Iv",
    "askPrice": "ask1Price",
    "askSize": "ask1Size",
    "askIv": "ask1Iv",
    "markPriceIv": "markIv",
}


def kline_row(row: Sequence[Any], *, category: str, symbol: str, interval: str) -> dict[str, Any]:
    """Turn one REST kline array ``[start, open, high, low, close, volume, turnover]`` into an
    object with ``Kline``'s wire keys (the series identity comes from the request)."""
    if len(row) < 7:
        raise ValueError(f"kline row has {len(row)} values, expected 7: {row!r}")
    return {
        "category": category,
        "symbol": symbol,
        "interval": interval,
        "start": row[0],
        "open": row[1],
        "high": row[2],
        "low": row[3],
        "close": row[4],
        "volume": row[5],
        "turnover": row[6],
    }


def normalize_instrument(item: Mapping[str, Any], category: str) -> dict[str, Any]:
    """Prepare one instruments-info item for ``Instrument``: add ``category`` and turn a
    perpetual's ``deliveryTime "0"`` into "not applicable"."""
    out = dict(item)
    out["category"] = category
    if out.get("deliveryTime") in ("0", 0):
        out["deliveryTime"] = ""
    return out


def normalize_ticker(
    item: Mapping[str, Any], category: str, ts: int | str | None = None
) -> dict[str, Any]:
    """Prepare one ticker object (REST item or merged WebSocket data) for ``Ticker``.

    Adds ``category`` (and ``ts`` if given), renames the option WebSocket keys and turns a
    perpetual's ``deliveryTime "0"`` into "not applicable" (futures send ISO text, which
    decodes as is).
    """
    out = {_WS_OPTION_TICKER_KEYS.get(k, k): v for k, v in item.items()}
    out["category"] = category
    if ts is not None:
        out["ts"] = ts
    if out.get("deliveryTime") in ("0", 0):
        out["deliveryTime"] = ""
    return out


class TickerMerger:
    """Keeps the last full ticker per symbol and merges linear/inverse deltas into it.

    ``merge(message)`` takes a decoded ``tickers.*`` WebSocket message (a dict);
    ``merge_data(data, kind)`` its ``data`` object and ``type``. Both return the complete
    ticker data to store, or ``None`` for a delta that arrived before any snapshot of its
    symbol (nothing correct can be stored from it; ByBit sends a snapshot first after each
    subscribe). ``kind=None`` (unknown) merges into the last state, or starts one.
    """

    def __init__(self) -> None:
        self._last: dict[str, dict[str, Any]] = {}

    def merge(self, message: Mapping[str, Any]) -> dict[str, Any] | None:
        data = message.get("data")
        if not isinstance(data, Mapping):
            return None
        return self.merge_data(data, str(message.get("type", "snapshot")))

    def merge_data(self, data: Mapping[str, Any], kind: str | None = None) -> dict[str, Any] | None:
        symbol = str(data.get("symbol", ""))
        base = self._last.get(symbol)
        if kind == "snapshot" or (kind is None and base is None):
            self._last[symbol] = dict(data)
            return dict(data)
        if base is None:
            return None
        base.update(data)
        return dict(base)

    def reset(self) -> None:
        """Forget every state (e.g. after a reconnect, before the new snapshots)."""
        self._last.clear()
