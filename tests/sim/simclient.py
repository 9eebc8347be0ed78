"""Small blocking helpers for talking to a running simulator in tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from hubkit.testing import BybitSimulator


def rest(sim: BybitSimulator, path: str, **params: str | int) -> Any:
    """GET a simulator route and return the decoded JSON body (asserts HTTP 200)."""
    r = httpx.get(f"{sim.rest_url}{path}", params={k: str(v) for k, v in params.items()})
    assert r.status_code == 200, r.text
    return r.json()


def result(sim: BybitSimulator, path: str, **params: str | int) -> Any:
    """GET a route and return ``result`` (asserts retCode 0)."""
    body = rest(sim, path, **params)
    assert body["retCode"] == 0, body
    return body["result"]


def ws(sim: BybitSimulator, category: str) -> ClientConnection:
    """Open a WebSocket to ``/v5/public/<category>`` (or ``/v5/private``)."""
    return connect(sim.ws_endpoint(category), open_timeout=5, close_timeout=1)


def send(conn: ClientConnection, message: Mapping[str, Any]) -> None:
    conn.send(json.dumps(message))


def recv_until(
    conn: ClientConnection, want: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Receive frames until one decodes to an object for which ``want`` is true."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for a matching frame"
        message = json.loads(conn.recv(timeout=left))
        if isinstance(message, dict) and want(message):
            return message


def topic_is(topic: str, kind: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """A predicate for data messages of ``topic`` (and ``type`` when given)."""
    return lambda m: m.get("topic") == topic and (kind is None or m.get("type") == kind)
