"""The simulator's network side: one asyncio server on 127.0.0.1 for REST and WebSocket.

Every TCP connection starts as HTTP/1.1, parsed by h11 (keep-alive, as ``requests`` and
``httpx`` use it; chunked and ``Content-Length`` bodies read whole; HEAD answered with the
headers of the GET answer and no body). A request h11 cannot read gets a 400 and the
connection is closed. A request with ``Upgrade: websocket`` to ``/v5/public/<category>`` or
``/v5/private`` is handed to ``websockets``' Sans-I/O ``ServerProtocol`` for the handshake and
for parsing client frames (see ``wsconn``); ``hub.Hub`` publishes to the subscribers.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from types import MappingProxyType

import h11
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from hubkit.testing.bybit.hub import WS_CATEGORIES, Hub
from hubkit.testing.bybit.rest import ENCODER, RestResult, envelope
from hubkit.testing.bybit.ws import WsSession
from hubkit.testing.bybit.wsconn import WsConn, WsServerProtocol

__all__ = ["SimServer"]

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
READ_SIZE = 65536


@dataclass(frozen=True)
class _Incoming:
    """One request as h11 read it: the head and the whole body."""

    head: h11.Request
    body: bytes

    @property
    def method(self) -> str:
        return _text(self.head.method)

    def header(self, name: bytes) -> str:
        for key, value in self.head.headers:
            if key == name:
                return _text(value)
        return ""


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _request_bytes(head: h11.Request) -> bytes:
    """The request head as it went over the wire (names in their original case)."""
    lines = [head.method + b" " + head.target + b" HTTP/" + head.http_version]
    lines += [name + b": " + value for name, value in head.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_upgrade(incoming: _Incoming) -> bool:
    return incoming.header(b"upgrade").lower() == "websocket"


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
        except ConnectionError:
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
        http = h11.Connection(h11.SERVER)
        while True:
            try:
                incoming = await self._receive(http, reader)
            except h11.RemoteProtocolError as exc:
                await self._bad_request(writer, exc)
                return
            if incoming is None:
                return
            if _is_upgrade(incoming):
                await self._websocket(incoming.head, http.trailing_data[0], reader, writer)
                return
            if not await self._http(http, incoming, ip, reader, writer):
                return
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return  # h11 says the connection must close (HTTP/1.0, Connection: close)
            http.start_next_cycle()

    @staticmethod
    async def _receive(http: h11.Connection, reader: asyncio.StreamReader) -> _Incoming | None:
        """The next whole request (head and body), or None when the client closed first."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(READ_SIZE))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                assert head is not None
                return _Incoming(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    async def _bad_request(writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
        """A 400 (or h11's hint, e.g. 431) naming what could not be read; then the close."""
        status = exc.error_status_hint
        body = f"{status} Bad Request: {exc}\n".encode()
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Bad Request')}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()

    async def _http(
        self,
        http: h11.Connection,
        incoming: _Incoming,
        ip: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection is to close now."""
        hub, faults, counter = self.hub, self.hub.faults, self.hub.counter
        url = urllib.parse.urlsplit(_text(incoming.head.target))
        path = url.path
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        hub.count_request(path, params)
        if hub.ip_limited(ip):
            counter.add("ip_limited")
            result = RestResult(403, b"access too frequent", content_type="text/plain")
            await self._write(http, writer, incoming, result)
            return True
        now = hub.clock.now_ms()
        if faults.http_applies(path):
            if faults.take("timeout_next"):
                counter.add("http_timeout")
                while await reader.read(READ_SIZE):  # hold the request until the client leaves
                    pass
                return False
            if faults.take("http_5xx_next"):
                counter.add("http_5xx")
                status = faults.http_5xx_status
                body = f"{status} {REASONS.get(status, 'Server Error')}".encode()
                result = RestResult(status, body, content_type="text/plain")
                await self._write(http, writer, incoming, result)
                return True
            if faults.take("http_429_next"):
                counter.add("http_429")
                retry = faults.retry_after_seconds
                result = RestResult(
                    429,
                    b"System level frequency protection, please retry",
                    headers={"Retry-After": f"{retry:g}"},
                    content_type="text/plain",
                )
                await self._write(http, writer, incoming, result)
                return True
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
                await self._write(http, writer, incoming, RestResult(200, body, headers=headers))
                return True
            if faults.slow_response_seconds > 0:
                counter.add("http_slow")
                await asyncio.sleep(faults.slow_response_seconds)
        if incoming.method not in ("GET", "HEAD"):
            result = RestResult(404, b"404 page not found", content_type="text/plain")
        else:
            result = hub.rest.handle(path, params)
        if faults.http_applies(path) and faults.take("truncate_next"):
            counter.add("http_truncated")
            # The head promises the whole body; half of it arrives, then the connection ends.
            writer.write(http.send(_response(result)) + result.body[: len(result.body) // 2])
            await writer.drain()
            writer.close()
            return False
        await self._write(http, writer, incoming, result)
        return True

    @staticmethod
    async def _write(
        http: h11.Connection,
        writer: asyncio.StreamWriter,
        incoming: _Incoming,
        result: RestResult,
    ) -> None:
        """Send ``result``; to a HEAD request only its head (h11 sends no body for HEAD)."""
        data = http.send(_response(result))
        if incoming.method != "HEAD":
            data += http.send(h11.Data(data=result.body))
        data += http.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()

    async def _websocket(
        self,
        head: h11.Request,
        early: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Hand the connection to ``websockets``' Sans-I/O protocol from the upgrade request on.

        The request h11 parsed is given to it again as bytes (its own parser must see it);
        ``early`` is whatever the client sent after the request before the answer.
        """
        hub = self.hub
        path = urllib.parse.urlsplit(_text(head.target)).path
        proto = WsServerProtocol(hub.faults, hub.counter)
        proto.receive_data(_request_bytes(head))
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
        if early:
            proto.receive_data(early)
            self._on_events(conn)
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    proto.receive_eof()
                    conn.flush()
                    break
                proto.receive_data(data)
                self._on_events(conn)
                if proto.close_expected():
                    break
        finally:
            conn.closed = True
            hub.forget(conn)

    def _on_events(self, conn: WsConn) -> None:
        for event in conn.proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._on_text(conn, bytes(event.data))
            # pings: the protocol answered (or withheld) the pong itself
        conn.flush()

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


def _response(result: RestResult) -> h11.Response:
    headers = [
        ("Content-Type", result.content_type),
        ("Content-Length", str(len(result.body))),
        *result.headers.items(),
    ]
    reason = REASONS.get(result.status, "Unknown")
    return h11.Response(status_code=result.status, headers=headers, reason=reason)
