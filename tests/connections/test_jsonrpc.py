"""JsonRpcConnection against a small JSON-RPC 2.0 server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hubkit.connections import Backoff, Cursor, JsonRpcConnection, JsonRpcMethods, RetryPolicy
from hubkit.connections.jsonrpc import is_temporary_code
from hubkit.errors import DecodeError, ProtocolError, Rejected, RemoteTimeout, SchemaError

from ._spec import INSTRUMENT, TRADE, Instrument
from .servers import Reply, ScriptedHttpServer, Seen, http_server


class RpcServer:
    """Instruments over JSON-RPC: list (paginated), create, update, remove, plus faults."""

    def __init__(self, http: ScriptedHttpServer) -> None:
        self.http = http
        self.rows: dict[str, dict[str, Any]] = {
            s: {"symbol": s, "status": "Trading", "priceFilter": {"tickSize": "0.1"}}
            for s in ("A", "B", "C", "D", "E")
        }
        self.calls: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any] | Reply] = []  # answered instead, in turn
        self.wrong_id = False
        self.lock = threading.Lock()
        http.script("/rpc", self.handle)

    @property
    def url(self) -> str:
        return self.http.url + "/rpc"

    def handle(self, seen: Seen) -> Reply:
        request = seen.json()
        with self.lock:
            self.calls.append(request)
            fault = self.faults.pop(0) if self.faults else None
        if isinstance(fault, Reply):
            return fault
        if fault is not None:
            return Reply(200, {"jsonrpc": "2.0", "id": request["id"], "error": fault})
        answer_id = request["id"] + 1000 if self.wrong_id else request["id"]
        try:
            result = self.dispatch(request["method"], request.get("params") or {})
        except KeyError as exc:
            error = {"code": -32602, "message": f"invalid params: unknown {exc}"}
            return Reply(200, {"jsonrpc": "2.0", "id": answer_id, "error": error})
        return Reply(200, {"jsonrpc": "2.0", "id": answer_id, "result": result})

    def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        if method == "instruments.list":
            symbols = sorted(self.rows)
            start = int(params.get("cursor") or 0)
            size = int(params.get("limit", 2))
            page = symbols[start : start + size]
            more = start + size < len(symbols)
            return {
                "items": [self.rows[s] for s in page],
                "next": str(start + size) if more else "",
            }
        if method in ("instruments.create", "instruments.update"):
            self.rows[params["symbol"]] = params
            return params
        if method == "instruments.remove":
            del self.rows[params["symbol"]]
            return None
        raise AssertionError(method)


@pytest.fixture
def rpc() -> Iterator[RpcServer]:
    with http_server() as http:
        yield RpcServer(http)


METHODS = JsonRpcMethods(
    fetch="instruments.list",
    create="instruments.create",
    update="instruments.update",
    remove="instruments.remove",
    items="items",
    cursor=Cursor("next", "cursor"),
    params={"limit": 2},
)


class Waits:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def policy(self, retries: int = 3) -> RetryPolicy:
        return RetryPolicy(retries=retries, backoff=Backoff(base=0.1), sleep=self.sleep)


@pytest.mark.anyio
async def test_fetch_pages_through_the_method(rpc: RpcServer) -> None:
    async with JsonRpcConnection(rpc.url, {Instrument: METHODS}) as conn:
        frame = await conn.fetch(INSTRUMENT)
        assert conn.requests_made == 3
    assert frame["symbol"].to_list() == ["A", "B", "C", "D", "E"]
    assert [call["params"].get("cursor") for call in rpc.calls] == [None, "2", "4"]
    assert all(
        call["jsonrpc"] == "2.0" and call["method"] == "instruments.list" for call in rpc.calls
    )
    ids = [call["id"] for call in rpc.calls]
    assert len(set(ids)) == 3  # a fresh id per call
    assert {seen.path for seen in rpc.http.requests} == {"/rpc"}  # the URL as given


@pytest.mark.anyio
async def test_create_update_remove(rpc: RpcServer) -> None:
    row = {"symbol": "Z", "status": "PreLaunch", "tick_size": 0.5}
    async with JsonRpcConnection(rpc.url, METHODS) as conn:
        assert await conn.create(INSTRUMENT, row) == row
        assert await conn.update(INSTRUMENT, {**row, "status": "Trading"}) == {
            **row,
            "status": "Trading",
        }
        await conn.remove(INSTRUMENT, {"symbol": "Z"})
    assert "Z" not in rpc.rows
    create, update, remove = rpc.calls
    wire = {"symbol": "Z", "status": "PreLaunch", "priceFilter": {"tickSize": 0.5}}
    assert create["params"] == wire
    assert update["params"] == {**wire, "status": "Trading"}
    assert remove["params"] == {"symbol": "Z"}


@pytest.mark.anyio
async def test_server_errors_are_temporary_and_retried(rpc: RpcServer) -> None:
    waits = Waits()
    rpc.faults = [{"code": -32000, "message": "busy"}, {"code": -32050, "message": "busy"}]
    async with JsonRpcConnection(rpc.url, METHODS, retries=waits.policy()) as conn:
        frame = await conn.fetch(INSTRUMENT, {"limit": 10})
    assert frame.height == 5 and len(waits.sleeps) == 2


@pytest.mark.anyio
async def test_other_error_codes_are_permanent(rpc: RpcServer) -> None:
    waits = Waits()
    rpc.faults = [{"code": -32601, "message": "Method not found"}]
    async with JsonRpcConnection(rpc.url, METHODS, retries=waits.policy()) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.code == -32601 and not caught.value.temporary
    assert "Method not found" in str(caught.value)
    assert waits.sleeps == []


@pytest.mark.anyio
async def test_a_refused_write_is_rejected(rpc: RpcServer) -> None:
    async with JsonRpcConnection(rpc.url, METHODS, retries=Waits().policy()) as conn:
        with pytest.raises(Rejected) as caught:
            await conn.remove(INSTRUMENT, {"symbol": "NOPE"})
    assert caught.value.code == -32602 and "unknown" in str(caught.value)


@pytest.mark.anyio
async def test_a_temporary_error_on_a_write_is_not_rejected(rpc: RpcServer) -> None:
    rpc.faults = [{"code": -32001, "message": "try later"}]
    async with JsonRpcConnection(rpc.url, METHODS, retries=Waits().policy()) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.create(INSTRUMENT, {"symbol": "Y", "status": "x", "tick_size": 1.0})
    # Writes are not idempotent by default: raised for the outbox to retry, not rejected.
    assert caught.value.temporary and not isinstance(caught.value, Rejected)
    assert len(rpc.calls) == 1


@pytest.mark.anyio
async def test_id_mismatch_is_a_protocol_error(rpc: RpcServer) -> None:
    rpc.wrong_id = True
    async with JsonRpcConnection(rpc.url, METHODS, retries=0) as conn:
        with pytest.raises(ProtocolError, match="does not match"):
            await conn.fetch(INSTRUMENT)


@pytest.mark.anyio
async def test_error_object_in_an_http_error_is_used(rpc: RpcServer) -> None:
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
    rpc.faults = [Reply(500, error)]
    async with JsonRpcConnection(rpc.url, METHODS, retries=0) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.code == -32700 and caught.value.status == 500


@pytest.mark.anyio
async def test_http_5xx_without_error_object_is_retried(rpc: RpcServer) -> None:
    waits = Waits()
    rpc.faults = [Reply(503, b"unavailable")]
    async with JsonRpcConnection(rpc.url, METHODS, retries=waits.policy()) as conn:
        frame = await conn.fetch(INSTRUMENT, {"limit": 10})
    assert frame.height == 5 and len(waits.sleeps) == 1


@pytest.mark.anyio
async def test_answers_that_are_not_json_rpc(rpc: RpcServer) -> None:
    rpc.faults = [Reply(200, b"hello"), Reply(200, {"jsonrpc": "2.0", "id": 2})]
    async with JsonRpcConnection(rpc.url, METHODS, retries=0) as conn:
        with pytest.raises(DecodeError, match="not JSON"):
            await conn.fetch(INSTRUMENT)
        with pytest.raises(DecodeError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.field == "result"


@pytest.mark.anyio
async def test_timeout(rpc: RpcServer) -> None:
    release = threading.Event()
    rpc.faults = [Reply(200, {}, hold=release)]
    try:
        async with JsonRpcConnection(rpc.url, METHODS, timeout=0.05, retries=0) as conn:
            with pytest.raises(RemoteTimeout):
                await conn.fetch(INSTRUMENT)
    finally:
        release.set()


@pytest.mark.anyio
async def test_missing_methods(rpc: RpcServer) -> None:
    conn = JsonRpcConnection(rpc.url, {Instrument: JsonRpcMethods(fetch="instruments.list")})
    with pytest.raises(SchemaError):
        conn.methods_for(TRADE)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="create"):
        await conn.create(INSTRUMENT, {"symbol": "A", "status": "x", "tick_size": 1.0})
    await conn.disconnect()


def test_temporary_codes() -> None:
    assert is_temporary_code(-32000) and is_temporary_code(-32099)
    assert not is_temporary_code(-32100) and not is_temporary_code(-32600)
