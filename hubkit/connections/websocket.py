"""A streaming connection over WebSocket (``websockets``): topics in, decoded frames out.

::

    conn = WebSocketConnection(
        "wss://stream.example.com/v5/public/linear",
        {"publicTrade": TopicDecoder(trade_spec, renamed({"p": "price", "v": "size"}))},
        protocol=api_protocol,             # the API's message shapes: a ``WsProtocol``
        rest=HttpConnection(...),          # optional: fetch/create/... and gap backfill go here
        on_error=print,                     # malformed frames, failed resubscribes, reconnects
    )
    await conn.subscribe(["publicTrade.BTCUSDT"])     # before or after connect()
    await conn.connect()
    async for event in conn.messages():
        match event:
            case Message(topic=topic, frame=frame): ...
            case Reconnected(down_since=since): ...   # rows since ``since`` may be missing
            case FrameLost(topic=topic): ...          # a frame of ``topic`` did not decode

Promises:

- ``subscribe``/``unsubscribe`` send the protocol's request (chunked to ``max_args`` topics) and
  return when the server acknowledged it; a refusal raises ``ProtocolError`` naming the topic
  and forgets it; no ack in ``ack_timeout`` raises ``RemoteTimeout``. Called while
  disconnected or reconnecting, they only record the topics: the next (re)connect subscribes
  them all.
- A ping every ``ping_interval`` seconds (the protocol's shape, when it has one); the
  protocol recognises the pongs. No frame at all for ``silence_timeout`` seconds counts as a dead
  connection.
- A dropped or silent connection is reopened with exponential backoff and full jitter; every
  topic is subscribed again, then ``messages()`` yields ``Reconnected(attempt, down_since)``
  before any row from the new connection. Each failed attempt goes to ``on_error``. After
  ``max_reconnects`` failed attempts in a row (default: never give up) ``messages()`` raises
  ``TransportError``.
- A frame that does not decode (not JSON, wrong types, missing fields, rows that
  ``spec.from_wire`` refuses, a topic without decoder) is skipped whole and reported to
  ``on_error`` as ``DecodeError`` naming the field; the stream goes on. Nothing partial from
  a frame is ever yielded. Except for a topic without decoder (nothing of it is wanted),
  ``messages()`` then yields ``FrameLost(topic, error)`` where the frame's rows would have
  been (``topic`` None when the frame was not readable enough to tell), so a consumer can
  fetch what it lost (``WebSocketSubscription`` backfills those rows over REST).
- Backpressure: frames wait in a bounded queue (``max_buffer`` frames) between the reader and
  ``messages()``. When it is full the reader stops reading; ``websockets`` then stops reading
  the socket once its own small buffer fills, and TCP flow control slows the sender. Nothing
  is dropped. The silence watchdog does not count time spent waiting on a full queue. A
  consumer that stalls for long may still be disconnected by the server; the stream then
  reconnects as above. Acks are read by the same reader, so call ``subscribe`` while something
  drains ``messages()``.
- ``messages()`` coalesces: frames of one topic and kind already waiting in the queue (up to
  ``batch`` frames) become one ``Message`` whose frame holds their rows in arrival order. At
  low rates that is one frame per message; under load it saves per-frame decode overhead.
- Single consumer: iterate ``messages()`` from one task. Use the connection from one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from hubkit.connections._wsacks import AckBook, PendingAck, merge_refusals, refusals
from hubkit.connections._wsqueue import END, Channel, Failure, QueueItem, coalesce
from hubkit.connections._wsrest import RestVerbs
from hubkit.connections._wssocket import abort, open_socket
from hubkit.connections.auth import without_userinfo
from hubkit.connections.retry import Backoff, Sleep
from hubkit.connections.wsdecode import (
    DecoderLike,
    RawFrame,
    TopicDecoder,
    TopicDecoders,
    as_decode_error,
)
from hubkit.connections.wsproto import (
    WsAck,
    WsData,
    WsEvent,
    WsPong,
    WsProtocol,
    check_topics,
    chunked,
)
from hubkit.errors import (
    ClosedError,
    DecodeError,
    HubkitError,
    ProtocolError,
    RemoteTimeout,
    TransportError,
)
from hubkit.types import Connection, ErrorHandler, FrameLost, Reconnected, StreamEvent

__all__ = ["WebSocketConnection"]

logger = logging.getLogger("hubkit.connections")


class WebSocketConnection(RestVerbs):
    """A ``hubkit.StreamingConnection`` over WebSocket; see the module docstring for promises.

    ``WebSocketConnection(url, decoders, *, protocol, rest=None, on_error=None,
    ping_interval=20.0, silence_timeout=45.0, ack_timeout=10.0, backoff=Backoff(base=0.5,
    cap=30.0), max_reconnects=None, sleep=asyncio.sleep, max_buffer=1024, batch=256,
    open_timeout=10.0, max_size=16 MiB, compression=None)``

    ``decoders`` maps a topic, or a dotted prefix of it (``"publicTrade"``, ``"kline.5"``), to a
    ``TopicDecoder``, a ``(spec, extractor)`` pair or a bare ``EntitySpec``; the longest match
    wins. ``protocol`` is the API's message shapes (a ``WsProtocol``, which the provider
    package of the API supplies). ``rest`` serves ``fetch``/``create``/``update``/``remove``
    (gap backfill); without it they raise ``ProtocolError``. ``sleep`` is used for reconnect
    waits only (injectable).

    ``on_error`` (an attribute too, settable at any time) receives what the connection handles
    by itself: malformed frames (``DecodeError`` naming the field), failed reconnect attempts
    and resubscribes. None logs them at WARNING; a sink given a connection whose ``on_error``
    is None sets it to the sink's own reporter, so they reach ``sink.set_error_handler``.
    """

    def __init__(
        self,
        url: str,
        decoders: Mapping[str, DecoderLike],
        *,
        protocol: WsProtocol,
        rest: Connection | None = None,
        on_error: ErrorHandler | None = None,
        ping_interval: float | None = 20.0,
        silence_timeout: float | None = 45.0,
        ack_timeout: float = 10.0,
        backoff: Backoff | None = None,
        max_reconnects: int | None = None,
        sleep: Sleep = asyncio.sleep,
        max_buffer: int = 1024,
        batch: int = 256,
        open_timeout: float = 10.0,
        max_size: int | None = 16 * 2**20,
        compression: str | None = None,
    ) -> None:
        self.url = url
        self._shown = without_userinfo(url)  # for messages and logs: no credentials
        self._decoders = TopicDecoders(decoders)
        self.protocol = protocol
        # Data left as JSON text is decoded by the topic's decoder, straight into typed rows.
        self._parse: Callable[[bytes | str], WsEvent] = protocol.parse_lazy
        self.rest = rest
        # Public so a sink can route these errors to its own error handler when unset.
        self.on_error: ErrorHandler | None = on_error
        self.ping_interval = ping_interval
        self.silence_timeout = silence_timeout
        self.ack_timeout = ack_timeout
        self.backoff = backoff if backoff is not None else Backoff(base=0.5, cap=30.0)
        self.max_reconnects = max_reconnects
        self._sleep = sleep
        self._batch = max(1, batch)
        self._max_buffer = max(1, max_buffer)
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._compression = compression

        self._topics: dict[str, None] = {}  # desired topics, in subscription order
        self._channel = Channel(asyncio.Queue(self._max_buffer))
        self._ws: ClientConnection | None = None
        self._streaming = False  # the reader owns the socket and handles acks
        self._stopping = False
        self._reader: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._acks = AckBook()
        self._unknown_topics: set[str] = set()
        self._last_frame = 0.0  # loop time of the last frame received
        self._blocked = False  # the reader waits on a full queue
        self._drop_reason: str | None = None

        self.frames_received = 0
        self.decode_errors = 0
        self.reconnects = 0
        self.pongs = 0
        self.last_pong_at: float | None = None  # time.monotonic()
        self.last_error: HubkitError | None = None

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return (
            f"<WebSocketConnection {self._shown} topics={len(self._topics)} "
            f"reconnects={self.reconnects} {state}>"
        )

    @property
    def is_connected(self) -> bool:
        """True while a socket is open and subscribed (False while reconnecting)."""
        return self._ws is not None and self._streaming

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics this connection keeps subscribed."""
        return tuple(self._topics)

    @property
    def buffered(self) -> int:
        """Frames waiting in the queue for ``messages()``."""
        return self._channel.queue.qsize()

    # -- lifetime -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket, subscribe every recorded topic, start reading. Idempotent.

        Raises ``TransportError``/``RemoteTimeout`` when the server cannot be reached or does not
        ack in time, ``ProtocolError`` naming the topics it refused (those are forgotten); on
        error nothing is left open.
        """
        if self._reader is not None and not self._reader.done():
            return
        self._stopping = False
        if self._channel.closed:
            self._channel = Channel(asyncio.Queue(self._max_buffer))
        ws = await self._open()
        try:
            early, failures = await self._handshake(ws)
            if failures:
                raise merge_refusals(failures)
        except BaseException:
            await abort(ws)
            raise
        self._ws = ws
        self._streaming = True
        self._reader = asyncio.create_task(
            self._run(ws, early), name=f"hubkit-ws-reader {self._shown}"
        )
        keeper_running = self._keeper is not None and not self._keeper.done()
        if (self.ping_interval or self.silence_timeout) and not keeper_running:
            self._keeper = asyncio.create_task(self._keepalive(), name="hubkit-ws-keepalive")
        if self.rest is not None:
            await self.rest.connect()

    async def disconnect(self) -> None:
        """Stop reading, close the socket, end ``messages()`` after what is buffered."""
        self._stopping = True
        for task in (self._keeper, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keeper = self._reader = None
        ws, self._ws = self._ws, None
        self._streaming = False
        self._acks.fail_all(ClosedError("the WebSocket connection was closed"))
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2.0)
            await abort(ws)
        self._end_channel()
        if self.rest is not None:
            await self.rest.disconnect()

    async def __aenter__(self) -> WebSocketConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    async def reconnect(self) -> None:
        """Drop the socket on purpose; the stream reconnects and yields ``Reconnected``."""
        ws = self._ws
        if ws is None or self._reader is None or self._reader.done():
            await self.connect()
            return
        self._drop(ws, "reconnect requested")

    def _end_channel(self) -> None:
        channel = self._channel
        channel.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            channel.queue.put_nowait(END)

    # -- topics ---------------------------------------------------------------------------

    async def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe ``topics`` (see the module docstring). Already-kept topics are skipped."""
        new = [topic for topic in dict.fromkeys(check_topics(topics)) if topic not in self._topics]
        for topic in new:
            self._topics[topic] = None
        ws = self._ws
        if not new or ws is None or not self._streaming:
            return
        waits = await self._send_op(ws, "subscribe", new)
        await self._settle("subscribe", waits, forget=True)

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        """Stop ``topics``; rows already buffered for them are still delivered."""
        gone = [topic for topic in dict.fromkeys(check_topics(topics)) if topic in self._topics]
        for topic in gone:
            del self._topics[topic]
        ws = self._ws
        if not gone or ws is None or not self._streaming:
            return
        waits = await self._send_op(ws, "unsubscribe", gone)
        await self._settle("unsubscribe", waits, forget=False)

    async def _send_op(
        self, ws: ClientConnection, op: str, topics: Sequence[str]
    ) -> list[PendingAck]:
        waits: list[PendingAck] = []
        for chunk in chunked(topics, self.protocol.max_args):
            req_id, pending = self._acks.register(op, chunk)
            waits.append(pending)
            if op == "subscribe":
                text = self.protocol.subscribe(chunk, req_id)
            else:
                text = self.protocol.unsubscribe(chunk, req_id)
            try:
                await ws.send(text)
            except ConnectionClosed as exc:
                self._acks.forget(waits)
                raise TransportError(f"{op} {chunk}: the connection closed") from exc
        return waits

    async def _settle(self, op: str, waits: list[PendingAck], *, forget: bool) -> None:
        """Wait for the reader to deliver the acks of ``waits``; raise on refusal."""
        try:
            async with asyncio.timeout(self.ack_timeout):
                acks = [await pending.future for pending in waits]
        except TimeoutError as exc:
            self._acks.forget(waits)
            topics = [topic for pending in waits for topic in pending.topics]
            raise RemoteTimeout(f"no {op} ack for {topics} in {self.ack_timeout:g} s") from exc
        failures = self._refusals(op, waits, acks, forget=forget)
        if failures:
            raise merge_refusals(failures)

    def _refusals(
        self, op: str, waits: Sequence[PendingAck], acks: Sequence[WsAck], *, forget: bool
    ) -> list[ProtocolError]:
        found = refusals(op, waits, acks)
        if forget:
            for refusal in found:
                for topic in refusal.topics:
                    self._topics.pop(topic, None)
        return [refusal.error for refusal in found]

    # -- the socket -----------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        ws = await open_socket(
            self.url,
            open_timeout=self._open_timeout,
            max_size=self._max_size,
            compression=self._compression,
        )
        self._last_frame = asyncio.get_running_loop().time()
        return ws

    async def _handshake(self, ws: ClientConnection) -> tuple[list[QueueItem], list[ProtocolError]]:
        """Subscribe every kept topic on a fresh socket, reading frames inline until acked.

        Returns the data frames that arrived meanwhile and the refusals. Topics recorded while
        this runs are subscribed too.
        """
        early: list[QueueItem] = []
        failures: list[ProtocolError] = []
        sent: set[str] = set()
        while todo := [topic for topic in self._topics if topic not in sent]:
            sent.update(todo)
            waits = await self._send_op(ws, "subscribe", todo)
            await self._read_until_acked(ws, waits, early)
            acks = [pending.future.result() for pending in waits]
            failures.extend(self._refusals("subscribe", waits, acks, forget=True))
        return early, failures

    async def _read_until_acked(
        self, ws: ClientConnection, waits: list[PendingAck], early: list[QueueItem]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        while not all(pending.future.done() for pending in waits):
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    raw = await ws.recv(decode=False)
            except TimeoutError as exc:
                self._acks.forget(waits)
                topics = [topic for pending in waits for topic in pending.topics]
                raise RemoteTimeout(
                    f"no subscribe ack for {topics} in {self.ack_timeout:g} s"
                ) from exc
            except ConnectionClosed as exc:
                self._acks.forget(waits)
                raise TransportError("the connection closed while subscribing") from exc
            self._last_frame = loop.time()
            item = self._handle(raw)
            if item is not None:
                early.append(item)

    def _drop(self, ws: ClientConnection, reason: str) -> None:
        """Kill the socket now; the reader sees it closed and reconnects."""
        self._drop_reason = reason
        transport = ws.transport
        if transport is not None:
            transport.abort()

    async def _run(self, ws: ClientConnection, early: list[QueueItem]) -> None:
        """The reader task: read, reconnect on loss, until cancelled or out of attempts."""
        try:
            for item in early:
                await self._put(item)
            while True:
                reason = await self._read_until_lost(ws)
                if self._stopping:
                    return
                ws = await self._reconnect(reason)
        except HubkitError as exc:
            await self._give_up(exc)
        except Exception as exc:
            logger.exception("the WebSocket reader of %s failed", self._shown)
            error = TransportError(f"WebSocket {self._shown}: the reader failed ({exc!r})")
            error.__cause__ = exc
            await self._give_up(error)

    async def _give_up(self, error: HubkitError) -> None:
        """Out of reconnect attempts (or broken): the consumer sees the error, then the end."""
        self._ws = None
        self._streaming = False
        self._acks.fail_all(error)
        self._report(error)
        await self._put(Failure(error))

    async def _read_until_lost(self, ws: ClientConnection) -> str:
        """Read frames until the socket fails; returns why."""
        try:
            await self._read(ws)
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc})"
        except OSError as exc:
            reason = f"connection failed ({exc})"
        else:  # pragma: no cover - _read only returns by raising
            reason = "connection ended"
        reason = self._drop_reason or reason
        self._drop_reason = None
        return reason

    async def _read(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        queue = self._channel.queue
        handle = self._handle
        recv = ws.recv
        while True:
            raw = await recv(decode=False)
            self._last_frame = loop.time()
            item = handle(raw)
            if item is not None:
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:
                    await self._put(item)

    async def _put(self, item: QueueItem) -> None:
        """Queue ``item``, waiting while the queue is full (the watchdog holds off meanwhile)."""
        self._blocked = True
        try:
            await self._channel.queue.put(item)
        finally:
            self._blocked = False
            self._last_frame = asyncio.get_running_loop().time()

    async def _reconnect(self, reason: str) -> ClientConnection:
        # Rows may be missing since the last sign of life, not since the loss was noticed
        # (a silent connection is noticed ``silence_timeout`` late).
        quiet = max(0.0, asyncio.get_running_loop().time() - self._last_frame)
        down_since = datetime.now(UTC) - timedelta(seconds=quiet)
        self._ws = None
        self._streaming = False
        self._acks.fail_all(TransportError(f"the connection was lost: {reason}"))
        logger.info("WebSocket %s lost (%s); reconnecting", self._shown, reason)
        attempt = 0
        while True:
            if self.max_reconnects is not None and attempt >= self.max_reconnects:
                raise TransportError(
                    f"WebSocket {self._shown}: gave up after {attempt} reconnect attempts "
                    f"({reason})"
                )
            await self._sleep(self.backoff.delay(attempt))
            attempt += 1
            ws: ClientConnection | None = None
            try:
                ws = await self._open()
                early, failures = await self._handshake(ws)
            except HubkitError as exc:
                if ws is not None:
                    await abort(ws)
                reason = str(exc)
                self._report(exc)
                continue
            for failure in failures:
                self._report(failure)
            self.reconnects += 1
            self._ws = ws
            self._streaming = True
            await self._put(Reconnected(attempt=attempt, down_since=down_since))
            for item in early:
                await self._put(item)
            return ws

    async def _keepalive(self) -> None:
        """Send pings every ``ping_interval``; drop a socket silent for ``silence_timeout``."""
        loop = asyncio.get_running_loop()
        ping_every = self.ping_interval or float("inf")
        check_every = self.silence_timeout / 4 if self.silence_timeout else float("inf")
        next_ping = loop.time() + ping_every
        next_check = loop.time() + check_every
        while True:
            await asyncio.sleep(max(0.0, min(next_ping, next_check) - loop.time()))
            now = loop.time()
            ws = self._ws
            if ws is None or not self._streaming:
                next_ping, next_check = now + ping_every, now + check_every
                continue
            if now >= next_check:
                next_check = now + check_every
                silent = now - self._last_frame
                if self.silence_timeout and not self._blocked and silent > self.silence_timeout:
                    self._drop(ws, f"no frame for {silent:.1f} s")
                    continue
            if now >= next_ping:
                next_ping = now + ping_every
                text = self.protocol.ping(self._acks.next_id())
                if text is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(text)

    # -- frames ---------------------------------------------------------------------------

    def _handle(self, raw: bytes | str) -> RawFrame | FrameLost | None:
        """Parse one frame: control frames are acted on here, data frames are returned; a
        frame that does not decode is reported and becomes a ``FrameLost``."""
        try:
            event = self._parse(raw)
        except DecodeError as exc:
            self._decode_failed(exc)
            return FrameLost(None, exc)
        if type(event) is WsData:
            self.frames_received += 1
            decoder = self._decoder_for(event.topic)
            if decoder is None:
                return None
            try:
                items = decoder.rows(event.data)
            except Exception as exc:
                error = as_decode_error(exc, "cannot extract rows", "data")
                self._decode_failed(error, event.topic)
                return FrameLost(event.topic, error)
            return RawFrame(event.topic, event.kind, items, decoder, time.monotonic())
        if type(event) is WsAck:
            self._acks.on_ack(event)
        elif type(event) is WsPong:
            self.pongs += 1
            self.last_pong_at = time.monotonic()
        return None

    def _decoder_for(self, topic: str) -> TopicDecoder | None:
        decoder = self._decoders.resolve(topic)
        if decoder is None and topic not in self._unknown_topics:
            self._unknown_topics.add(topic)
            self._decode_failed(DecodeError(f"no decoder for topic {topic!r}", field="topic"))
        return decoder

    def _decode_failed(self, exc: DecodeError, topic: str | None = None) -> None:
        self.decode_errors += 1
        if topic is not None and topic not in str(exc):
            exc.args = (f"{topic}: {exc}", *exc.args[1:])
        self._report(exc)

    def _report(self, exc: HubkitError) -> None:
        self.last_error = exc
        handler = self.on_error
        if handler is None:
            logger.warning("WebSocket %s: %s", self._shown, exc)
            return
        try:
            handler(exc)
        except Exception:
            logger.exception("the WebSocket error handler failed")

    async def messages(self) -> AsyncIterator[StreamEvent]:
        """Decoded ``Message``s and ``Reconnected`` events, in arrival order per topic.

        Ends after ``disconnect()`` once the buffer is drained; raises ``TransportError`` when
        reconnecting gave up. One consumer at a time.
        """
        async for event in coalesce(self._channel, self._batch, self._decode_failed):
            yield event
