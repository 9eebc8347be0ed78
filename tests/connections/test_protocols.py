"""Every connection satisfies the protocols the sinks and policies rely on."""

from __future__ import annotations

from hubkit.connections import (
    HttpConnection,
    JsonRpcConnection,
    JsonRpcMethods,
    Route,
    WebSocketConnection,
)
from hubkit.connections.wsproto import BybitWsProtocol, WsProtocol
from hubkit.types import Connection, StreamingConnection


def test_connections_satisfy_the_protocols() -> None:
    http = HttpConnection("http://127.0.0.1:1", Route("/x"))
    rpc = JsonRpcConnection("http://127.0.0.1:1/rpc", JsonRpcMethods(fetch="x"))
    ws = WebSocketConnection("ws://127.0.0.1:1", {}, rest=http)
    assert isinstance(http, Connection) and not isinstance(http, StreamingConnection)
    assert isinstance(rpc, Connection)
    assert isinstance(ws, StreamingConnection)
    assert isinstance(BybitWsProtocol(), WsProtocol)
