"""``NotesServer``: a small JSON-RPC 2.0 notes service on 127.0.0.1, for examples and tests.

It is the remote of the README's and ``notebooks/custom_entity.ipynb``'s ``Note`` sink::

    from hubkit.testing import NotesServer

    with NotesServer() as server:                 # a free port; or NotesServer(port=8545)
        connection = JsonRpcConnection(server.url, {Note: JsonRpcMethods(
            fetch="notes.list", create="notes.create", update="notes.update",
            remove="notes.remove", items="items")})
        ...
        server.rows                               # {id: note as the server stores it}

Methods (``params`` is one note as a JSON object, or nothing for ``notes.list``):

- ``notes.list`` -> ``{"items": [note, ...]}`` sorted by ``id``;
- ``notes.create`` / ``notes.update`` -> the stored note, with ``revision`` raised by one on
  every write; a note without a ``title`` is refused (error ``-32602``, a permanent refusal);
- ``notes.remove`` -> ``null``; an unknown ``id`` is refused (``-32602``).

Any other method answers ``-32601``; a body that is not JSON answers ``-32700``. The server
answers every request with HTTP 200 and runs in daemon threads; ``stop()`` (or leaving the
``with`` block) closes the socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["NotesServer"]

_INVALID_PARAMS = -32602
_NO_METHOD = -32601
_PARSE_ERROR = -32700


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotesServer:
    """JSON-RPC notes on ``http://127.0.0.1:<port>/rpc`` (``port=0``: a free one).

    ``start()`` binds and serves in a daemon thread and returns the server; ``url`` is then
    the endpoint. ``rows`` is a copy of the stored notes by ``id``; ``calls`` lists the
    method names received, in order. Thread-safe; a stopped server cannot be restarted.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._rows: dict[Any, dict[str, Any]] = {}
        self._calls: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the notes server is not started: call start() first")
        return f"http://127.0.0.1:{self._httpd.server_port}/rpc"

    @property
    def rows(self) -> dict[Any, dict[str, Any]]:
        with self._lock:
            return {key: dict(row) for key, row in self._rows.items()}

    @property
    def calls(self) -> list[str]:
        with self._lock:
            return list(self._calls)

    def start(self) -> NotesServer:
        if self._httpd is not None:
            raise RuntimeError("the notes server is already started")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hubkit-notes-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    close = stop

    def __enter__(self) -> NotesServer:
        return self if self._httpd is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def call(self, method: str, params: Any) -> Any:
        """Answer one call (what the HTTP side does per request); raises ``_Refused``."""
        with self._lock:
            self._calls.append(method)
            if method == "notes.list":
                return {"items": [dict(self._rows[k]) for k in sorted(self._rows)]}
            if method in ("notes.create", "notes.update", "notes.remove"):
                note = _note(params)
                if method == "notes.remove":
                    if self._rows.pop(note["id"], None) is None:
                        raise _Refused(_INVALID_PARAMS, f"no note {note['id']!r}")
                    return None
                if not note.get("title"):
                    raise _Refused(_INVALID_PARAMS, "a note needs a title")
                revision = int(self._rows.get(note["id"], {}).get("revision", 0)) + 1
                self._rows[note["id"]] = {**note, "revision": revision}
                return dict(self._rows[note["id"]])
            raise _Refused(_NO_METHOD, f"unknown method {method!r}")

    def __repr__(self) -> str:
        where = "stopped" if self._httpd is None else self.url
        return f"<NotesServer {where} notes={len(self._rows)}>"


def _note(params: Any) -> Mapping[str, Any]:
    if not isinstance(params, Mapping) or "id" not in params:
        raise _Refused(_INVALID_PARAMS, "params must be a note object with an id")
    return params


def _answer(server: NotesServer, body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except ValueError:
        return {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": _PARSE_ERROR, "message": "bad JSON"},
        }
    ident = request.get("id") if isinstance(request, dict) else None
    answer: dict[str, Any] = {"jsonrpc": "2.0", "id": ident}
    try:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise _Refused(_INVALID_PARAMS, "a request is an object with a method")
        answer["result"] = server.call(request["method"], request.get("params"))
    except _Refused as exc:
        answer["error"] = {"code": exc.code, "message": str(exc)}
    return answer


def _handler(server: NotesServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.dumps(_answer(server, self.rfile.read(length))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a test or notebook output is no access log

    return Handler
