"""Minimal real servers on 127.0.0.1 for the connection tests.

``ScriptedHttpServer``: an HTTP/1.1 keep-alive server in a thread; each path answers from a
script (a list of ``Reply`` or a callable), and every request is recorded.
``FakeBybitWs``: a ``websockets`` server speaking the ByBit v5 public shapes of one category.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # wait for this before answering (timeouts)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Seen], Reply]


class ScriptedHttpServer:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._scripts: dict[str, list[Reply] | Handler] = {}
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parsed.path,
                    dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
                    parsed.query,
                    dict(self.headers.items()),
                    body,
                    self.client_address[1],
                )
                reply = outer._reply(seen)
                if reply.hold is not None:
                    reply.hold.wait(10)
                if isinstance(reply.body, bytes):
                    payload = reply.body
                    content_type = "text/plain"
                else:
                    payload = json.dumps(reply.body).encode() if reply.body is not None else b""
                    content_type = "application/json"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, replies: list[Reply] | Handler) -> None:
        """Answer ``path`` with ``replies`` in turn (the last one repeats) or with a callable."""
        with self._lock:
            self._scripts[path] = replies if callable(replies) else list(replies)

    def _reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            script = self._scripts.get(seen.path)
            if script is None:
                return Reply(404, {"error": "no such path"})
            if callable(script):
                handler = script
            else:
                reply = script.pop(0) if len(script) > 1 else script[0]
                return reply
        return handler(seen)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def http_server() -> Iterator[ScriptedHttpServer]:
    server = ScriptedHttpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bybit_ok(items: list[Any], cursor: str | None = None, **result: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"category": "linear", "list": items, **result}
    if cursor is not None:
        body["nextPageCursor"] = cursor
    return {"retCode": 0, "retMsg": "OK", "result": body, "retExtInfo": {}, "time": 1}


def bybit_error(code: int, message: str) -> dict[str, Any]:
    return {"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {}, "time": 1}


# -- WebSocket ---------------------------------------------------------------------------


class FakeBybitWs:
    """ByBit v5 public WebSocket shapes for one ``category`` (linear, inverse, spot, option).

    Acks and pongs use that category's shape; topics in ``bad_topics`` are refused; ``silent``
    stops all answers (for the watchdog); ``max_args`` refuses bigger subscribe requests like
    spot does. Every received message is recorded per connection.
    """

    def __init__(self, category: str = "linear", *, max_args: int | None = None) -> None:
        self.category = category
        self.max_args = max_args if max_args is not None else (10 if category == "spot" else None)
        self.bad_topics: set[str] = set()
        self.silent = False
        self.muted: set[int] = set()  # connections (by index) that get no answers
        self.received: list[list[dict[str, Any]]] = []  # per connection
        self.subscribed: list[set[str]] = []
        self._connections: list[ServerConnection] = []
        self._server: Server | None = None
        self.connected = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/v5/public/{self.category}"

    async def __aenter__(self) -> FakeBybitWs:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def stop_accepting(self) -> None:
        """Close the listening socket and every connection (the server is gone)."""
        assert self._server is not None
        self._server.close(close_connections=True)
        await self._server.wait_closed()

    @property
    def connections(self) -> int:
        return len(self.received)

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.received)
        self.received.append([])
        self.subscribed.append(set())
        self._connections.append(ws)
        self.connected.set()
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.received[index].append(message)
                if self.silent or index in self.muted:
                    continue
                reply = self._answer(message, index)
                if reply is not None:
                    await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass

    def _answer(self, message: dict[str, Any], index: int) -> dict[str, Any] | None:
        op = message.get("op")
        req_id = message.get("req_id", "")
        if op == "ping":
            if self.category in ("option", "spread"):
                return {"args": ["1672916271846"], "op": "pong"}
            pong = {"success": True, "ret_msg": "pong", "conn_id": "c1", "op": "ping"}
            if self.category != "spot":
                pong["req_id"] = req_id
            return pong
        if op in ("subscribe", "unsubscribe"):
            args = list(message.get("args", []))
            if self.max_args is not None and len(args) > self.max_args:
                return self._ack(op, req_id, False, f"args size >{self.max_args}", [], args)
            bad = [topic for topic in args if topic in self.bad_topics]
            good = [topic for topic in args if topic not in self.bad_topics]
            if op == "subscribe":
                self.subscribed[index].update(good)
            else:
                self.subscribed[index].difference_update(args)
            if bad and self.category not in ("option", "spread"):
                return self._ack(
                    op, req_id, False, f"error:handler not found,topic:{bad[0]}", good, bad
                )
            return self._ack(op, req_id, True, "", good, bad)
        return None

    def _ack(
        self, op: str, req_id: str, success: bool, message: str, good: list[str], bad: list[str]
    ) -> dict[str, Any]:
        if self.category in ("option", "spread"):
            return {
                "success": success,
                "conn_id": "c1",
                "data": {"failTopics": bad, "successTopics": good},
                "type": "COMMAND_RESP",
            }
        ret_msg = message or ("subscribe" if self.category == "spot" and op == "subscribe" else "")
        return {"success": success, "ret_msg": ret_msg, "conn_id": "c1", "req_id": req_id, "op": op}

    async def send_raw(self, text: str | bytes, connection: int = -1) -> None:
        await self._connections[connection].send(text)

    async def publish(self, topic: str, data: Any, kind: str = "snapshot") -> None:
        """Send a data frame on ``topic`` to the newest connection subscribed to it."""
        frame = json.dumps({"topic": topic, "type": kind, "ts": 1672304486868, "data": data})
        for index in range(len(self._connections) - 1, -1, -1):
            if topic in self.subscribed[index]:
                await self._connections[index].send(frame)
                return
        raise AssertionError(f"nobody subscribed to {topic}")

    async def drop(self) -> None:
        """Cut the newest connection without a close handshake."""
        ws = self._connections[-1]
        ws.transport.abort()


def trade(i: int, symbol: str = "BTCUSDT", price: str = "16578.50") -> dict[str, Any]:
    return {
        "T": 1672304486865 + i,
        "s": symbol,
        "S": "Buy",
        "v": "0.001",
        "p": price,
        "L": "PlusTick",
        "i": f"t-{i}",
        "BT": False,
        "seq": 1783284617 + i,
    }
