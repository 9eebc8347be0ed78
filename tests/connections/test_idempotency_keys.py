"""How each connection carries a write's idempotency key to the remote (servers on 127.0.0.1)."""

from __future__ import annotations

import pytest

from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections import HttpConnection, JsonRpcConnection, JsonRpcMethods, Route
from hubkit.connections.http import IDEMPOTENCY_HEADER, Verb
from hubkit.connections.websocket import WebSocketConnection
from hubkit.testing import InMemoryConnection

from ._spec import INSTRUMENT
from .servers import Reply, ScriptedHttpServer, Seen, http_server

ROW = {"symbol": "Z", "status": "Trading", "tick_size": 0.5}


def _header(seen: Seen) -> str | None:
    wanted = IDEMPOTENCY_HEADER.lower()
    return next((v for k, v in seen.headers.items() if k.lower() == wanted), None)


@pytest.mark.anyio
async def test_http_sends_the_key_as_the_idempotency_key_header() -> None:
    route = Route(
        "/items",
        items="items",
        create=Verb("POST", "/items"),
        update=Verb("PUT", "/items/{symbol}"),
        remove=Verb("DELETE", "/items/{symbol}"),
    )
    with http_server() as server:
        server.script("/items", [Reply(200, {})])
        server.script("/items/Z", [Reply(200, {})])
        async with HttpConnection(server.url, route) as conn:
            await conn.create(INSTRUMENT, ROW, idempotency_key="items:1:10")
            await conn.update(INSTRUMENT, ROW, idempotency_key="items:2:20")
            await conn.remove(INSTRUMENT, {"symbol": "Z"}, idempotency_key="items:3:30")
            await conn.create(INSTRUMENT, ROW)  # no key: no header
        sent = [(seen.method, _header(seen)) for seen in server.requests]
    assert sent == [
        ("POST", "items:1:10"),
        ("PUT", "items:2:20"),
        ("DELETE", "items:3:30"),
        ("POST", None),
    ]


def _rpc_server(server: ScriptedHttpServer, calls: list[tuple[dict[str, object], Seen]]) -> None:
    def handle(seen: Seen) -> Reply:
        request = seen.json()
        calls.append((request, seen))
        return Reply(200, {"jsonrpc": "2.0", "id": request["id"], "result": request["params"]})

    server.script("/rpc", handle)


@pytest.mark.anyio
async def test_json_rpc_sends_the_key_as_the_request_id_and_header() -> None:
    calls: list[tuple[dict[str, object], Seen]] = []
    methods = JsonRpcMethods(create="i.create", update="i.update", remove="i.remove")
    with http_server() as server:
        _rpc_server(server, calls)
        async with JsonRpcConnection(server.url + "/rpc", methods) as conn:
            assert await conn.create(INSTRUMENT, ROW, idempotency_key="items:1:10") == ROW
            await conn.update(INSTRUMENT, ROW, idempotency_key="items:2:20")
            await conn.remove(INSTRUMENT, {"symbol": "Z"}, idempotency_key="items:3:30")
            await conn.create(INSTRUMENT, ROW)
    ids = [(request["id"], _header(seen)) for request, seen in calls]
    assert ids[:3] == [
        ("items:1:10", "items:1:10"),
        ("items:2:20", "items:2:20"),
        ("items:3:30", "items:3:30"),
    ]
    assert isinstance(ids[3][0], int) and ids[3][1] is None  # a fresh numeric id, no header
    # the params stay the row: a server with a strict schema sees nothing new
    assert calls[0][0]["params"] == {
        "symbol": "Z",
        "status": "Trading",
        "priceFilter": {"tickSize": 0.5},
    }


@pytest.mark.anyio
async def test_json_rpc_can_also_pass_the_key_as_a_parameter() -> None:
    calls: list[tuple[dict[str, object], Seen]] = []
    methods = JsonRpcMethods(
        create="i.create", remove="i.remove", echo=False, idempotency_param="requestKey"
    )
    with http_server() as server:
        _rpc_server(server, calls)
        async with JsonRpcConnection(server.url + "/rpc", methods) as conn:
            await conn.create(INSTRUMENT, ROW, idempotency_key="k1")
            await conn.remove(INSTRUMENT, {"symbol": "Z"}, idempotency_key="k2")
            await conn.create(INSTRUMENT, ROW)
    params = [request["params"] for request, _ in calls]
    assert params[0] == {
        "symbol": "Z",
        "status": "Trading",
        "priceFilter": {"tickSize": 0.5},
        "requestKey": "k1",
    }
    assert params[1] == {"symbol": "Z", "requestKey": "k2"}
    assert isinstance(params[2], dict) and "requestKey" not in params[2]


@pytest.mark.anyio
async def test_websocket_writes_pass_the_key_to_their_rest_connection() -> None:
    rest = InMemoryConnection(key="symbol")
    conn = WebSocketConnection("ws://127.0.0.1:9/unused", {}, protocol=BybitWsProtocol(), rest=rest)
    await rest.connect()
    await conn.create(INSTRUMENT, ROW, idempotency_key="k1")
    await conn.create(INSTRUMENT, {**ROW, "status": "Closed"}, idempotency_key="k1")  # a repeat
    await conn.update(INSTRUMENT, {**ROW, "status": "Settling"}, idempotency_key="k2")
    await conn.remove(INSTRUMENT, {"symbol": "Z"}, idempotency_key="k3")
    await conn.remove(INSTRUMENT, {"symbol": "Z"}, idempotency_key="k3")
    assert rest.replays == 2
    assert rest.calls == [("create", ("Z",)), ("update", ("Z",)), ("remove", ("Z",))]
