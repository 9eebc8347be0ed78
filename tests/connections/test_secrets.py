"""Credentials never leak: not when read from a file with a newline, not in an escaped or
percent-encoded form, not from a URL's user info into httpx's own log lines."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hubkit.bybit.signer import BybitSigner
from hubkit.connections import HttpConnection, JsonRpcConnection, JsonRpcMethods, Route, Secret
from hubkit.connections.auth import redact
from hubkit.entity import reflect
from hubkit.errors import HubkitError, ValidationError

from .servers import Reply, ScriptedHttpServer, Seen, http_server

TOKEN = "tok-7Hq2/x+y=z"  # characters that escape differently in each representation
PASSWORD = "pa55 w/rd&é"


@dataclass
class Item:
    id: str


ITEM = reflect(Item, "id")


@pytest.fixture
def server() -> Iterator[ScriptedHttpServer]:
    with http_server() as running:
        yield running


def representations(value: str) -> list[str]:
    return [
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        urllib.parse.quote(value),
        repr(value.encode())[2:-1],
    ]


def echoing_key_connection(server: ScriptedHttpServer, status: int) -> HttpConnection:
    """A connection sending ``TOKEN`` read with its newline to a server that quotes it back,
    escaped and percent-encoded, in an error answer."""

    def echo(seen: Seen) -> Reply:
        key = seen.headers.get("X-Key", "")
        text = f"bad key {key!r} {json.dumps(key)} ({urllib.parse.quote(key)})"
        return Reply(status, text.encode())

    server.script("/x", echo)
    return HttpConnection(
        server.url, Route("/x"), headers={"X-Key": Secret(TOKEN + "\n")}, retries=0
    )


def assert_never_shown(texts: list[str], value: str) -> None:
    for text in texts:
        for shown in representations(value):
            assert shown not in text, text


def test_a_credential_read_from_a_file_loses_its_line_end() -> None:
    assert Secret(TOKEN + "\n").reveal() == TOKEN
    assert Secret("  " + TOKEN + "\r\n").reveal() == TOKEN
    signer = BybitSigner("key\n", "secret\n", clock=lambda: 1.0)
    assert signer.headers("GET", "")["X-BAPI-API-KEY"] == "key"
    assert signer.sign(1000, "") == BybitSigner("key", "secret").sign(1000, "")


@pytest.mark.parametrize("bad", ["abc\ndef", "abc\rdef", "abc\x00def", "\n", ""])
def test_a_credential_with_a_line_break_inside_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        Secret(bad)
    assert isinstance(info.value, HubkitError)
    if bad.strip():
        assert "abc" not in str(info.value) and "def" not in str(info.value)


@pytest.mark.parametrize("form", range(len(representations(TOKEN))))
def test_every_representation_of_a_secret_is_redacted(form: int) -> None:
    shown = representations(TOKEN)[form]
    text = f"the server said: bad token {shown}!"
    cleaned = redact(text, [Secret(TOKEN)])
    assert shown not in cleaned and "********" in cleaned


@pytest.mark.anyio
async def test_a_header_secret_read_with_a_newline_never_shows(
    server: ScriptedHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = echoing_key_connection(server, 400)
    async with conn:
        with pytest.raises(HubkitError) as info:
            await conn.fetch(ITEM)
    assert server.requests and server.requests[0].headers["X-Key"] == TOKEN
    texts = [str(info.value), repr(info.value), str(getattr(info.value, "raw", ""))]
    texts += [record.getMessage() for record in caplog.records]
    assert_never_shown(texts, TOKEN)


@pytest.mark.anyio
async def test_user_info_in_a_url_never_reaches_a_log_line(
    server: ScriptedHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    server.script("/x", [Reply(body=[{"id": "1"}])])
    server.script("/rpc", [Reply(body={"jsonrpc": "2.0", "id": 1, "result": [{"id": "2"}]})])
    host = server.url.split("://", 1)[1]
    user, password = urllib.parse.quote("ada", safe=""), urllib.parse.quote(PASSWORD, safe="")
    http = HttpConnection(f"http://{user}:{password}@{host}", Route("/x"), retries=0)
    rpc = JsonRpcConnection(
        f"http://{user}:{password}@{host}/rpc", JsonRpcMethods(fetch="items"), retries=0
    )
    async with http, rpc:
        assert (await http.fetch(ITEM))["id"].to_list() == ["1"]
        assert (await rpc.fetch(ITEM))["id"].to_list() == ["2"]
        texts = [repr(http), repr(rpc)]
    for seen in server.requests:  # the credentials went as Basic auth, not lost
        assert seen.headers["Authorization"].startswith("Basic ")
    texts += [record.getMessage() for record in caplog.records]
    assert any("HTTP Request" in text for text in texts)  # httpx did log the requests
    assert_never_shown(texts, PASSWORD)


@pytest.mark.anyio
async def test_user_info_in_a_websocket_url_stays_out_of_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hubkit.bybit.protocol import BybitWsProtocol
    from hubkit.connections import WebSocketConnection
    from hubkit.errors import TransportError

    caplog.set_level(logging.DEBUG)
    password = urllib.parse.quote(PASSWORD, safe="")
    conn = WebSocketConnection(
        f"ws://ada:{password}@127.0.0.1:9/v5/public/linear", {}, protocol=BybitWsProtocol()
    )
    with pytest.raises(TransportError) as info:
        await conn.connect()
    texts = [str(info.value), repr(conn)] + [record.getMessage() for record in caplog.records]
    assert "127.0.0.1:9" in str(info.value)
    assert_never_shown(texts, PASSWORD)


def test_a_sink_shows_no_secret_in_its_status_panel_or_log(
    server: ScriptedHttpServer, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    import hubkit

    caplog.set_level(logging.DEBUG)
    conn = echoing_key_connection(server, 403)
    texts: list[str] = []
    try:
        # The first sync fails: the sink opens with a warning, whose text is checked too.
        with pytest.warns(hubkit.StaleDataWarning) as warned:
            sink = hubkit.open_sink(
                Item,
                key="id",
                store=f"{tmp_path}/s.db",
                connection=conn,
                policy=hubkit.QueryOnInit(),
            )
        texts += [str(w.message) for w in warned]
        with sink:
            with pytest.raises(HubkitError) as info:
                sink.force_sync()
            status = sink.status()
            texts += [str(info.value), str(status), repr(status), str(status.last_error)]
            texts.append(status._repr_html_())
    except HubkitError as exc:  # a sink that refuses to open without its first sync
        texts.append(str(exc))
    texts += [record.getMessage() for record in caplog.records]
    assert server.requests and any(
        TOKEN in seen.headers.get("X-Key", "") for seen in server.requests
    )
    assert_never_shown(texts, TOKEN)
