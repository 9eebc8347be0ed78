"""The simulator's publishing side: subscriptions, the publishing loop and shared counters.

``Hub`` owns the subscriptions and the publishing loop: every ``tick`` seconds it advances the
market to the simulator clock and pushes new trades, order-book deltas, ticker changes and
klines to subscribers, applying the fault switches on the way. A round makes at most
``max_trades_per_round`` trades; when the market is still behind the clock (a long back history
of a symbol started mid-run, or a rate beyond what one core can make) the next round follows
as soon as the event loop has served pending I/O, so handshakes, pings and signals are answered
within a round's time whatever the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hubkit.testing.bybit.book import DepthView
from hubkit.testing.bybit.faults import FaultCounter, Faults
from hubkit.testing.bybit.groundtruth import GroundTruth
from hubkit.testing.bybit.instruments import Catalog, Instrument
from hubkit.testing.bybit.market import Market
from hubkit.testing.bybit.pricing import SimClock, candle_start, next_candle_start
from hubkit.testing.bybit.rest import ENCODER, RestApi
from hubkit.testing.bybit.ws import Topic
from hubkit.testing.bybit.wsconn import WsConn, ws_frame

__all__ = ["WS_CATEGORIES", "Hub", "HubOptions"]

log = logging.getLogger("hubkit.testing.bybit")

WS_CATEGORIES = ("spot", "linear", "inverse", "option")
TICKER_WS_PERP = (
    "symbol", "tickDirection", "price24hPcnt", "lastPrice", "prevPrice24h", "highPrice24h",
    "lowPrice24h", "prevPrice1h", "markPrice", "indexPrice", "openInterest",
    "openInterestValue", "turnover24h", "volume24h", "fundingIntervalHour", "fundingCap",
    "nextFundingTime", "fundingRate", "bid1Price", "bid1Size", "ask1Price", "ask1Size",
    "preOpenPrice", "preQty", "curPreListingPhase",
)  # fmt: skip
TICKER_WS_FUTURES = (
    "symbol", "tickDirection", "price24hPcnt", "lastPrice", "prevPrice24h", "highPrice24h",
    "lowPrice24h", "prevPrice1h", "markPrice", "indexPrice", "openInterest",
    "openInterestValue", "turnover24h", "volume24h", "deliveryTime", "basisRate",
    "deliveryFeeRate", "predictedDeliveryPrice", "basis", "basisRateYear", "nextFundingTime",
    "fundingRate", "bid1Price", "bid1Size", "ask1Price", "ask1Size",
)  # fmt: skip
TICKER_WS_SPOT = (
    "symbol", "lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h",
    "turnover24h", "price24hPcnt", "usdIndexPrice",
)  # fmt: skip
# option WebSocket name -> REST name
TICKER_WS_OPTION = (
    ("symbol", "symbol"), ("bidPrice", "bid1Price"), ("bidSize", "bid1Size"),
    ("bidIv", "bid1Iv"), ("askPrice", "ask1Price"), ("askSize", "ask1Size"),
    ("askIv", "ask1Iv"), ("lastPrice", "lastPrice"), ("highPrice24h", "highPrice24h"),
    ("lowPrice24h", "lowPrice24h"), ("markPrice", "markPrice"), ("indexPrice", "indexPrice"),
    ("markPriceIv", "markIv"), ("underlyingPrice", "underlyingPrice"),
    ("openInterest", "openInterest"), ("turnover24h", "turnover24h"),
    ("volume24h", "volume24h"), ("totalVolume", "totalVolume"),
    ("totalTurnover", "totalTurnover"), ("delta", "delta"), ("gamma", "gamma"),
    ("vega", "vega"), ("theta", "theta"), ("predictedDeliveryPrice", "predictedDeliveryPrice"),
    ("change24h", "change24h"),
)  # fmt: skip
BOOK_INTERVAL_S = MappingProxyType({1: 0.01, 25: 0.02, 50: 0.02, 100: 0.1, 200: 0.1, 1000: 0.2})
MAX_TRADES_PER_MESSAGE = 1024
REQUEST_LOG_SIZE = 100_000  # requests remembered in ``request_log`` (the newest)


@dataclass
class HubOptions:
    """Tuning of the publishing loop (see ``BybitSimulator`` for the meaning)."""

    tick: float = 0.02
    kline_push_interval: float = 1.0
    ticker_interval: float = 0.1
    spot_ticker_interval: float = 0.05
    ws_max_buffer: int = 8 * 2**20
    max_trades_per_round: int = 2048
    ip_limit: tuple[int, float, float] | None = (600, 5.0, 600.0)
    api_keys: Mapping[str, str] = field(default_factory=dict)


class Hub:
    """Subscriptions, the publishing loop and the counters shared by REST and WebSocket."""

    def __init__(
        self,
        market: Market,
        catalog: Catalog,
        clock: SimClock,
        faults: Faults,
        options: HubOptions,
    ) -> None:
        self.market = market
        self.catalog = catalog
        self.clock = clock
        self.faults = faults
        self.options = options
        self.counter = FaultCounter()
        self.truth = GroundTruth(market)
        self.rest = RestApi(market, catalog, clock, on_kline=self.truth.record_kline)
        self.subs: dict[tuple[str, str], set[WsConn]] = {}
        self.topics: dict[tuple[str, str], Topic] = {}
        self.conns: set[WsConn] = set()
        self.trade_cursor: dict[tuple[str, str], int] = {}
        self.views: dict[tuple[str, str, int], DepthView] = {}
        self.view_push: dict[tuple[str, str, int], float] = {}
        self.tickers: dict[tuple[str, str], dict[str, str]] = {}
        self.ticker_push: dict[str, float] = {}
        self.klines: dict[tuple[str, str], tuple[int, float, list[str] | None]] = {}
        self.messages_out = 0
        self.corked = False  # True while a publishing round gathers frames per connection
        self.dirty: list[WsConn] = []
        self.ws_connections_total = 0
        self.tcp_connections_total = 0
        self.requests: dict[str, int] = {}
        self.request_log: deque[tuple[str, dict[str, str]]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.ip_hits: dict[str, deque[float]] = {}
        self.ip_banned_until: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def ws_max_buffer(self) -> int:
        """Bytes a client may leave unread before it is dropped as a slow consumer."""
        return self.options.ws_max_buffer

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publishing loop on the running event loop.

        Every trade due before this moment is made now and counts as history: REST and the
        ground truth have it, but it is not pushed (a subscriber gets trades from now on).
        """
        self.market.advance(self.clock.now_ms())
        for key, stream in self.market.streams.items():
            self.trade_cursor[key] = stream.count
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bybit-sim-hub")

    async def stop(self) -> None:
        """Stop the publishing loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        caught_up = True
        while True:
            if caught_up:
                # a fixed cadence: the time a round takes does not stretch the period
                next_at += self.options.tick
                delay = next_at - loop.time()
                if delay < 0:
                    next_at, delay = loop.time(), 0.0
            else:  # the market is behind the clock: another slice once pending I/O is served
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)
            try:
                caught_up = self.tick()
            except Exception:  # keep publishing; a bug must not stop the simulator
                log.exception("simulator tick failed")
                self.counter.add("internal_error")
                caught_up = True

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, conn: WsConn, topic: Topic) -> None:
        """Register ``conn`` for ``topic`` and send the topic's initial snapshot, if any."""
        category = conn.category
        self.market.activate(category, topic.symbol)
        now = self.clock.now_ms()
        if topic.kind == "publicTrade":
            # a new subscriber gets the trades made after it subscribed: what is made so far
            # goes to the others first (the loop makes the rest, in slices)
            with self.round():
                self._publish_trades(now)
        else:  # a snapshot shows the symbol as of now
            inst = self.catalog.get(category, topic.symbol)
            assert inst is not None
            self.market.advance_symbol(inst, now)
        key = (category, topic.name)
        self.subs.setdefault(key, set()).add(conn)
        self.topics[key] = topic
        if topic.kind == "tickers":
            inst = self.catalog.get(category, topic.symbol)
            assert inst is not None
            data = self._ticker_data(inst, now)
            self.tickers.setdefault((category, inst.symbol), data)
            self._send(conn, self._ticker_message(inst, topic.name, "snapshot", data, now))
        elif topic.kind == "orderbook":
            view = self._view(category, topic)
            self._send(conn, self._book_message(category, topic, "snapshot", view.snapshot(), now))
        elif topic.kind == "kline":
            inst = self.catalog.get(category, topic.symbol)
            assert inst is not None
            start = candle_start(topic.interval, now)
            self.klines.setdefault(key, (start, time.monotonic(), None))
            self._send(conn, self._kline_message(inst, topic, start, now, confirm=False))

    def unsubscribe(self, conn: WsConn, name: str) -> None:
        """Remove ``conn`` from a topic."""
        key = (conn.category, name)
        subs = self.subs.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subs[key]

    def forget(self, conn: WsConn) -> None:
        """Drop every subscription of a closed connection (idempotent)."""
        self.conns.discard(conn)
        for name in list(conn.session.topics):
            self.unsubscribe(conn, name)

    def _view(self, category: str, topic: Topic) -> DepthView:
        key = (category, topic.symbol, topic.depth)
        view = self.views.get(key)
        if view is None:
            inst = self.catalog.get(category, topic.symbol)
            assert inst is not None
            book = self.market.book(inst, depth=topic.depth)
            view = DepthView(book, topic.depth)
            self.views[key] = view
            self.view_push[key] = time.monotonic()
        return view

    # -- publishing -----------------------------------------------------------------------------

    def _send(self, conn: WsConn, message: dict[str, Any]) -> None:
        conn.deliver(ws_frame(ENCODER.encode(message)), message)

    def publish(self, category: str, topic: str, message: dict[str, Any]) -> None:
        """Send one data message to every subscriber of ``topic`` (encoded and framed once)."""
        subs = self.subs.get((category, topic))
        if not subs:
            return
        frame = ws_frame(ENCODER.encode(message))
        for conn in list(subs):
            conn.deliver(frame, message)

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """Gather the frames written inside into one write per connection (nestable)."""
        if self.corked:
            yield
            return
        self.corked = True
        try:
            yield
        finally:
            self.corked = False
            dirty, self.dirty = self.dirty, []
            for conn in dirty:
                conn.flush_pending()

    def tick(self) -> bool:
        """One round of the publishing loop (also callable directly in tests).

        Returns False when the market is still behind the clock after this round's share of
        trades (``max_trades_per_round``), so the loop runs another round at once.
        """
        now = self.clock.now_ms()
        wall = time.monotonic()
        caught_up = self.market.advance(now, self.options.max_trades_per_round)
        with self.round():
            self._publish_trades(now)
            self._publish_books(now, wall)
            self._publish_tickers(now, wall)
            self._publish_klines(now, wall)
        self._sweep(wall)
        return caught_up

    def _publish_trades(self, now: int) -> None:
        for key, stream in list(self.market.streams.items()):
            cursor = self.trade_cursor.get(key, stream.history_count)
            if cursor is None:  # still making the back history of a symbol started just now
                continue
            end = stream.count
            if cursor >= end:
                continue
            self.trade_cursor[key] = end
            topic = f"publicTrade.{stream.key}"
            if not self.subs.get((stream.category, topic)):
                continue  # nobody listens: the wire strings are never made
            for i in range(cursor, end, MAX_TRADES_PER_MESSAGE):
                message = {
                    "topic": topic,
                    "type": "snapshot",
                    "ts": now,
                    "data": stream.ws_items(i, min(i + MAX_TRADES_PER_MESSAGE, end)),
                }
                self.publish(stream.category, topic, message)

    def _book_message(
        self, category: str, topic: Topic, kind: str, data: dict[str, object], now: int
    ) -> dict[str, Any]:
        cts = self.market.books[(category, topic.symbol)].ts
        # ByBit puts ts before type for spot and for level 1, after it elsewhere
        if topic.depth == 1 or category == "spot":
            return {"topic": topic.name, "ts": now, "type": kind, "data": data, "cts": cts}
        return {"topic": topic.name, "type": kind, "ts": now, "data": data, "cts": cts}

    def _publish_books(self, now: int, wall: float) -> None:
        stepped: set[tuple[str, str]] = set()
        for key, view in list(self.views.items()):
            category, symbol, depth = key
            name = f"orderbook.{depth}.{symbol}"
            if not self.subs.get((category, name)):
                continue
            if wall - self.view_push[key] < BOOK_INTERVAL_S.get(depth, 0.1):
                continue
            self.view_push[key] = wall
            if (category, symbol) not in stepped:
                self.market.step_book(view.book, now)
                stepped.add((category, symbol))
            topic = self.topics[(category, name)]
            data = view.delta()
            if data is not None:
                view.last_publish_ms = now
                self.publish(
                    category, name, self._book_message(category, topic, "delta", data, now)
                )
            elif depth == 1 and now - view.last_publish_ms >= 3000:
                view.last_publish_ms = now
                self.publish(
                    category,
                    name,
                    self._book_message(category, topic, "snapshot", view.snapshot(), now),
                )

    def _ticker_data(self, inst: Instrument, now: int) -> dict[str, str]:
        values = self.market.ticker_values(inst, now)
        if inst.category == "option":
            return {ws: values[rest] for ws, rest in TICKER_WS_OPTION}
        if inst.category == "spot":
            return {name: values[name] for name in TICKER_WS_SPOT}
        if inst.delivery_time:
            data = {name: values[name] for name in TICKER_WS_FUTURES}
            data["deliveryTime"] = values.get("deliveryTimeIso", "")
            return data
        return {name: values[name] for name in TICKER_WS_PERP}

    def _ticker_message(
        self, inst: Instrument, topic: str, kind: str, data: Mapping[str, str], now: int
    ) -> dict[str, Any]:
        cs = self.market.books[(inst.category, inst.symbol)].seq if (
            inst.category, inst.symbol) in self.market.books else now // 10  # fmt: skip
        if inst.category == "option":
            return {
                "id": f"{topic}-{cs}-{now}",
                "topic": topic,
                "ts": now,
                "data": dict(data),
                "type": "snapshot",
            }
        return {"topic": topic, "type": kind, "data": dict(data), "cs": cs, "ts": now}

    def _publish_tickers(self, now: int, wall: float) -> None:
        for category in WS_CATEGORIES:
            every = (
                self.options.spot_ticker_interval
                if category == "spot"
                else self.options.ticker_interval
            )
            if wall - self.ticker_push.get(category, 0.0) < every:
                continue
            self.ticker_push[category] = wall
            for (cat, symbol), st in list(self.market.states.items()):
                if cat != category:
                    continue
                if st.stream is not None and st.stream.history_count is None:
                    continue  # its back history is still being made: no state to show yet
                inst = st.inst
                data = self._ticker_data(inst, now)
                old = self.tickers.get((cat, symbol))
                if old == data:
                    continue
                self.tickers[(cat, symbol)] = data
                self.truth.record_ticker(inst, now, self.market.ticker_values(inst, now))
                topic = f"tickers.{symbol}"
                if not self.subs.get((cat, topic)):
                    continue
                if category in ("linear", "inverse") and old is not None:
                    delta = {"symbol": symbol}
                    delta.update({k: v for k, v in data.items() if old.get(k) != v})
                    message = self._ticker_message(inst, topic, "delta", delta, now)
                else:
                    message = self._ticker_message(inst, topic, "snapshot", data, now)
                self.publish(cat, topic, message)

    def _kline_item(
        self, inst: Instrument, topic: Topic, start: int, now: int, confirm: bool
    ) -> tuple[dict[str, Any], list[str]]:
        candle = self.market.candle(inst, topic.interval, start, now)
        self.truth.record_kline(inst, topic.interval, candle, confirm)
        s = self.market.candle_strings(inst, candle)
        item = {
            "start": start,
            "end": next_candle_start(topic.interval, start) - 1,
            "interval": topic.interval,
            "open": s[1],
            "close": s[4],
            "high": s[2],
            "low": s[3],
            "volume": s[5],
            "turnover": s[6],
            "confirm": confirm,
            "timestamp": now,
        }
        return item, s

    def _kline_message(
        self, inst: Instrument, topic: Topic, start: int, now: int, confirm: bool
    ) -> dict[str, Any]:
        item, _ = self._kline_item(inst, topic, start, now, confirm)
        return {"topic": topic.name, "data": [item], "ts": now, "type": "snapshot"}

    def _publish_klines(self, now: int, wall: float) -> None:
        for key, (start, last_push, last) in list(self.klines.items()):
            if not self.subs.get(key):
                del self.klines[key]
                continue
            category, name = key
            topic = self.topics[key]
            inst = self.catalog.get(category, topic.symbol)
            if inst is None:  # delisted while subscribed: its candles end here
                del self.klines[key]
                continue
            current = candle_start(topic.interval, now)
            if current > start:
                closed, _ = self._kline_item(inst, topic, start, now, confirm=True)
                item, strings = self._kline_item(inst, topic, current, now, confirm=False)
                message = {"topic": name, "data": [closed], "ts": now, "type": "snapshot"}
                self.publish(category, name, message)
                message = {"topic": name, "data": [item], "ts": now, "type": "snapshot"}
                self.publish(category, name, message)
                self.klines[key] = (current, wall, strings)
            elif wall - last_push >= self.options.kline_push_interval:
                item, strings = self._kline_item(inst, topic, start, now, confirm=False)
                if strings != last:
                    message = {"topic": name, "data": [item], "ts": now, "type": "snapshot"}
                    self.publish(category, name, message)
                self.klines[key] = (start, wall, strings)

    def _sweep(self, wall: float) -> None:
        every = self.faults.drop_ws_every_seconds
        if not every:
            return
        for conn in list(self.conns):
            if wall - conn.opened >= every:
                conn.drop("ws_drop_timer")

    def disconnect_all(self) -> int:
        """Drop every WebSocket connection now; returns how many were dropped."""
        conns = [c for c in self.conns if not c.closed]
        for conn in conns:
            conn.drop("ws_drop_manual")
        return len(conns)

    # -- REST -------------------------------------------------------------------------------------

    def ip_limited(self, ip: str) -> bool:
        """ByBit's IP rule: more than N requests in a window bans the IP for a while (403)."""
        limit = self.options.ip_limit
        if limit is None:
            return False
        count, window, ban = limit
        now = time.monotonic()
        if self.ip_banned_until.get(ip, 0.0) > now:
            return True
        hits = self.ip_hits.setdefault(ip, deque())
        hits.append(now)
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) > count:
            self.ip_banned_until[ip] = now + ban
            hits.clear()
            return True
        return False

    def count_request(self, path: str, params: dict[str, str]) -> None:
        self.requests[path] = self.requests.get(path, 0) + 1
        self.request_log.append((path, params))
