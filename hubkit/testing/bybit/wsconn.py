"""One WebSocket client of the simulator: its socket, its protocol state and what it is sent.

Outgoing data frames are framed once per message (``ws_frame``) and written to every subscriber
as the same bytes (server frames are unmasked), which is what lets one process feed hundreds of
clients. A subscriber whose transport buffer grows past ``ws_max_buffer`` (a client that stopped
reading) is sent a 1008 close frame and cut off, as an exchange drops a slow consumer (counted
as ``ws_slow_consumer``); a connection whose transport is closing is never written to again and
leaves every subscription at once, so a client that left costs nothing.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Mapping
from typing import Any, Protocol

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from hubkit.testing.bybit.faults import FaultCounter, Faults
from hubkit.testing.bybit.rest import ENCODER
from hubkit.testing.bybit.ws import WsSession

__all__ = ["ConnOwner", "WsConn", "WsServerProtocol", "malform", "ws_frame"]

SLOW_CONSUMER_GRACE_S = 2.0  # a dropped slow consumer that reads nothing more is then aborted


class ConnOwner(Protocol):
    """What a connection needs from the hub that publishes to it."""

    faults: Faults
    counter: FaultCounter
    messages_out: int
    corked: bool  # True while a publishing round gathers frames per connection
    dirty: list[WsConn]  # connections with frames gathered in this round

    @property
    def ws_max_buffer(self) -> int:
        """Bytes a client may leave unread before it is dropped as a slow consumer."""
        ...

    def forget(self, conn: WsConn) -> None:
        """Drop every subscription of a closed connection (idempotent)."""
        ...


def ws_frame(payload: bytes) -> bytes:
    """A complete unmasked server text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class WsServerProtocol(ServerProtocol):
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
        hub: ConnOwner,
        writer: asyncio.StreamWriter,
        proto: WsServerProtocol,
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
        elif self.transport.get_write_buffer_size() > self.hub.ws_max_buffer:
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
        elif self.transport.get_write_buffer_size() > self.hub.ws_max_buffer:
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
