"""Every connection satisfies the protocols the sinks and policies rely on."""

from __future__ import annotations

from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.bybit.signer import BybitSigner
from hubkit.connections import (
    HttpConnection,
    JsonRpcConnection,
    JsonRpcMethods,
    Route,
    Signer,
    WebSocketConnection,
    WsProtocol,
)
from hubkit.types import Connection, StreamingConnection


def test_connections_satisfy_the_protocols() -> None:
    http = HttpConnection("http://127.0.0.1:1", Route("/x"))
    rpc = JsonRpcConnection("http://127.0.0.1:1/rpc", JsonRpcMethods(fetch="x"))
    ws = WebSocketConnection("ws://127.0.0.1:1", {}, protocol=BybitWsProtocol(), rest=http)
    assert isinstance(http, Connection) and not isinstance(http, StreamingConnection)
    assert isinstance(rpc, Connection)
    assert isinstance(ws, StreamingConnection)
    # Static checks (mypy --strict runs over the tests' types): these assignments fail to type
    # check if the ByBit pieces stop matching the shapes the connections take.
    protocol: WsProtocol = BybitWsProtocol()
    signer: Signer = BybitSigner("key", "secret")
    assert protocol.max_args >= 1 and list(signer.secrets())
