"""The simulator's network side: one asyncio server on 127.0.0.1 for REST and WebSocket.

Every TCP connection starts as HTTP/1.1 (keep-alive, as ``requests`` and ``httpx`` use it).
A request with ``Upgrade: websocket`` to ``/v5/public/<category>`` or ``/v5/private`` is handed
to ``websockets``' Sans-I/O ``ServerProtocol`` for the handshake and for parsing client frames;
outgoing data frames are framed once per message and written to every subscriber as the same
bytes (server frames are unmasked), which is what lets one process feed hundreds of clients.

``Hub`` owns the subscriptions and the publishing loop: every ``tick`` seconds it advances the
market to the simulator clock and pushes new trades, order-book deltas, ticker changes and
klines to subscribers, applying the fault switches on the way. A round makes at most
``max_trades_per_round`` trades; when the market is still behind the clock (a long back history
of a symbol started mid-run, or a rate beyond what one core can make) the next round follows
as soon as the event loop has served pending I/O, so handshakes, pings and signals are answered
within a round's time whatever the load.

Connections: a subscriber whose transport buffer grows past ``ws_max_buffer`` (a client that
stopped reading) is sent a 1008 close frame and cut off, as an exchange drops a slow consumer
(counted as ``ws_slow_consumer``); a connection whose transport is closing is never written to
again and leaves every subscription at once, so a client that left costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from hubkit.testing.bybit.book import DepthView
from hubkit.testing.bybit.faults import FaultCounter, Faults
from hubkit.testing.bybit.groundtruth import GroundTruth
from hubkit.testing.bybit.instruments import Catalog, Instrument
from hubkit.testing.bybit.market import Market
from hubkit.testing.bybit.pricing import SimClock, candle_start, next_candle_start
from hubkit.testing.bybit.rest import ENCODER, RestApi, RestResult, envelope
from hubkit.testing.bybit.ws import Topic, WsSession

__all__ = ["Hub", "HubOptions", "SimServer", "ws_frame"]

log = logging.getLogger("hubkit.testing.bybit")

WS_CATEGORIES = ("spot", "linear", "inverse", "option")
REASONS = MappingProxyType(
    {
        200: "OK",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
)
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
SLOW_CONSUMER_GRACE_S = 2.0  # a dropped slow consumer that reads nothing more is then aborted
REQUEST_LOG_SIZE = 100_000  # requests remembered in ``request_log`` (the newest)


def ws_frame(payload: bytes) -> bytes:
    """A complete unmasked server text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


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


class _Protocol(ServerProtocol):
    """``ServerProtocol`` that can withhold protocol-level pongs (the ``ignore_pings`` fault)."""

    def __init__(self, faults: Faults, counter: FaultCounter) -> None:
        super().__init__(max_size=2**20)
        self._faults = faults
        self._counter = counter

    def send_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG and self._faults.ignore_pings:
            self._counter.add("ping_ignored")
            return
        super().send_frame(frame)


class WsConn:
    """One WebSocket client: its transport, protocol state, session and message count."""

    def __init__(
        self,
        hub: Hub,
        writer: asyncio.StreamWriter,
        proto: _Protocol,
        session: WsSession,
    ) -> None:
        self.hub = hub
        self.writer = writer
        self.transport = writer.transport
        self.proto = proto
        self.session = session
        self.category = session.category
        self.opened = time.monotonic()
        self.sent = 0
        self.malformed = 0
        self.closed = False
        self.pending: list[bytes] = []  # frames of the current publishing round
        self.drop_after_flush = ""  # a drop decided during the round, done after its write

    def writable(self) -> bool:
        """Whether data may still be written; a closing transport ends the connection here.

        The transport closes under us when the peer resets the connection or a write fails;
        the reading task learns it only a loop iteration or more later. Writing meanwhile would
        only make asyncio log "socket.send() raised exception." for every frame, so the
        connection is marked closed and leaves its subscriptions now.
        """
        if self.closed:
            return False
        if self.transport.is_closing():
            self.closed = True
            self.hub.forget(self)
            return False
        return True

    def flush(self) -> None:
        """Write whatever the protocol has queued (handshake, pongs, close frames)."""
        for data in self.proto.data_to_send():
            if not self.writable():
                continue  # dropped, gone or stopping: nothing more goes out
            if data:
                self.transport.write(data)
            else:  # SEND_EOF: the server closes the TCP connection
                self.closed = True
                self.transport.close()
                self.hub.forget(self)

    def send_control(self, message: Mapping[str, Any]) -> None:
        """Send a control reply (ack, pong); not counted as a data message."""
        if self.writable():
            self.transport.write(ws_frame(ENCODER.encode(message)))

    def deliver(self, frame: bytes, message: Mapping[str, Any]) -> None:
        """Send one data message (pre-framed), applying the WebSocket fault switches."""
        if self.drop_after_flush or not self.writable():
            return
        faults = self.hub.faults
        self.sent += 1
        every = faults.malformed_every_n_messages
        if every and self.sent % every == 0 and faults.malformed_kinds:
            kind = faults.malformed_kinds[self.malformed % len(faults.malformed_kinds)]
            self.malformed += 1
            frame = ws_frame(malform(message, kind))
            self.hub.counter.add(f"malformed_{kind}")
        self.hub.messages_out += 1
        limit = faults.drop_ws_every_n_messages
        if self.hub.corked:  # one write per connection per round: far fewer system calls
            if not self.pending:
                self.hub.dirty.append(self)
            self.pending.append(frame)
            if limit and self.sent >= limit:
                self.drop_after_flush = "ws_drop_messages"
            return
        self.transport.write(frame)
        if limit and self.sent >= limit:
            self.drop("ws_drop_messages")
        elif self.transport.get_write_buffer_size() > self.hub.options.ws_max_buffer:
            self.drop("ws_slow_consumer")

    def flush_pending(self) -> None:
        """Write the frames gathered during a publishing round, then any drop it decided."""
        frames, self.pending = self.pending, []
        if not self.writable():
            return
        if frames:
            self.transport.write(b"".join(frames))
        if self.drop_after_flush:
            reason, self.drop_after_flush = self.drop_after_flush, ""
            self.drop(reason)
        elif self.transport.get_write_buffer_size() > self.hub.options.ws_max_buffer:
            self.drop("ws_slow_consumer")

    def drop(self, reason: str) -> None:
        """Close the connection, count ``reason`` and leave every subscription at once.

        Frames already written are still delivered (FIN after the buffer drains), so a client
        sees exactly the messages sent before the drop. Fault drops send no close frame (the
        client sees 1006); a slow consumer gets a 1008 close frame after what it was sent, and
        is aborted if it then reads nothing for ``SLOW_CONSUMER_GRACE_S``.
        """
        if self.closed:
            return
        self.closed = True
        self.hub.counter.add(reason)
        self.hub.forget(self)
        if self.transport.is_closing():
            return
        if reason == "ws_slow_consumer":
            self.proto.send_close(1008, "slow consumer: too far behind")
            for data in self.proto.data_to_send():
                if data:
                    self.transport.write(data)
            self.transport.close()
            self._watch_drain(self.transport.get_write_buffer_size())
        else:
            self.transport.close()

    def _watch_drain(self, size: int) -> None:
        """Abort a closing transport whose buffer has not shrunk since the last look."""

        def check() -> None:
            now = self.transport.get_write_buffer_size()
            if not now:
                return
            if now >= size:
                self.transport.abort()
            else:
                self._watch_drain(now)

        asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE_S, check)


def malform(message: Mapping[str, Any], kind: str) -> bytes:
    """A broken version of a data message: not JSON, wrong JSON types, or missing fields."""
    text = ENCODER.encode(message)
    if kind == "invalid_json":
        return text[: max(1, len(text) // 2)]
    if kind == "wrong_types":

        def swap(value: Any) -> Any:
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    return value
            if isinstance(value, bool):
                return value
            if isinstance(value, int | float):
                return str(value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            if isinstance(value, dict):
                return {k: (v if k in ("topic", "type") else swap(v)) for k, v in value.items()}
            return value

        return ENCODER.encode(swap(dict(message)))
    broken = {k: v for k, v in message.items() if k != "ts"}
    data = broken.get("data")
    if isinstance(data, list):
        broken["data"] = [
            {k: v for k, v in item.items() if k not in ("p", "v", "price", "open")}
            if isinstance(item, dict)
            else item
            for item in data
        ]
    elif isinstance(data, dict):
        broken["data"] = {k: v for k, v in data.items() if k not in ("b", "lastPrice", "s")}
    return ENCODER.encode(broken)


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
            assert inst is not None
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


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    raw: bytes


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return _Head(method, target, version, headers, raw)


class SimServer:
    """The asyncio TCP server: HTTP/1.1 keep-alive REST plus WebSocket upgrades, one port."""

    def __init__(self, hub: Hub, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()

    async def start(self) -> None:
        """Listen; afterwards ``port`` is the bound port."""
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=2**20, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.hub.start()

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their handlers to finish."""
        self._closing.set()
        await self.hub.stop()
        if self._server is not None:
            self._server.close()
        for conn in list(self.hub.conns):
            if not conn.closed:
                conn.proto.send_close(1001, "simulator stopping")
                conn.flush()
                conn.closed = True
        writers = list(self._writers)
        for writer in writers:
            writer.close()  # flushes a close frame already written, then FIN
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:  # a client that does not read must not keep a socket open
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.hub.tcp_connections_total += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            if not self._closing.is_set():
                raise
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            head = _parse_head(raw)
            if head.headers.get("upgrade", "").lower() == "websocket":
                await self._websocket(head, reader, writer)
                return
            length = int(head.headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            keep = await self._http(head, ip, reader, writer)
            if not keep:
                return

    async def _http(
        self,
        head: _Head,
        ip: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        hub, faults, counter = self.hub, self.hub.faults, self.hub.counter
        url = urllib.parse.urlsplit(head.target)
        path = url.path
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        hub.count_request(path, params)
        conn_header = head.headers.get("connection", "").lower()
        keep = conn_header != "close" and (
            head.version == "HTTP/1.1" or conn_header == "keep-alive"
        )
        if hub.ip_limited(ip):
            counter.add("ip_limited")
            result = RestResult(403, b"access too frequent", content_type="text/plain")
            await self._write(writer, result, keep)
            return keep
        now = hub.clock.now_ms()
        if faults.http_applies(path):
            if faults.take("timeout_next"):
                counter.add("http_timeout")
                while await reader.read(65536):  # hold the request until the client leaves
                    pass
                return False
            if faults.take("http_5xx_next"):
                counter.add("http_5xx")
                status = faults.http_5xx_status
                body = f"{status} {REASONS.get(status, 'Server Error')}".encode()
                await self._write(writer, RestResult(status, body, content_type="text/plain"), keep)
                return keep
            if faults.take("http_429_next"):
                counter.add("http_429")
                retry = faults.retry_after_seconds
                result = RestResult(
                    429,
                    b"System level frequency protection, please retry",
                    headers={"Retry-After": f"{retry:g}"},
                    content_type="text/plain",
                )
                await self._write(writer, result, keep)
                return keep
            if faults.take("rate_limit_next"):
                counter.add("http_10006")
                body = ENCODER.encode(envelope({}, now, 10006, "Too many visits!"))
                headers = {
                    "X-Bapi-Limit": "10",
                    "X-Bapi-Limit-Status": "0",
                    "X-Bapi-Limit-Reset-Timestamp": str(
                        int(time.time() * 1000) + faults.rate_limit_reset_ms
                    ),
                }
                await self._write(writer, RestResult(200, body, headers=headers), keep)
                return keep
            if faults.slow_response_seconds > 0:
                counter.add("http_slow")
                await asyncio.sleep(faults.slow_response_seconds)
        if head.method not in ("GET", "HEAD"):
            result = RestResult(404, b"404 page not found", content_type="text/plain")
        else:
            result = hub.rest.handle(path, params)
        if faults.http_applies(path) and faults.take("truncate_next"):
            counter.add("http_truncated")
            writer.write(
                self._head_bytes(result, keep=False) + result.body[: len(result.body) // 2]
            )
            await writer.drain()
            writer.close()
            return False
        await self._write(writer, result, keep)
        return keep

    @staticmethod
    def _head_bytes(result: RestResult, keep: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {result.status} {REASONS.get(result.status, 'Unknown')}",
            f"Content-Type: {result.content_type}",
            f"Content-Length: {len(result.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in result.headers.items()]
        if not keep:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write(self, writer: asyncio.StreamWriter, result: RestResult, keep: bool) -> None:
        writer.write(self._head_bytes(result, keep) + result.body)
        await writer.drain()

    async def _websocket(
        self, head: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hub = self.hub
        path = urllib.parse.urlsplit(head.target).path
        proto = _Protocol(hub.faults, hub.counter)
        proto.receive_data(head.raw)
        request = next((e for e in proto.events_received() if isinstance(e, Request)), None)
        category = ""
        if path == "/v5/private":
            category = "private"
        elif path.startswith("/v5/public/") and path[len("/v5/public/") :] in WS_CATEGORIES:
            category = path[len("/v5/public/") :]
        if request is None:
            return
        hub.count_request(path, {})
        response = proto.accept(request) if category else proto.reject(404, "Not Found\n")
        proto.send_response(response)
        for data in proto.data_to_send():
            if data:
                writer.write(data)
        if response.status_code != 101:
            await writer.drain()
            return
        session = WsSession(
            category, str(uuid.uuid4()), hub.catalog, hub.clock.now_ms, hub.options.api_keys
        )
        conn = WsConn(hub, writer, proto, session)
        hub.conns.add(conn)
        hub.ws_connections_total += 1
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    proto.receive_eof()
                    conn.flush()
                    break
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        self._on_text(conn, bytes(event.data))
                    elif isinstance(event, Frame) and event.opcode is Opcode.PING:
                        pass  # the protocol answered (or withheld) the pong
                conn.flush()
                if proto.close_expected():
                    break
        finally:
            conn.closed = True
            hub.forget(conn)

    def _on_text(self, conn: WsConn, data: bytes) -> None:
        hub = self.hub
        reply = conn.session.on_text(data)
        if reply.ping and hub.faults.ignore_pings:
            hub.counter.add("ping_ignored")
            return
        for message in reply.replies:  # the ack goes before the first snapshot
            conn.send_control(message)
        for topic in reply.subscribe:
            hub.subscribe(conn, topic)
        for name in reply.unsubscribe:
            hub.unsubscribe(conn, name)
