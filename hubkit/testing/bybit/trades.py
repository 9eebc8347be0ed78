"""Trade streams: deterministic public trades per symbol, with 1-minute aggregates.

A ``TradeStream`` owns the trades of one WebSocket trade topic: one symbol for spot, linear and
inverse, or every option of one base coin (``publicTrade.BTC``). Trade ``k`` of a stream is a
pure function of (seed, category, key, k): its time offset, price move, size, side and id come
from a private ``random.Random`` consumed in order, so the same seed gives the same trades
however the wall clock groups them into messages.

Rules the generators keep (tests rely on them):
- every trade moves or keeps the last price of its symbol; prices are multiples of the tick;
- trade times never decrease within a stream; ids are unique (UUID-shaped for derivatives and
  options, numeric strings for spot);
- 1-minute aggregates are updated as each trade is made, so klines always include every trade.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

from hubkit.testing.bybit.catalog import Instrument
from hubkit.testing.bybit.pricing import MINUTE, PricePath, fmt_units, key_hash, mix64, uuid_like

__all__ = ["MinuteBar", "SymbolState", "Trade", "TradeStream"]


@dataclass(slots=True)
class Trade:
    """One public trade as the simulator produced it (all wire strings precomputed)."""

    category: str
    symbol: str
    exec_id: str
    time: int  # ms
    price_units: int  # price in units of 10**-decimals
    price: str
    size_units: int
    size: str
    side: str  # taker side: "Buy" or "Sell"
    tick_direction: str  # PlusTick / ZeroPlusTick / MinusTick / ZeroMinusTick
    seq: int
    block: bool
    rpi: bool
    option_extra: tuple[str, str, str, str] | None = None  # mP, iP, mIv, iv

    def ws_item(self) -> dict[str, object]:
        """The item of a ``publicTrade`` message's ``data`` array."""
        item: dict[str, object] = {
            "T": self.time,
            "s": self.symbol,
            "S": self.side,
            "v": self.size,
            "p": self.price,
        }
        if self.category in ("linear", "inverse"):
            item["L"] = self.tick_direction
        item["i"] = self.exec_id
        item["BT"] = self.block
        item["RPI"] = self.rpi
        item["seq"] = self.seq
        if self.option_extra is not None:
            item["mP"], item["iP"], item["mIv"], item["iv"] = self.option_extra
        return item

    def rest_item(self) -> dict[str, object]:
        """The item of a ``/v5/market/recent-trade`` list."""
        item: dict[str, object] = {
            "execId": self.exec_id,
            "symbol": self.symbol,
            "price": self.price,
            "size": self.size,
            "side": self.side,
            "time": str(self.time),
            "isBlockTrade": self.block,
            "isRPITrade": self.rpi,
            "seq": str(self.seq),
        }
        if self.option_extra is not None:
            item["mP"], item["iP"], item["mIv"], item["iv"] = self.option_extra
        return item


@dataclass(slots=True)
class MinuteBar:
    """Aggregate of the trades of one symbol in one UTC minute."""

    open: int
    high: int
    low: int
    close: int
    volume: int  # quantity units
    turnover: float


@dataclass
class SymbolState:
    """The live state of one symbol: last price, its trades and minute bars."""

    inst: Instrument
    path: PricePath
    live_start: int  # ms: trades exist from here on
    start_price: int  # price units at live_start
    price: int
    last_nonzero_up: bool = True
    trades: list[Trade] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    minutes: dict[int, MinuteBar] = field(default_factory=dict)
    minute_keys: list[int] = field(default_factory=list)
    volume_total: int = 0
    turnover_total: float = 0.0
    high: int = 0
    low: int = 0
    target_second: int = -1
    target: float = 0.0

    @property
    def tick_value(self) -> float:
        return self.inst.tick_units / 10.0**self.inst.decimals

    def to_units(self, price: float) -> int:
        """Round a price to the nearest tick, as price units (at least one tick)."""
        ticks = max(1, round(price / self.tick_value))
        return ticks * self.inst.tick_units

    def turnover_of(self, price_units: int, size_units: int) -> float:
        price = price_units / 10.0**self.inst.decimals
        size = size_units / 10.0**self.inst.qty_decimals
        return size / price if self.inst.is_inverse else size * price

    def add(self, trade: Trade) -> None:
        """Record a trade: history, minute bar, totals."""
        self.trades.append(trade)
        self.times.append(trade.time)
        key = trade.time // MINUTE * MINUTE
        bar = self.minutes.get(key)
        turnover = self.turnover_of(trade.price_units, trade.size_units)
        p = trade.price_units
        if bar is None:
            self.minutes[key] = MinuteBar(p, p, p, p, trade.size_units, turnover)
            self.minute_keys.append(key)
        else:
            bar.high = max(bar.high, p)
            bar.low = min(bar.low, p)
            bar.close = p
            bar.volume += trade.size_units
            bar.turnover += turnover
        self.price = p
        self.volume_total += trade.size_units
        self.turnover_total += turnover
        self.high = max(self.high, p)
        self.low = min(self.low, p) if self.low else p

    def price_before(self, t_ms: int) -> int:
        """Last trade price strictly before ``t_ms`` (the start price when there is none)."""
        i = bisect.bisect_left(self.times, t_ms)
        return self.trades[i - 1].price_units if i else self.start_price

    def recent(self, limit: int) -> list[Trade]:
        """The newest ``limit`` trades, newest first."""
        return self.trades[-limit:][::-1]

    def aggregate(self, start: int, end: int) -> tuple[int, int, int, int, int, float] | None:
        """(open, high, low, close, volume, turnover) of the trades in [start, end), or None."""
        keys = self.minute_keys
        lo = bisect.bisect_left(keys, start // MINUTE * MINUTE)
        hi = bisect.bisect_left(keys, end)
        if lo >= hi:
            return None
        if start % MINUTE or end % MINUTE:  # not minute-aligned: go through the trades
            i = bisect.bisect_left(self.times, start)
            j = bisect.bisect_left(self.times, end)
            if i >= j:
                return None
            ts = self.trades[i:j]
            prices = [t.price_units for t in ts]
            vol = sum(t.size_units for t in ts)
            turn = sum(self.turnover_of(t.price_units, t.size_units) for t in ts)
            return prices[0], max(prices), min(prices), prices[-1], vol, turn
        bars = [self.minutes[k] for k in keys[lo:hi]]
        return (
            bars[0].open,
            max(b.high for b in bars),
            min(b.low for b in bars),
            bars[-1].close,
            sum(b.volume for b in bars),
            sum(b.turnover for b in bars),
        )


class TradeStream:
    """The trades behind one ``publicTrade`` topic, generated on demand up to a given time.

    ``advance(now_ms)`` makes every trade due up to ``now_ms`` and returns them in order.
    ``rate`` is the mean number of trades per simulated second (exponential gaps).
    """

    def __init__(
        self,
        seed: int,
        category: str,
        key: str,
        members: list[SymbolState],
        rate: float,
        live_start: int,
        index_path: PricePath,
    ) -> None:
        self.category = category
        self.key = key
        self.members = members
        self.rate = rate
        self.hash = key_hash(seed, "trades", category, key)
        self.rng = random.Random(self.hash)
        self.next_time = live_start
        self.count = 0
        self.seq = 1_000_000_000 + mix64(self.hash) % 9_000_000_000
        self.trades: list[Trade] = []
        self.times: list[int] = []
        self.index_path = index_path
        self.history_count = 0  # trades made when the stream started (its back history)

    def _gap(self) -> int:
        if self.rate <= 0:
            return 1 << 62
        return int(self.rng.expovariate(self.rate) * 1000.0)

    def advance(self, now_ms: int) -> list[Trade]:
        """Make and record every trade with time <= ``now_ms``; return the new ones in order."""
        out: list[Trade] = []
        while self.next_time <= now_ms:
            trade = self._make(self.next_time)
            out.append(trade)
            self.next_time += self._gap()
        return out

    def _make(self, t: int) -> Trade:
        rng = self.rng
        st = self.members[0] if len(self.members) == 1 else rng.choice(self.members)
        inst = st.inst
        ticks = st.price // inst.tick_units
        second = t // 1000
        if second != st.target_second:  # the path moves slowly: one evaluation per second
            st.target_second = second
            st.target = st.path.at(t) / st.tick_value
        target = st.target
        if rng.random() < 0.45:
            move = 0
        else:
            sigma = max(1.0, ticks * 2e-5)
            move = round(rng.gauss((target - ticks) * 0.01, sigma))
        ticks = max(1, ticks + move)
        price = ticks * inst.tick_units
        if move > 0:
            st.last_nonzero_up, direction, side = True, "PlusTick", "Buy"
        elif move < 0:
            st.last_nonzero_up, direction, side = False, "MinusTick", "Sell"
        else:
            direction = "ZeroPlusTick" if st.last_nonzero_up else "ZeroMinusTick"
            side = "Buy" if rng.random() < 0.5 else "Sell"
        price_value = price / 10.0**inst.decimals
        qty_value = inst.qty_units / 10.0**inst.qty_decimals
        notional = 1000.0 / qty_value if inst.is_inverse else 1000.0 / (price_value * qty_value)
        steps = max(1, int(rng.lognormvariate(math.log(max(notional, 1.0)), 1.0)))
        size_units = steps * inst.qty_units
        k = self.count
        self.count += 1
        self.seq += 1 + (k % 3)
        if inst.category == "spot":
            exec_id = str(2_100_000_000_000_000_000 + inst.symbol_id * 10_000_000_000 + k)
        else:
            exec_id = uuid_like(self.hash, k)
        extra = None
        if inst.category == "option":
            underlying = self.index_path.at(t)
            iv = 0.45 + 0.2 * rng.random()
            extra = (
                fmt_units(price, inst.decimals),
                f"{underlying:.2f}",
                f"{iv:.4f}",
                f"{iv + rng.uniform(-0.02, 0.02):.4f}",
            )
        trade = Trade(
            category=inst.category,
            symbol=inst.symbol,
            exec_id=exec_id,
            time=t,
            price_units=price,
            price=fmt_units(price, inst.decimals),
            size_units=size_units,
            size=fmt_units(size_units, inst.qty_decimals),
            side=side,
            tick_direction=direction,
            seq=self.seq,
            block=rng.random() < 0.002,
            rpi=inst.category == "spot" and rng.random() < 0.05,
            option_extra=extra,
        )
        st.add(trade)
        self.trades.append(trade)
        self.times.append(t)
        return trade
