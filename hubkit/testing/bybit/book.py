"""Order books that follow the last trade, and the per-depth views the WebSocket publishes.

``Book`` keeps contiguous price levels around the last trade (every tick from the touch down to
``depth`` levels), re-centres after each trade and changes a few sizes per ``step``. A
``DepthView`` remembers what it last published for one ``orderbook.{depth}.{symbol}`` topic and
turns the next state into a delta (changed levels; size ``"0"`` for levels that left the view).
"""

from __future__ import annotations

import heapq
import math
import random

from hubkit.testing.bybit.instruments import Instrument
from hubkit.testing.bybit.pricing import fmt_units, key_hash

__all__ = ["Book", "DepthView"]

Level = tuple[int, int]  # (price units, size units)


class Book:
    """A symbol's book: ``bids``/``asks`` map price units to size units (never zero)."""

    def __init__(self, seed: int, inst: Instrument, depth: int = 200) -> None:
        self.inst = inst
        self.depth = depth
        self.rng = random.Random(key_hash(seed, "book", inst.category, inst.symbol))
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.seq = 0  # cross sequence, bumped on every change
        self.update_id = 0  # u of the full-depth stream
        self.ts = 0
        self.best_bid = 0
        price_value = inst.base_price
        qty_value = inst.qty_units / 10.0**inst.qty_decimals
        notional = 20_000.0 / qty_value if inst.is_inverse else 20_000.0 / (price_value * qty_value)
        self._mu = math.log(max(notional, 1.0))

    def _size(self) -> int:
        return max(1, int(self.rng.lognormvariate(self._mu, 1.0))) * self.inst.qty_units

    def ensure_depth(self, depth: int) -> None:
        """Keep at least ``depth`` levels per side from now on."""
        self.depth = max(self.depth, depth)

    def step(self, last_price: int, last_side: str, ts: int, mutations: int = 3) -> None:
        """Re-centre on the last trade and change a few sizes; ``ts`` is the book time (ms)."""
        tick = self.inst.tick_units
        best_bid = last_price - tick if last_side == "Buy" else last_price
        best_bid = max(best_bid, tick)
        best_ask = best_bid + tick
        bids, asks = self.bids, self.asks
        if best_bid != self.best_bid or len(bids) < self.depth or len(asks) < self.depth:
            for p in [p for p in bids if p > best_bid or p <= best_bid - self.depth * tick]:
                del bids[p]
            for p in [p for p in asks if p < best_ask or p >= best_ask + self.depth * tick]:
                del asks[p]
            for k in range(self.depth):
                p = best_bid - k * tick
                if p > 0 and p not in bids:
                    bids[p] = self._size()
                q = best_ask + k * tick
                if q not in asks:
                    asks[q] = self._size()
            self.best_bid = best_bid
        rng = self.rng
        near = min(self.depth, 25)
        for _ in range(mutations):
            k = int(rng.expovariate(0.25)) % near
            if rng.random() < 0.5:
                p = best_bid - k * tick
                if p in bids:
                    bids[p] = self._size()
            else:
                p = best_ask + k * tick
                if p in asks:
                    asks[p] = self._size()
        self.seq += 1 + rng.randrange(3)
        self.update_id += 1
        self.ts = ts

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` bids (descending) and asks (ascending)."""
        bid_prices = heapq.nlargest(n, self.bids)
        ask_prices = heapq.nsmallest(n, self.asks)
        return (
            [(p, self.bids[p]) for p in bid_prices],
            [(p, self.asks[p]) for p in ask_prices],
        )

    def fmt(self, levels: list[Level]) -> list[list[str]]:
        """Levels as ByBit's ``[["price", "size"], ...]``; size ``"0"`` deletes a level."""
        d, qd = self.inst.decimals, self.inst.qty_decimals
        return [[fmt_units(p, d), fmt_units(s, qd) if s else "0"] for p, s in levels]


class DepthView:
    """What one ``orderbook.{depth}.{symbol}`` topic has published, and its ``u`` counter."""

    def __init__(self, book: Book, depth: int) -> None:
        self.book = book
        self.depth = depth
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.u = 0
        self.last_publish_ms = 0  # simulated time of the last message (for level-1 re-push)

    def snapshot(self) -> dict[str, object]:
        """The current view as a snapshot ``data`` object (does not advance ``u``).

        Before the first publication, takes the book's current state as the view.
        """
        if self.u == 0:
            self._take()
            self.u = 1
        b = sorted(self.bids.items(), reverse=True)
        a = sorted(self.asks.items())
        return self._data(b, a)

    def _take(self) -> tuple[dict[int, int], dict[int, int]]:
        bids, asks = self.book.top(self.depth)
        old = self.bids, self.asks
        self.bids, self.asks = dict(bids), dict(asks)
        return old

    def delta(self) -> dict[str, object] | None:
        """The change since the last publication as a delta ``data`` object, or None."""
        if self.u == 0:
            return None
        old_b, old_a = self._take()
        b = [(p, s) for p, s in self.bids.items() if old_b.get(p) != s]
        b += [(p, 0) for p in old_b if p not in self.bids]
        a = [(p, s) for p, s in self.asks.items() if old_a.get(p) != s]
        a += [(p, 0) for p in old_a if p not in self.asks]
        if not b and not a:
            return None
        self.u += 1
        b.sort(reverse=True)
        a.sort()
        return self._data(b, a)

    def _data(self, b: list[Level], a: list[Level]) -> dict[str, object]:
        return {
            "s": self.book.inst.symbol,
            "b": self.book.fmt(b),
            "a": self.book.fmt(a),
            "u": self.u,
            "seq": self.book.seq,
        }
