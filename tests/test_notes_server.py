"""hubkit.testing.NotesServer: the JSON-RPC notes service the README's sink example talks to."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hubkit.testing import NotesServer


def rpc(server: NotesServer, method: str, params: Any = None, ident: int = 1) -> Any:
    document: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": ident}
    if params is not None:
        document["params"] = params
    answer = httpx.post(server.url, json=document)
    assert answer.status_code == 200
    body = answer.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == ident
    return body


def test_writes_are_stored_with_a_revision_and_listed_by_id() -> None:
    with NotesServer() as server:
        assert rpc(server, "notes.create", {"id": 2, "title": "b"})["result"]["revision"] == 1
        rpc(server, "notes.create", {"id": 1, "title": "a"})
        assert rpc(server, "notes.update", {"id": 2, "title": "bb"})["result"] == {
            "id": 2,
            "title": "bb",
            "revision": 2,
        }
        listed = rpc(server, "notes.list")["result"]["items"]
        assert [n["id"] for n in listed] == [1, 2]
        assert rpc(server, "notes.remove", {"id": 1})["result"] is None
        assert list(server.rows) == [2]
        assert server.calls == [
            "notes.create", "notes.create", "notes.update", "notes.list", "notes.remove"
        ]  # fmt: skip


def test_refusals_carry_json_rpc_error_codes() -> None:
    with NotesServer() as server:
        assert rpc(server, "notes.create", {"id": 3, "title": ""})["error"]["code"] == -32602
        assert "no note 9" in rpc(server, "notes.remove", {"id": 9})["error"]["message"]
        assert rpc(server, "notes.rename", {"id": 3})["error"]["code"] == -32601
        assert rpc(server, "notes.create", ["not", "a", "note"])["error"]["code"] == -32602
        bad = httpx.post(server.url, content=b"{not json").json()
        assert bad["error"]["code"] == -32700
        assert server.rows == {}


def test_url_needs_a_started_server_and_stop_closes_the_port() -> None:
    server = NotesServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    url = server.start().url
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json={"jsonrpc": "2.0", "method": "notes.list", "id": 1})
