"""Trade streams: deterministic public trades per symbol, kept as compact columns.

A ``TradeStream`` owns the trades of one WebSocket trade topic: one symbol for spot, linear and
inverse, or every option of one base coin (``publicTrade.BTC``). Trade ``k`` of a stream is a
pure function of (seed, category, key, k): its time offset, price move, size, side and flags
come from a private ``random.Random`` consumed in order, so the same seed gives the same trades
however the wall clock groups them into messages or generation slices.

Storage: a stream keeps only numbers, in typed ``array`` columns: time, price and size (int64
units) and one flag byte (side, tick direction, block, RPI); option streams add the member
index and two implied volatilities. That is 25 bytes a trade (about 45 for options). The wire
strings (ids, prices, sizes, ``seq``) are derived from those numbers and ``k`` when a trade is
sent or read (``ws_items``, ``trade``, ``frame``), so the full history costs little memory.

Rules the generators keep (tests rely on them):
- the mean rate is ``rate`` trades per simulated second (exponential gaps, kept in fractions
  of a millisecond, so several trades may share a millisecond at high rates);
- every trade moves or keeps the last price of its symbol; prices are multiples of the tick;
- trade times never decrease within a stream; ids are unique (UUID-shaped for derivatives and
  options, numeric strings for spot);
- 1-minute aggregates are updated as each trade is made, so klines always include every trade.
"""

from __future__ import annotations

import bisect
import math
import random
from array import array
from dataclasses import dataclass, field

from hubkit.testing.bybit.instruments import Instrument
from hubkit.testing.bybit.pricing import MINUTE, PricePath, fmt_units, key_hash, mix64, uuid_like

__all__ = ["DIRECTIONS", "SIDES", "MinuteBar", "SymbolState", "Trade", "TradeStream"]

SIDES = ("Sell", "Buy")  # flag bit 0
DIRECTIONS = ("PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick")  # flag bits 1-2
F_BUY = 1
F_BLOCK = 8
F_RPI = 16
SPOT_ID_BASE = 210_000_000_000  # spot ids: str((SPOT_ID_BASE + symbol_id) * 10**10 + k)


@dataclass(slots=True)
class Trade:
    """One public trade with its wire strings (made on demand from a stream's columns)."""

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
    """Aggregate of the trades of one symbol in one UTC minute (first/last: trade times)."""

    open: int
    high: int
    low: int
    close: int
    volume: int  # quantity units
    turnover: float
    first: int
    last: int


@dataclass
class SymbolState:
    """The live state of one symbol: last price, where its trades are, and minute bars.

    ``times`` holds the times of this symbol's trades; for a single-symbol stream it is the
    stream's own column and ``pos`` is None (trade ``i`` of the symbol is trade ``i`` of the
    stream); for option streams ``pos`` maps the symbol's trades to stream positions.
    """

    inst: Instrument
    path: PricePath
    live_start: int  # ms: trades exist from here on
    start_price: int  # price units at live_start
    price: int
    last_nonzero_up: bool = True
    stream: TradeStream | None = None
    times: array[int] = field(default_factory=lambda: array("q"))
    pos: array[int] | None = None
    minutes: dict[int, MinuteBar] = field(default_factory=dict)
    minute_keys: list[int] = field(default_factory=list)
    bar: MinuteBar | None = None  # the newest minute bar
    bar_key: int = -1
    volume_total: int = 0
    turnover_total: float = 0.0
    high: int = 0
    low: int = 0
    target_second: int = -1
    target: float = 0.0
    last_flags: int = -1  # flag byte of the last trade (-1: none yet)

    @property
    def tick_value(self) -> float:
        return self.inst.tick_units / 10.0**self.inst.decimals

    @property
    def count(self) -> int:
        """How many trades this symbol has."""
        return len(self.times)

    @property
    def last_side(self) -> str:
        """Taker side of the last trade ("" before the first)."""
        return SIDES[self.last_flags & 1] if self.last_flags >= 0 else ""

    @property
    def last_direction(self) -> str:
        """Tick direction of the last trade ("" before the first)."""
        return DIRECTIONS[(self.last_flags >> 1) & 3] if self.last_flags >= 0 else ""

    def to_units(self, price: float) -> int:
        """Round a price to the nearest tick, as price units (at least one tick)."""
        ticks = max(1, round(price / self.tick_value))
        return ticks * self.inst.tick_units

    def turnover_of(self, price_units: int, size_units: int) -> float:
        price = price_units / 10.0**self.inst.decimals
        size = size_units / 10.0**self.inst.qty_decimals
        return size / price if self.inst.is_inverse else size * price

    def position(self, i: int) -> int:
        """Stream position of this symbol's trade ``i``."""
        return i if self.pos is None else self.pos[i]

    def trade(self, i: int) -> Trade:
        """This symbol's trade ``i`` (oldest first) with its wire strings."""
        assert self.stream is not None
        return self.stream.trade(self.position(i))

    def price_before(self, t_ms: int) -> int:
        """Last trade price strictly before ``t_ms`` (the start price when there is none)."""
        i = bisect.bisect_left(self.times, t_ms)
        if not i:
            return self.start_price
        assert self.stream is not None
        return self.stream.prices[self.position(i - 1)]

    def recent(self, limit: int) -> list[Trade]:
        """The newest ``limit`` trades, newest first."""
        n = self.count
        return [self.trade(i) for i in range(n - 1, max(n - limit, 0) - 1, -1)]

    def _scan(self, start: int, end: int) -> tuple[int, int, int, int, int, float] | None:
        """Aggregate of the trades in [start, end), trade by trade."""
        assert self.stream is not None
        i = bisect.bisect_left(self.times, start)
        j = bisect.bisect_left(self.times, end)
        if i >= j:
            return None
        prices, sizes = self.stream.prices, self.stream.sizes
        o = h = lo = c = prices[self.position(i)]
        vol = 0
        turn = 0.0
        for n in range(i, j):
            k = self.position(n)
            p = prices[k]
            h = max(h, p)
            lo = min(lo, p)
            c = p
            vol += sizes[k]
            turn += self.turnover_of(p, sizes[k])
        return o, h, lo, c, vol, turn

    def aggregate(self, start: int, end: int) -> tuple[int, int, int, int, int, float] | None:
        """(open, high, low, close, volume, turnover) of the trades in [start, end), or None.

        Whole minutes come from the minute bars; a minute cut by ``start`` or ``end`` also
        comes from its bar when all of its trades are inside (the usual case: candles start on
        a minute and the current one ends after the last trade), else from its trades.
        """
        keys = self.minute_keys
        lo = bisect.bisect_left(keys, start // MINUTE * MINUTE)
        hi = bisect.bisect_left(keys, end)
        parts: list[tuple[int, int, int, int, int, float]] = []
        for key in keys[lo:hi]:
            bar = self.minutes[key]
            if bar.first >= start and bar.last < end:
                parts.append((bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover))
            else:
                part = self._scan(max(start, key), min(end, key + MINUTE))
                if part is not None:
                    parts.append(part)
        if not parts:
            return None
        return (
            parts[0][0],
            max(p[1] for p in parts),
            min(p[2] for p in parts),
            parts[-1][3],
            sum(p[4] for p in parts),
            sum(p[5] for p in parts),
        )


class TradeStream:
    """The trades behind one ``publicTrade`` topic, generated on demand up to a given time.

    ``advance(now_ms, limit)`` makes the trades due up to ``now_ms`` (at most ``limit`` of
    them) and returns how many it made; ``rate`` is the mean number of trades per simulated
    second. ``live_from`` is the instant the stream was started: trades up to it are its back
    history, and ``history_count`` (None until generation has passed that instant) says how
    many there are.
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
        live_from: int | None = None,
    ) -> None:
        self.category = category
        self.key = key
        self.rate = rate
        self.hash = key_hash(seed, "trades", category, key)
        self.rng = random.Random(self.hash)
        self.seq0 = 1_000_000_000 + mix64(self.hash) % 9_000_000_000
        self.index_path = index_path
        self.live_from = live_start if live_from is None else live_from
        self.history_count: int | None = None
        self._t = float(live_start)  # time of the next trade, in (fractional) ms
        self.times: array[int] = array("q")
        self.prices: array[int] = array("q")
        self.sizes: array[int] = array("q")
        self.flags: array[int] = array("B")
        self.multi = category == "option"
        self.member_ix: array[int] | None = array("H") if self.multi else None
        self.ivs: array[float] | None = array("d") if self.multi else None
        self.ivs2: array[float] | None = array("d") if self.multi else None
        self.members: list[SymbolState] = []
        for st in members:
            self.add_member(st)
        self._check_history()

    # -- shape --------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many trades the stream has made."""
        return len(self.times)

    @property
    def next_time(self) -> int:
        """Time (ms) of the next trade to be made."""
        return int(self._t)

    def add_member(self, st: SymbolState) -> None:
        """Attach a symbol to this stream (option streams gain members as they are named)."""
        if len(self.members) >= 65535:
            raise ValueError("too many symbols in one trade stream")
        st.stream = self
        if self.multi:
            st.pos = array("q")
        else:
            st.times = self.times
        self.members.append(st)

    def behind(self, now_ms: int) -> bool:
        """Whether trades due by ``now_ms`` are still to be made."""
        return self._t < now_ms + 1

    def seq(self, k: int) -> int:
        """``seq`` of trade ``k`` (the sequence grows by 1, 2, 3, 1, 2, 3, ...)."""
        m = k + 1
        return self.seq0 + m + 3 * (m // 3) + (1 if m % 3 == 2 else 0)

    def exec_id(self, k: int, inst: Instrument) -> str:
        """Execution id of trade ``k``."""
        if inst.category == "spot":
            return str((SPOT_ID_BASE + inst.symbol_id) * 10_000_000_000 + k)
        return uuid_like(self.hash, k)

    # -- generation ---------------------------------------------------------------------------

    def _check_history(self) -> None:
        if self.history_count is None and self._t >= self.live_from + 1:
            self.history_count = self.count

    def advance(self, now_ms: int, limit: int | None = None) -> int:
        """Make every trade with time <= ``now_ms`` (at most ``limit``); return how many."""
        end = now_ms + 1  # a trade's time is its (fractional) instant rounded down
        t = self._t
        if t >= end or not self.members:
            self._check_history()
            return 0
        cap = (1 << 62) if limit is None else limit
        rng = self.rng
        rand = rng.random
        gauss = rng.gauss
        expo = rng.expovariate
        rate = self.rate
        log, exp = math.log, math.exp
        times, prices, sizes, flags = self.times, self.prices, self.sizes, self.flags
        members = self.members
        multi = self.multi
        single = members[0] if len(members) == 1 else None
        spot = self.category == "spot"
        member_ix, ivs, ivs2 = self.member_ix, self.ivs, self.ivs2
        n = 0
        while t < end and n < cap:
            ti = int(t)
            if single is not None:
                st = single
                m = 0
            else:
                m = int(rand() * len(members))
                st = members[m]
            inst = st.inst
            tick_units = inst.tick_units
            ticks = st.price // tick_units
            second = ti // 1000
            if second != st.target_second:  # the path moves slowly: one evaluation per second
                st.target_second = second
                st.target = st.path.at(ti) / st.tick_value
            if rand() < 0.45:
                move = 0
            else:
                sigma = ticks * 2e-5
                move = round(gauss((st.target - ticks) * 0.01, sigma if sigma > 1.0 else 1.0))
            ticks += move
            if ticks < 1:
                ticks = 1
            price = ticks * tick_units
            if move > 0:
                st.last_nonzero_up = True
                flag = F_BUY  # PlusTick
            elif move < 0:
                st.last_nonzero_up = False
                flag = 2 << 1  # MinusTick, Sell
            else:
                flag = (1 if st.last_nonzero_up else 3) << 1
                if rand() < 0.5:
                    flag |= F_BUY
            pscale = 10.0**inst.decimals
            qscale = 10.0**inst.qty_decimals
            price_value = price / pscale
            qty_value = inst.qty_units / qscale
            notional = 1000.0 / qty_value if inst.is_inverse else 1000.0 / (price_value * qty_value)
            steps = int(exp(gauss(log(notional if notional > 1.0 else 1.0), 1.0)))
            size = (steps if steps > 1 else 1) * inst.qty_units
            if rand() < 0.002:
                flag |= F_BLOCK
            if spot and rand() < 0.05:
                flag |= F_RPI
            k = len(times)
            times.append(ti)
            prices.append(price)
            sizes.append(size)
            flags.append(flag)
            if multi:
                assert member_ix is not None and ivs is not None and ivs2 is not None
                assert st.pos is not None
                member_ix.append(m)
                iv = 0.45 + 0.2 * rand()
                ivs.append(iv)
                ivs2.append(iv + rng.uniform(-0.02, 0.02))
                st.times.append(ti)
                st.pos.append(k)
            # the symbol's minute bar and totals
            size_value = size / qscale
            turnover = size_value / price_value if inst.is_inverse else size_value * price_value
            minute = ti - ti % MINUTE
            bar = st.bar
            if bar is None or minute != st.bar_key:
                bar = MinuteBar(price, price, price, price, size, turnover, ti, ti)
                st.bar, st.bar_key = bar, minute
                st.minutes[minute] = bar
                st.minute_keys.append(minute)
            else:
                if price > bar.high:
                    bar.high = price
                elif price < bar.low:
                    bar.low = price
                bar.close = price
                bar.volume += size
                bar.turnover += turnover
                bar.last = ti
            st.price = price
            st.last_flags = flag
            st.volume_total += size
            st.turnover_total += turnover
            if price > st.high:
                st.high = price
            if price < st.low or not st.low:
                st.low = price
            n += 1
            t += expo(rate) * 1000.0 if rate > 0 else float(1 << 62)
        self._t = t
        self._check_history()
        return n

    # -- reading ------------------------------------------------------------------------------

    def member_of(self, k: int) -> SymbolState:
        """The symbol state trade ``k`` belongs to."""
        return self.members[self.member_ix[k]] if self.member_ix is not None else self.members[0]

    def _option_extra(self, k: int, inst: Instrument) -> tuple[str, str, str, str]:
        assert self.ivs is not None and self.ivs2 is not None
        return (
            fmt_units(self.prices[k], inst.decimals),
            f"{self.index_path.at(self.times[k]):.2f}",
            f"{self.ivs[k]:.4f}",
            f"{self.ivs2[k]:.4f}",
        )

    def trade(self, k: int) -> Trade:
        """Trade ``k`` of the stream (0 = oldest) with its wire strings."""
        inst = self.member_of(k).inst
        f = self.flags[k]
        return Trade(
            category=inst.category,
            symbol=inst.symbol,
            exec_id=self.exec_id(k, inst),
            time=self.times[k],
            price_units=self.prices[k],
            price=fmt_units(self.prices[k], inst.decimals),
            size_units=self.sizes[k],
            size=fmt_units(self.sizes[k], inst.qty_decimals),
            side=SIDES[f & 1],
            tick_direction=DIRECTIONS[(f >> 1) & 3],
            seq=self.seq(k),
            block=bool(f & F_BLOCK),
            rpi=bool(f & F_RPI),
            option_extra=self._option_extra(k, inst) if self.multi else None,
        )

    def trades(self, start: int = 0, stop: int | None = None) -> list[Trade]:
        """Trades ``start`` to ``stop`` (exclusive; default: all made) with wire strings."""
        stop = self.count if stop is None else stop
        return [self.trade(k) for k in range(start, stop)]

    def ws_items(self, start: int, stop: int) -> list[dict[str, object]]:
        """``publicTrade`` data items of trades ``start`` to ``stop`` (exclusive)."""
        if self.multi:
            return [self.trade(k).ws_item() for k in range(start, stop)]
        inst = self.members[0].inst
        symbol, d, qd = inst.symbol, inst.decimals, inst.qty_decimals
        with_l = self.category in ("linear", "inverse")
        spot_base = (SPOT_ID_BASE + inst.symbol_id) * 10_000_000_000
        spot = self.category == "spot"
        h = self.hash
        times, prices, sizes, flags = self.times, self.prices, self.sizes, self.flags
        seq = self.seq
        out: list[dict[str, object]] = []
        for k in range(start, stop):
            f = flags[k]
            item: dict[str, object] = {
                "T": times[k],
                "s": symbol,
                "S": SIDES[f & 1],
                "v": fmt_units(sizes[k], qd),
                "p": fmt_units(prices[k], d),
            }
            if with_l:
                item["L"] = DIRECTIONS[(f >> 1) & 3]
            item["i"] = str(spot_base + k) if spot else uuid_like(h, k)
            item["BT"] = bool(f & F_BLOCK)
            item["RPI"] = bool(f & F_RPI)
            item["seq"] = seq(k)
            out.append(item)
        return out

    def nbytes(self) -> int:
        """Bytes held by the trade columns (capacity may be a little larger)."""
        cols: list[array[int] | array[float] | None] = [
            self.times,
            self.prices,
            self.sizes,
            self.flags,
            self.member_ix,
            self.ivs,
            self.ivs2,
        ]
        total = sum(c.itemsize * len(c) for c in cols if c is not None)
        for st in self.members:
            if st.pos is not None:
                total += st.pos.itemsize * len(st.pos) + st.times.itemsize * len(st.times)
        return total
