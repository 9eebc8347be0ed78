"""HttpConnection against a real HTTP server on 127.0.0.1 (no sleeping: waits are recorded)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from hubkit.bybit.envelope import BYBIT_RATE_LIMIT_HEADERS, bybit_route
from hubkit.bybit.signer import BybitSigner
from hubkit.connections import (
    Backoff,
    Cursor,
    HttpConnection,
    RateLimitInfo,
    RetryPolicy,
    Route,
    Secret,
    TokenBucket,
    Verb,
    array_row,
)
from hubkit.errors import (
    BridgeError,
    DecodeError,
    HubkitError,
    ProtocolError,
    RateLimited,
    Rejected,
    RemoteTimeout,
    SchemaError,
    TransportError,
)

from ._spec import INSTRUMENT, KLINE, TRADE, Instrument
from .servers import Reply, ScriptedHttpServer, Seen, bybit_error, bybit_ok, http_server

INSTRUMENTS = "/v5/market/instruments-info"
KLINES = "/v5/market/kline"
NOW = 1_700_000_000.0


class Waits:
    """The injected sleep and clock: records every wait, never sleeps."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def policy(self, retries: int = 3, **kwargs: float) -> RetryPolicy:
        return RetryPolicy(
            retries=retries,
            backoff=Backoff(base=0.1, cap=2.0),
            sleep=self.sleep,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def server() -> Iterator[ScriptedHttpServer]:
    with http_server() as running:
        yield running


@pytest.fixture
def waits() -> Waits:
    return Waits()


def instrument(symbol: str, tick: str = "0.10") -> dict[str, object]:
    return {"symbol": symbol, "status": "Trading", "priceFilter": {"tickSize": tick}}


def routes() -> dict[type | str, Route]:
    return {
        Instrument: bybit_route(INSTRUMENTS, {"category": "linear"}),
        "kline": bybit_route(
            KLINES,
            {"category": "linear"},
            paginated=False,
            row_mapper=array_row("startTime", "open", "high", "low", "close", "volume", "turnover"),
        ),
    }


# -- reading ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fetch_follows_every_page_into_one_frame(server: ScriptedHttpServer) -> None:
    server.script(
        INSTRUMENTS,
        [
            Reply(body=bybit_ok([instrument("A"), instrument("B")], cursor="first%3DB")),
            Reply(body=bybit_ok([instrument("C")], cursor="first%3DC")),
            Reply(body=bybit_ok([instrument("D", "0.5")], cursor="")),
        ],
    )
    async with HttpConnection(server.url, routes()) as conn:
        frame = await conn.fetch(INSTRUMENT, {"status": "Trading", "limit": 2})
        assert conn.requests_made == 3
    assert frame["symbol"].to_list() == ["A", "B", "C", "D"]
    assert frame["tick_size"].to_list() == [0.1, 0.1, 0.1, 0.5]
    first, second, third = server.requests
    assert first.query == {"category": "linear", "limit": "2", "status": "Trading"}
    assert "cursor" not in first.query
    assert second.query["cursor"] == "first%3DB"  # passed back exactly as received
    assert third.query["cursor"] == "first%3DC"
    assert first.raw_query == "category=linear&limit=2&status=Trading"  # sorted by key
    # keep-alive: one TCP connection for all pages
    assert len({seen.client_port for seen in server.requests}) == 1


@pytest.mark.anyio
async def test_pages_yield_each_page_with_its_cursor(server: ScriptedHttpServer) -> None:
    server.script(
        INSTRUMENTS,
        [
            Reply(body=bybit_ok([instrument("A")], cursor="c1")),
            Reply(body=bybit_ok([instrument("B")])),  # no cursor key at all: last page
        ],
    )
    async with HttpConnection(server.url, routes()) as conn:
        pages = [page async for page in conn.pages(INSTRUMENT)]
    assert [(p.frame["symbol"].to_list(), p.next_cursor) for p in pages] == [
        (["A"], "c1"),
        (["B"], None),
    ]


@pytest.mark.anyio
async def test_a_cursor_that_does_not_advance_is_an_error(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([instrument("A")], cursor="same"))])
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(ProtocolError, match="did not advance"):
            await conn.fetch(INSTRUMENT)


@pytest.mark.anyio
async def test_kline_arrays_are_mapped_to_objects(server: ScriptedHttpServer) -> None:
    rows = [
        ["1670608800000", "17071", "17073", "17027", "17055.5", "268611", "15.74462667"],
        ["1670605200000", "17071.5", "17071.5", "17061", "17071", "4177", "0.24469757"],
    ]
    server.script(KLINES, [Reply(body=bybit_ok(rows))])
    async with HttpConnection(server.url, routes()) as conn:
        frame = await conn.fetch(KLINE, {"symbol": "BTCUSD", "interval": "60"})
    assert frame["start"].to_list() == [1670608800000, 1670605200000]
    assert frame["close"].to_list() == [17055.5, 17071.0]


@pytest.mark.anyio
async def test_a_short_kline_array_is_a_decode_error(server: ScriptedHttpServer) -> None:
    server.script(KLINES, [Reply(body=bybit_ok([["1670608800000", "17071"]]))])
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(DecodeError) as caught:
            await conn.fetch(KLINE)
    assert caught.value.field == "startTime"


@pytest.mark.anyio
async def test_rows_that_do_not_decode_name_the_field(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([{"symbol": "A", "status": "Trading"}]))])
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(DecodeError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.field == "priceFilter.tickSize"


@pytest.mark.anyio
async def test_a_body_that_is_not_json_is_a_decode_error(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=b"<html>oops</html>")])
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(DecodeError, match="not JSON"):
            await conn.fetch(INSTRUMENT)


@pytest.mark.anyio
async def test_missing_list_is_a_decode_error_naming_the_path(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body={"retCode": 0, "retMsg": "OK", "result": {}})])
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(DecodeError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.field == "result.list"


@pytest.mark.anyio
async def test_route_lookup(server: ScriptedHttpServer) -> None:
    conn = HttpConnection(server.url, routes())
    assert conn.route_for(INSTRUMENT).path == INSTRUMENTS
    assert conn.route_for(KLINE).path == KLINES  # by table name
    with pytest.raises(SchemaError):
        conn.route_for(TRADE)
    single = HttpConnection(server.url, Route("/x"))
    assert single.route_for(TRADE).path == "/x"


@pytest.mark.anyio
async def test_plain_json_route_without_envelope(server: ScriptedHttpServer) -> None:
    server.script(
        "/items",
        [
            Reply(body={"data": [instrument("A")], "next": "2"}),
            Reply(body={"data": [instrument("B")], "next": None}),
        ],
    )
    route = Route("/items", items="data", cursor=Cursor("next", "page"))
    async with HttpConnection(server.url, route) as conn:
        frame = await conn.fetch(INSTRUMENT)
    assert frame["symbol"].to_list() == ["A", "B"]
    assert server.requests[1].query == {"page": "2"}


@pytest.mark.anyio
async def test_a_post_route_sends_parameters_as_json(server: ScriptedHttpServer) -> None:
    server.script(
        "/search",
        [
            Reply(body={"rows": [instrument("A")], "next": "p2"}),
            Reply(body={"rows": [instrument("B")], "next": ""}),
        ],
    )
    route = Route("/search", {"kind": "all"}, items="rows", cursor=Cursor("next"), method="POST")
    async with HttpConnection(server.url, route) as conn:
        frame = await conn.fetch(INSTRUMENT, {"limit": 5})
    assert frame["symbol"].to_list() == ["A", "B"]
    assert [seen.json() for seen in server.requests] == [
        {"kind": "all", "limit": 5},
        {"kind": "all", "limit": 5, "cursor": "p2"},
    ]
    assert all(seen.method == "POST" and not seen.query for seen in server.requests)


@pytest.mark.anyio
async def test_redirects_are_not_followed(server: ScriptedHttpServer) -> None:
    server.script(
        INSTRUMENTS, [Reply(301, headers={"Location": "https://u:pw@new.example.com/v5"})]
    )
    async with HttpConnection(server.url, routes(), auth=BybitSigner("k", "s")) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
    assert caught.value.status == 301 and not caught.value.temporary
    assert "new.example.com" in str(caught.value) and "pw" not in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_a_broken_envelope_rule_is_still_a_hubkit_error(server: ScriptedHttpServer) -> None:
    def rule(reply: object) -> None:
        raise KeyError("retCode")

    server.script("/x", [Reply(body={"rows": []})])
    async with HttpConnection(server.url, Route("/x", items="rows", envelope=rule)) as conn:
        with pytest.raises(DecodeError, match="envelope rule failed"):
            await conn.fetch(INSTRUMENT)


def test_a_connection_belongs_to_the_loop_that_opened_it(server: ScriptedHttpServer) -> None:
    conn = HttpConnection(server.url, routes())
    asyncio.run(conn.connect())

    async def elsewhere() -> None:
        with pytest.raises(BridgeError):
            await conn.fetch(INSTRUMENT)
        await conn.disconnect()
        await conn.connect()  # reopened on this loop: fine
        server.script(INSTRUMENTS, [Reply(body=bybit_ok([instrument("A")]))])
        await conn.fetch(INSTRUMENT)
        await conn.disconnect()

    asyncio.run(elsewhere())


# -- retries and rate limits --------------------------------------------------------------


@pytest.mark.anyio
async def test_5xx_burst_is_retried_with_backoff(server: ScriptedHttpServer, waits: Waits) -> None:
    server.script(
        INSTRUMENTS,
        [Reply(503, b"busy"), Reply(502), Reply(500), Reply(body=bybit_ok([instrument("A")]))],
    )
    async with HttpConnection(server.url, routes(), retries=waits.policy(retries=3)) as conn:
        frame = await conn.fetch(INSTRUMENT)
        assert conn.requests_made == 4
    assert frame.height == 1
    assert len(waits.sleeps) == 3
    # full jitter under an exponential ceiling: 0.1, 0.2, 0.4
    for attempt, wait in enumerate(waits.sleeps):
        assert 0.0 <= wait <= 0.1 * 2**attempt


@pytest.mark.anyio
async def test_5xx_that_persists_raises_after_the_retries(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(INSTRUMENTS, [Reply(503, b"down")])
    async with HttpConnection(server.url, routes(), retries=waits.policy(retries=2)) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
        assert conn.requests_made == 3
    assert caught.value.status == 503 and caught.value.temporary
    assert len(waits.sleeps) == 2


@pytest.mark.anyio
async def test_429_honours_retry_after(server: ScriptedHttpServer, waits: Waits) -> None:
    server.script(
        INSTRUMENTS,
        [
            Reply(429, b"System level frequency protection", {"Retry-After": "2"}),
            Reply(body=bybit_ok([instrument("A")])),
        ],
    )
    async with HttpConnection(server.url, routes(), retries=waits.policy()) as conn:
        await conn.fetch(INSTRUMENT)
    assert waits.sleeps == [2.0]


@pytest.mark.anyio
async def test_429_without_retry_after_waits_the_default(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(INSTRUMENTS, [Reply(429), Reply(body=bybit_ok([instrument("A")]))])
    async with HttpConnection(server.url, routes(), retries=waits.policy()) as conn:
        await conn.fetch(INSTRUMENT)
    assert waits.sleeps == [1.0]


@pytest.mark.anyio
async def test_10006_waits_until_the_reset_timestamp(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    reset_ms = int(NOW * 1000) + 1500
    limit_headers = {
        "X-Bapi-Limit": "10",
        "X-Bapi-Limit-Status": "0",
        "X-Bapi-Limit-Reset-Timestamp": str(reset_ms),
    }
    server.script(
        INSTRUMENTS,
        [
            Reply(200, bybit_error(10006, "Too many visits!"), limit_headers),
            Reply(
                body=bybit_ok([instrument("A")]),
                headers={**limit_headers, "X-Bapi-Limit-Status": "9"},
            ),
        ],
    )
    async with HttpConnection(
        server.url,
        routes(),
        retries=waits.policy(),
        rate_limit_headers=BYBIT_RATE_LIMIT_HEADERS,
    ) as conn:
        await conn.fetch(INSTRUMENT)
        assert conn.last_rate_limit == RateLimitInfo(10, 9, reset_ms / 1000)
    assert waits.sleeps == [pytest.approx(1.5)]


@pytest.mark.anyio
async def test_403_ip_limit_raises_rate_limited_with_a_long_wait(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(INSTRUMENTS, [Reply(403, b"access too frequent")])
    async with HttpConnection(server.url, routes(), retries=waits.policy()) as conn:
        with pytest.raises(RateLimited) as caught:
            await conn.fetch(INSTRUMENT)
        assert conn.requests_made == 1  # 600 s is over max_wait: not retried, not slept
    assert caught.value.status == 403 and caught.value.retry_after == 600.0
    assert waits.sleeps == []


@pytest.mark.anyio
async def test_a_wait_under_max_wait_is_taken_even_for_403(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(INSTRUMENTS, [Reply(403), Reply(body=bybit_ok([instrument("A")]))])
    policy = waits.policy(ip_ban_wait=5.0)
    async with HttpConnection(server.url, routes(), retries=policy) as conn:
        await conn.fetch(INSTRUMENT)
    assert waits.sleeps == [5.0]


@pytest.mark.anyio
async def test_envelope_error_is_a_protocol_error_with_its_code(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(INSTRUMENTS, [Reply(200, bybit_error(10001, "params error: symbol invalid"))])
    async with HttpConnection(server.url, routes(), retries=waits.policy()) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT, {"symbol": "NOPE"})
        assert conn.requests_made == 1
    assert caught.value.code == 10001 and not caught.value.temporary
    assert "symbol invalid" in str(caught.value)
    assert waits.sleeps == []


@pytest.mark.anyio
async def test_temporary_envelope_codes_are_retried(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script(
        INSTRUMENTS,
        [Reply(200, bybit_error(10016, "server error")), Reply(body=bybit_ok([instrument("A")]))],
    )
    async with HttpConnection(server.url, routes(), retries=waits.policy()) as conn:
        await conn.fetch(INSTRUMENT)
    assert len(waits.sleeps) == 1


@pytest.mark.anyio
async def test_connect_errors_are_retried_then_translated(waits: Waits) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpConnection(
        f"http://127.0.0.1:{port}", routes(), retries=waits.policy(retries=2)
    ) as conn:
        with pytest.raises(TransportError) as caught:
            await conn.fetch(INSTRUMENT)
    assert "could not connect" in str(caught.value)
    assert caught.value.__cause__ is not None  # the httpx error, chained
    assert not isinstance(caught.value, RemoteTimeout)
    assert len(waits.sleeps) == 2


@pytest.mark.anyio
async def test_a_slow_answer_is_a_remote_timeout(server: ScriptedHttpServer) -> None:
    release = threading.Event()
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([]), hold=release)])
    try:
        async with HttpConnection(server.url, routes(), timeout=0.05, retries=0) as conn:
            with pytest.raises(RemoteTimeout):
                await conn.fetch(INSTRUMENT)
    finally:
        release.set()


@pytest.mark.anyio
async def test_client_side_rate_limit_spaces_requests(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([instrument("A")]))])
    waits = Waits()
    bucket = TokenBucket(4.0, burst=1, clock=waits.clock, sleep=waits.sleep)
    async with HttpConnection(server.url, routes(), rate_limit=bucket) as conn:
        for _ in range(3):
            await conn.fetch(INSTRUMENT)
    assert waits.sleeps == pytest.approx([0.25, 0.25])


# -- writes -------------------------------------------------------------------------------


def write_routes() -> Route:
    return Route(
        "/items",
        envelope=None,
        create=Verb("POST", "/items", result="item"),
        update=Verb("PUT", "/items/{symbol}", result="item"),
        remove=Verb("DELETE", "/items/{symbol}"),
    )


@pytest.mark.anyio
async def test_create_update_remove(server: ScriptedHttpServer) -> None:
    def echo(seen: Seen) -> Reply:
        if seen.method == "DELETE":
            return Reply(204)
        return Reply(200, {"item": seen.json()})

    server.script("/items", echo)
    server.script("/items/BTC%2FUSDT", echo)
    row = {"symbol": "BTC/USDT", "status": "Trading", "tick_size": 0.5}
    async with HttpConnection(server.url, write_routes()) as conn:
        created = await conn.create(INSTRUMENT, row)
        updated = await conn.update(INSTRUMENT, {**row, "status": "Closed"})
        assert await conn.remove(INSTRUMENT, {"symbol": "BTC/USDT"}) is None
    assert created == row
    assert updated == {**row, "status": "Closed"}
    post, put, delete = server.requests
    assert (post.method, post.path) == ("POST", "/items")
    assert post.json() == {
        "symbol": "BTC/USDT",
        "status": "Trading",
        "priceFilter": {"tickSize": 0.5},
    }
    assert post.headers["Content-Type"] == "application/json"
    assert (put.method, put.path) == ("PUT", "/items/BTC%2FUSDT")
    assert (delete.method, delete.query) == ("DELETE", {"symbol": "BTC/USDT"})


@pytest.mark.anyio
async def test_a_refused_write_is_rejected(server: ScriptedHttpServer, waits: Waits) -> None:
    server.script("/items", [Reply(422, {"error": "tick size must be positive"})])
    async with HttpConnection(server.url, write_routes(), retries=waits.policy()) as conn:
        with pytest.raises(Rejected) as caught:
            await conn.create(INSTRUMENT, {"symbol": "A", "status": "x", "tick_size": -1.0})
    assert caught.value.status == 422 and not caught.value.temporary
    assert "tick size must be positive" in str(caught.value)


@pytest.mark.anyio
async def test_a_bybit_business_error_on_a_write_is_rejected(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    route = bybit_route("/v5/items", create=Verb("POST", "/v5/order/create"))
    server.script("/v5/order/create", [Reply(200, bybit_error(10001, "params error"))])
    async with HttpConnection(server.url, route, retries=waits.policy()) as conn:
        with pytest.raises(Rejected) as caught:
            await conn.create(INSTRUMENT, {"symbol": "A", "status": "x", "tick_size": 1.0})
    assert caught.value.code == 10001


@pytest.mark.anyio
async def test_post_is_not_retried_after_a_5xx_but_put_is(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script("/items", [Reply(503), Reply(200, {"item": None})])
    server.script("/items/A", [Reply(503), Reply(200, {"item": None})])
    row = {"symbol": "A", "status": "x", "tick_size": 1.0}
    async with HttpConnection(server.url, write_routes(), retries=waits.policy()) as conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.create(INSTRUMENT, row)  # the server may have applied it
        assert caught.value.temporary and not isinstance(caught.value, Rejected)
        assert conn.requests_made == 1
        await conn.update(INSTRUMENT, row)  # PUT is idempotent: retried
        assert conn.requests_made == 3


@pytest.mark.anyio
async def test_post_is_retried_when_it_surely_did_not_arrive(
    server: ScriptedHttpServer, waits: Waits
) -> None:
    server.script("/items", [Reply(429, headers={"Retry-After": "1"}), Reply(200, {"item": None})])
    async with HttpConnection(server.url, write_routes(), retries=waits.policy()) as conn:
        await conn.create(INSTRUMENT, {"symbol": "A", "status": "x", "tick_size": 1.0})
    assert waits.sleeps == [1.0]


@pytest.mark.anyio
async def test_missing_verb_is_a_schema_error(server: ScriptedHttpServer) -> None:
    async with HttpConnection(server.url, routes()) as conn:
        with pytest.raises(SchemaError, match="create"):
            await conn.create(INSTRUMENT, {"symbol": "A", "status": "x", "tick_size": 1.0})


# -- auth and secrets ---------------------------------------------------------------------

API_KEY = "ak-2f9c1e77d0"
API_SECRET = "sk-9d8e7f6a5b4c3d2e1f"
TOKEN = "tok-0a1b2c3d4e"


@pytest.mark.anyio
async def test_signed_requests_verify_on_the_server(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([instrument("A")]))])
    signer = BybitSigner(API_KEY, API_SECRET)
    async with HttpConnection(server.url, routes(), auth=signer) as conn:
        await conn.fetch(INSTRUMENT, {"symbol": "A"})
    seen = server.requests[0]
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["x-bapi-api-key"] == API_KEY
    timestamp = int(headers["x-bapi-timestamp"])
    assert headers["x-bapi-sign"] == signer.sign(timestamp, seen.raw_query)


@pytest.mark.anyio
async def test_secrets_never_show(
    server: ScriptedHttpServer, waits: Waits, caplog: pytest.LogCaptureFixture
) -> None:
    def echo_key(seen: Seen) -> Reply:
        headers = {name.lower(): value for name, value in seen.headers.items()}
        # A hostile or careless server quoting the credentials back.
        message = f"invalid key {headers['x-bapi-api-key']} token {headers['authorization']}"
        return Reply(200, bybit_error(10003, message))

    server.script(INSTRUMENTS, echo_key)
    conn = HttpConnection(
        server.url,
        routes(),
        auth=BybitSigner(API_KEY, Secret(API_SECRET)),
        headers={"Authorization": Secret(TOKEN)},
        retries=waits.policy(),
    )
    caplog.set_level(logging.DEBUG)
    errors: list[HubkitError] = []
    async with conn:
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
        errors.append(caught.value)
        server.script(INSTRUMENTS, [Reply(503, f"overloaded {API_KEY} {TOKEN}".encode())])
        with pytest.raises(ProtocolError) as caught:
            await conn.fetch(INSTRUMENT)
        errors.append(caught.value)
        texts = [repr(conn), str(conn)]
    assert server.requests[0].headers["Authorization"] == TOKEN  # it did go on the wire
    texts += [str(error) for error in errors] + [repr(error) for error in errors]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    assert caplog.records  # retries were logged
    for text in texts:
        for secret in (API_KEY, API_SECRET, TOKEN):
            assert secret not in text, text


@pytest.mark.anyio
async def test_repr_names_the_host_not_credentials() -> None:
    conn = HttpConnection("https://user:pw@api.example.com/base?key=zzz", Route("/x"))
    assert "pw" not in repr(conn) and "zzz" not in repr(conn)
    assert "api.example.com" in repr(conn)


@pytest.mark.anyio
async def test_reconnect_after_disconnect(server: ScriptedHttpServer) -> None:
    server.script(INSTRUMENTS, [Reply(body=bybit_ok([instrument("A")]))])
    conn = HttpConnection(server.url, routes())
    assert not conn.is_connected
    await conn.fetch(INSTRUMENT)  # opens lazily
    assert conn.is_connected
    await conn.disconnect()
    assert not conn.is_connected
    await conn.connect()
    await conn.fetch(INSTRUMENT)
    await conn.disconnect()
    assert conn.requests_made == 2
