"""The simulated market: which symbols trade, their klines, tickers and order books.

``Market`` is pure logic (no sockets, no tasks): the server calls ``advance(now)`` on its clock
and asks it for REST results and WebSocket payloads.

Activation rule: a symbol trades from the simulator's start when it is listed in ``symbols``;
any other symbol starts trading the first time a client names it (a REST request with
``symbol=``, a WebSocket subscription). Either way its trade history begins
``history_seconds`` before that moment, and from then on trades are made on the simulator's
clock whether or not anyone is subscribed. Option trades run per base coin. Trades are made
when ``advance`` is called: in full for REST answers and snapshots, in bounded slices by the
publishing loop (so a long back history is made without blocking the server).

Klines: a candle is the aggregate of that symbol's trades (open = first trade, high/low,
close = last trade, volume = sum of sizes; a candle without trades has open = high = low =
close = the previous close and volume 0). Before a symbol's history begins, candles come from a
deterministic price path (``PricePath``) instead; each such candle opens at the path's price at
its start and closes at the path's price at its end, so neighbouring candles join up, but
candles of different intervals over that synthetic period agree only on open and close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hubkit.testing.bybit.book import Book
from hubkit.testing.bybit.instruments import Catalog, Instrument
from hubkit.testing.bybit.pricing import (
    DAY,
    MINUTE,
    PricePath,
    SimClock,
    candle_start,
    fmt_units,
    key_hash,
    mix64,
    next_candle_start,
    prev_candle_start,
    unit,
)
from hubkit.testing.bybit.trades import SymbolState, Trade, TradeStream

__all__ = ["Candle", "Market"]

HOUR = 60 * MINUTE


@dataclass(frozen=True, slots=True)
class Candle:
    """One kline; prices in price units, volume in quantity units."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: float


def _round_units(inst: Instrument, price: float) -> int:
    tick = inst.tick_units / 10.0**inst.decimals
    return max(1, round(price / tick)) * inst.tick_units


class Market:
    """All simulated instruments and the state of the ones that trade."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        seed: int,
        clock: SimClock,
        trades_per_second: float | Mapping[str, float],
        history_seconds: float,
    ) -> None:
        self.catalog = catalog
        self.seed = seed
        self.clock = clock
        self.trades_per_second = trades_per_second
        self.history_ms = int(history_seconds * 1000)
        self.states: dict[tuple[str, str], SymbolState] = {}
        self.streams: dict[tuple[str, str], TradeStream] = {}
        self.books: dict[tuple[str, str], Book] = {}
        self._paths: dict[tuple[str, str], PricePath] = {}
        # (category, symbol) -> (hour, high, low) of the price path over the past day
        self._day_range: dict[tuple[str, str], tuple[int, int, int]] = {}
        # (category, symbol) -> (second, price a day ago, price an hour ago)
        self._prev: dict[tuple[str, str], tuple[int, int, int]] = {}

    # -- paths and activation -------------------------------------------------------------

    def path(self, inst: Instrument) -> PricePath:
        """The deterministic price path of an instrument."""
        key = (inst.category, inst.symbol)
        path = self._paths.get(key)
        if path is None:
            path = PricePath(key_hash(self.seed, "path", *key), inst.base_price)
            self._paths[key] = path
        return path

    def index_path(self, base_coin: str) -> PricePath:
        """The path of a base coin's USD index (the options' underlying)."""
        key = ("index", base_coin)
        path = self._paths.get(key)
        if path is None:
            linear = self.catalog.get("linear", f"{base_coin}USDT")
            base = linear.base_price if linear is not None else 1.0
            path = PricePath(key_hash(self.seed, "index", base_coin), base)
            self._paths[key] = path
        return path

    def rate(self, category: str, key: str) -> float:
        """Mean trades per simulated second of a stream."""
        tps = self.trades_per_second
        if isinstance(tps, Mapping):
            return float(tps.get(key, tps.get(f"{category}:{key}", tps.get("*", 1.0))))
        return float(tps)

    def stream_key(self, inst: Instrument) -> str:
        """Key of the trade stream an instrument belongs to (base coin for options)."""
        return inst.base_coin if inst.category == "option" else inst.symbol

    def state(self, category: str, symbol: str) -> SymbolState | None:
        """The live state of a symbol that trades, else None."""
        return self.states.get((category, symbol))

    def activate(self, category: str, name: str) -> TradeStream | None:
        """Start trading ``name`` (a symbol, or a base coin for options) if it is not already.

        Returns the stream, or None when the category has no such symbol / base coin.
        """
        inst = self.catalog.get(category, name)
        if category == "option":
            base = inst.base_coin if inst is not None else name
            if base not in self.catalog.base_coins("option"):
                return None
            stream = self.streams.get((category, base))
            if stream is None:
                stream = self._new_stream(category, base, self._option_members(base))
            if inst is not None and (category, inst.symbol) not in self.states:
                stream.add_member(self._new_state(inst, self.clock.now_ms()))
            return stream
        if inst is None:
            return None
        stream = self.streams.get((category, inst.symbol))
        if stream is None:
            stream = self._new_stream(category, inst.symbol, [inst])
        return stream

    def _option_members(self, base: str) -> list[Instrument]:
        now = self.clock.now_ms()
        live = [
            i
            for i in self.catalog.lists["option"]
            if i.base_coin == base and i.status == "Trading" and i.delivery_time > now
        ]
        if not live:
            live = [i for i in self.catalog.lists["option"] if i.base_coin == base]
        nearest = min(i.delivery_time for i in live)
        spot = self.index_path(base).at(now)
        chain = sorted(
            (i for i in live if i.delivery_time == nearest), key=lambda i: abs(i.strike - spot)
        )
        return chain[:6]

    def _live_start(self, now: int) -> int:
        return now - self.history_ms

    def _new_state(self, inst: Instrument, now: int) -> SymbolState:
        start = self._live_start(now)
        path = self.path(inst)
        price = _round_units(inst, path.at(start))
        st = SymbolState(inst=inst, path=path, live_start=start, start_price=price, price=price)
        self.states[(inst.category, inst.symbol)] = st
        return st

    def _new_stream(self, category: str, key: str, insts: Sequence[Instrument]) -> TradeStream:
        now = self.clock.now_ms()
        members = [self._new_state(i, now) for i in insts]
        base = insts[0].base_coin if insts else key
        stream = TradeStream(
            self.seed,
            category,
            key,
            members,
            self.rate(category, key),
            self._live_start(now),
            self.index_path(base),
            live_from=now,
        )
        self.streams[(category, key)] = stream
        return stream

    def advance(self, now: int, max_trades: int | None = None) -> bool:
        """Make the trades due up to ``now`` on every stream; True when all are made.

        With ``max_trades`` at most about that many are made in this call, shared fairly
        between the streams that are behind (the publishing loop works in such slices, so a
        long back history or a very high rate never blocks the event loop for long).
        """
        streams = list(self.streams.values())
        if max_trades is None:
            for stream in streams:
                stream.advance(now)
            return True
        left = max_trades
        behind = [s for s in streams if s.behind(now)]
        while behind and left > 0:
            share = max(64, left // len(behind))
            for stream in behind:
                left -= stream.advance(now, share)
                if left <= 0:
                    break
            behind = [s for s in behind if s.behind(now)]
        return not behind

    def advance_symbol(self, inst: Instrument, now: int) -> None:
        """Make every trade due up to ``now`` on the stream ``inst`` trades in, if it trades."""
        stream = self.streams.get((inst.category, self.stream_key(inst)))
        if stream is not None:
            stream.advance(now)

    def all_trades(self) -> list[Trade]:
        """Every trade made so far, stream by stream, with its wire strings.

        This builds one object per trade; ``GroundTruth`` reads the columns instead.
        """
        out: list[Trade] = []
        for stream in list(self.streams.values()):
            out.extend(stream.trades())
        return out

    def last_price(self, inst: Instrument, now: int) -> int:
        """Last trade price of a trading symbol, else the path's price now (price units)."""
        st = self.state(inst.category, inst.symbol)
        if st is not None:
            return st.price
        return _round_units(inst, self.path(inst).at(now))

    # -- order books ----------------------------------------------------------------------

    def book(self, inst: Instrument, depth: int = 200) -> Book:
        """The order book of a symbol (made on first use, at least ``depth`` levels deep)."""
        key = (inst.category, inst.symbol)
        book = self.books.get(key)
        if book is None:
            book = Book(self.seed, inst, depth=max(depth, 50))
            self.books[key] = book
            self.step_book(book, self.clock.now_ms())
        elif depth > book.depth:
            book.ensure_depth(depth)
            self.step_book(book, self.clock.now_ms(), mutations=0)
        return book

    def step_book(self, book: Book, now: int, mutations: int = 3) -> None:
        """Move a book to the symbol's last trade and change a few sizes."""
        st = self.state(book.inst.category, book.inst.symbol)
        if st is not None and st.count:
            book.step(st.price, st.last_side, now, mutations)
        else:
            book.step(self.last_price(book.inst, now), "Sell", now, mutations)

    # -- klines ---------------------------------------------------------------------------

    def _synthetic(self, inst: Instrument, a: int, b: int) -> Candle:
        path = self.path(inst)
        n = 8
        samples = [path.at(a + (b - a) * i // n) for i in range(n + 1)]
        o = _round_units(inst, samples[0])
        c = _round_units(inst, samples[-1])
        h = mix64(path.key ^ a)
        wick = unit(h) * 0.0008
        hi = max(o, c, _round_units(inst, max(samples) * (1 + wick)))
        lo = min(o, c, _round_units(inst, min(samples) * (1 - wick)))
        rate = self.rate(inst.category, self.stream_key(inst))
        price = (o + c) / 2 / 10.0**inst.decimals
        qty = inst.qty_units / 10.0**inst.qty_decimals
        per_trade = 1000.0 / qty if inst.is_inverse else 1000.0 / (price * qty)
        steps = int((b - a) / 1000 * rate * max(per_trade, 1.0) * (0.5 + unit(mix64(h))))
        volume = steps * inst.qty_units
        size = volume / 10.0**inst.qty_decimals
        turnover = size / price if inst.is_inverse else size * price
        return Candle(a, o, hi, lo, c, volume, turnover)

    def candle(self, inst: Instrument, interval: str, start: int, now: int) -> Candle:
        """The candle of ``interval`` starting at ``start``, as of ``now``."""
        end = min(next_candle_start(interval, start), now + 1)
        st = self.state(inst.category, inst.symbol)
        if st is None:
            return self._synthetic(inst, start, max(end, start + 1))
        syn = None
        if start < st.live_start:
            syn = self._synthetic(inst, start, min(end, st.live_start))
        live = None
        if end > st.live_start:
            live = st.aggregate(max(start, st.live_start), end)
        if syn is not None and live is not None:
            _, h, lo, c, v, t = live
            return Candle(
                start,
                syn.open,
                max(syn.high, h),
                min(syn.low, lo),
                c,
                syn.volume + v,
                syn.turnover + t,
            )
        if live is not None:
            return Candle(start, *live)
        if syn is not None:
            return syn
        p = st.price_before(start)
        return Candle(start, p, p, p, p, 0, 0.0)

    def kline_starts(
        self,
        inst: Instrument,
        interval: str,
        start: int | None,
        end: int | None,
        limit: int,
        now: int,
    ) -> list[int]:
        """Candle starts a kline request selects, newest first.

        No ``start``: the newest ``limit`` candles that open at or before ``end`` (default
        now). ``start`` without ``end``: the first ``limit`` candles that open at or after
        ``start``. Both: the newest ``limit`` candles that open within [start, end]. Never
        before the instrument's launch nor after the current candle.
        """
        current = candle_start(interval, now)
        hi = current if end is None else min(current, candle_start(interval, end))
        floor = candle_start(interval, max(inst.launch_time, 0))
        lo = floor
        if start is not None:
            lo = candle_start(interval, start)
            if lo < start:
                lo = next_candle_start(interval, lo)
            lo = max(lo, floor)
        out: list[int] = []
        if start is not None and end is None:
            s = lo
            while s <= hi and len(out) < limit:
                out.append(s)
                s = next_candle_start(interval, s)
            out.reverse()
            return out
        s = hi
        while s >= lo and len(out) < limit:
            out.append(s)
            s = prev_candle_start(interval, s)
        return out

    def candle_strings(self, inst: Instrument, candle: Candle) -> list[str]:
        """``[startTime, open, high, low, close, volume, turnover]`` as ByBit's 7 strings."""
        d = inst.decimals
        digits = 8 if inst.is_inverse else 4
        return [
            str(candle.start),
            fmt_units(candle.open, d),
            fmt_units(candle.high, d),
            fmt_units(candle.low, d),
            fmt_units(candle.close, d),
            fmt_units(candle.volume, inst.qty_decimals),
            f"{candle.turnover:.{digits}f}",
        ]

    # -- tickers --------------------------------------------------------------------------

    def _price_at(self, inst: Instrument, t: int) -> int:
        st = self.state(inst.category, inst.symbol)
        if st is not None and t >= st.live_start:
            return st.price_before(t + 1)
        return _round_units(inst, self.path(inst).at(t))

    def ticker_values(self, inst: Instrument, now: int) -> dict[str, str]:
        """Every ticker field of any category, by its REST name (the caller picks a subset)."""
        d = inst.decimals
        st = self.state(inst.category, inst.symbol)
        last = self.last_price(inst, now)
        key = (inst.category, inst.symbol)
        second = now // 1000
        prev = self._prev.get(key)
        if prev is None or prev[0] != second:  # reference prices move once a second
            prev = (second, self._price_at(inst, now - DAY), self._price_at(inst, now - HOUR))
            self._prev[key] = prev
        _, prev24, prev1h = prev
        hour = now // HOUR
        cached = self._day_range.get((inst.category, inst.symbol))
        if cached is None or cached[0] != hour:
            path = self.path(inst)
            hourly = [_round_units(inst, path.at((hour - k) * HOUR)) for k in range(24)]
            cached = (hour, max(hourly), min(hourly))
            self._day_range[(inst.category, inst.symbol)] = cached
        samples = [cached[1], cached[2]]
        if st is not None and st.count:
            samples += [st.high, st.low]
        samples.append(last)
        h = key_hash(self.seed, "ticker", inst.category, inst.symbol)
        last_f = last / 10.0**d
        qty = 10.0**inst.qty_decimals
        vol_units = int(unit(h) * 5e8 / max(last_f, 1e-9) * qty) // inst.qty_units * inst.qty_units
        if inst.is_inverse:
            vol_units = int(unit(h) * 5e8) // inst.qty_units * inst.qty_units
        if st is not None:
            vol_units += st.volume_total
        volume = vol_units / qty
        turnover = volume / last_f if inst.is_inverse else volume * last_f
        index = last_f * (1 + (unit(mix64(h ^ (now // 1000))) - 0.5) * 4e-4)
        book = self.books.get((inst.category, inst.symbol))
        if book is not None and book.bids and book.asks:
            (bid,), (ask,) = book.top(1)[0][:1], book.top(1)[1][:1]
        else:
            tick = inst.tick_units
            side = st.last_side if st is not None and st.count else "Sell"
            bb = last - tick if side == "Buy" else last
            size = max(1, int(unit(mix64(h ^ now)) * 1000)) * inst.qty_units
            bid, ask = (bb, size), (bb + tick, size * 2 // 3 + inst.qty_units)
        oi_units = vol_units // 3
        oi = oi_units / qty
        funding_h = int(inst.item.get("fundingInterval", 480) or 480) // 60 or 8
        period = funding_h * HOUR
        pcnt = (last / prev24 - 1) if prev24 else 0.0
        futures = inst.delivery_time > 0 and inst.category in ("linear", "inverse")
        basis = last_f - index
        days_left = max((inst.delivery_time - now) / DAY, 1.0)
        strike = inst.strike
        underlying = self.index_path(inst.base_coin).at(now) if strike else last_f
        moneyness = (underlying - strike) / underlying if strike else 0.0
        delta = 0.5 + max(-0.49, min(0.49, moneyness * 3))
        if inst.option_type == "Put":
            delta -= 1.0
        iv = 0.45 + 0.1 * unit(mix64(h ^ 7))
        values = {
            "symbol": inst.symbol,
            "lastPrice": fmt_units(last, d),
            "indexPrice": f"{index:.{max(d, 2)}f}",
            "markPrice": fmt_units(last, d),
            "prevPrice24h": fmt_units(prev24, d),
            "price24hPcnt": f"{pcnt:.{4 if inst.category == 'spot' else 6}f}",
            "highPrice24h": fmt_units(max(samples), d),
            "lowPrice24h": fmt_units(min(samples), d),
            "prevPrice1h": fmt_units(prev1h, d),
            "openInterest": fmt_units(oi_units, inst.qty_decimals),
            "openInterestValue": f"{(oi / last_f if inst.is_inverse else oi * last_f):.2f}",
            "turnover24h": f"{turnover:.4f}",
            "volume24h": f"{volume:.4f}",
            "fundingRate": "" if futures else "0.0001",
            "nextFundingTime": "" if futures else str((now // period + 1) * period),
            "predictedDeliveryPrice": f"{last_f:.{d}f}" if futures else "",
            "basisRate": f"{basis / index:.8f}" if futures else "",
            "deliveryFeeRate": str(inst.item.get("deliveryFeeRate", "")) if futures else "",
            "deliveryTime": str(inst.delivery_time),
            "ask1Size": fmt_units(ask[1], inst.qty_decimals),
            "bid1Price": fmt_units(bid[0], d),
            "ask1Price": fmt_units(ask[0], d),
            "bid1Size": fmt_units(bid[1], inst.qty_decimals),
            "basis": f"{basis:.2f}" if futures else "",
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
            "fundingIntervalHour": "" if futures else str(funding_h),
            "basisRateYear": f"{basis / index * 365 / days_left:.8f}" if futures else "",
            "fundingCap": "" if futures else str(inst.item.get("upperFundingRate", "")),
            "usdIndexPrice": f"{index:.8f}",
            "bid1Iv": f"{iv - 0.01:.4f}",
            "ask1Iv": f"{iv + 0.01:.4f}",
            "markIv": f"{iv:.4f}",
            "underlyingPrice": f"{underlying:.2f}",
            "totalVolume": str(int(volume * 3) + 1),
            "totalTurnover": str(int(turnover * 3) + 1),
            "delta": f"{delta:.8f}",
            "gamma": f"{0.00002 * (1 - abs(moneyness)):.8f}",
            "vega": f"{underlying * 0.001 * (days_left**0.5):.8f}",
            "theta": f"{-underlying * 0.0005 / (days_left**0.5):.8f}",
            "change24h": f"{pcnt:.8f}",
            "tickDirection": st.last_direction if st is not None else "",
        }
        if futures:
            values["deliveryTimeIso"] = datetime.fromtimestamp(
                inst.delivery_time / 1000, tz=UTC
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
        if inst.status == "PreLaunch":
            info = inst.item.get("preListingInfo") or {}
            values["curPreListingPhase"] = str(info.get("curAuctionPhase", "NotStarted"))
        if not values["tickDirection"]:
            values["tickDirection"] = "ZeroPlusTick"
        return values
