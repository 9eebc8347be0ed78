"""WebSocketConnection against a real ``websockets`` server on 127.0.0.1 speaking ByBit shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections import (
    Backoff,
    TopicDecoder,
    WebSocketConnection,
    renamed,
)
from hubkit.errors import (
    DecodeError,
    HubkitError,
    ProtocolError,
    RemoteTimeout,
    TransportError,
)
from hubkit.types import Message, Reconnected, StreamEvent

from ._spec import PRICE_SYMBOL, SYMBOL_ONLY, TRADE
from .servers import FakeBybitWs, trade

CATEGORIES = ["linear", "inverse", "spot", "option"]


class Recorder:
    def __init__(self) -> None:
        self.errors: list[HubkitError] = []
        self.waits: list[float] = []

    def on_error(self, exc: HubkitError) -> None:
        self.errors.append(exc)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def make(
    server: FakeBybitWs, rec: Recorder, decoders: dict[str, Any] | None = None, **kwargs: Any
) -> WebSocketConnection:
    options: dict[str, Any] = {
        "on_error": rec.on_error,
        "sleep": rec.sleep,
        "ack_timeout": 2.0,
        "backoff": Backoff(base=0.05, cap=0.2),
        "ping_interval": None,
        "silence_timeout": None,
    }
    options.update(kwargs)
    return WebSocketConnection(
        server.url,
        decoders if decoders is not None else {"publicTrade": TRADE},
        protocol=BybitWsProtocol(),
        **options,
    )


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition (event-driven tests; the timeout only guards against hangs)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state the server thread changes
            await asyncio.sleep(0.005)


async def take(events: AsyncIterator[StreamEvent], count: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with asyncio.timeout(5.0):
        while len(out) < count:
            out.append(await anext(events))
    return out


async def take_rows(events: AsyncIterator[StreamEvent], rows: int) -> list[StreamEvent]:
    """Events until ``rows`` trade rows arrived (coalescing may merge frames)."""
    out: list[StreamEvent] = []
    seen = 0
    async with asyncio.timeout(5.0):
        while seen < rows:
            event = await anext(events)
            out.append(event)
            if isinstance(event, Message):
                seen += event.frame.height
    return out


def trade_ids(events: list[StreamEvent]) -> list[str]:
    return [tid for e in events if isinstance(e, Message) for tid in e.frame["trade_id"].to_list()]


# -- subscribe, acks, pongs ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("category", CATEGORIES)
async def test_subscribe_and_ack_for_every_category(category: str, rec: Recorder) -> None:
    async with FakeBybitWs(category) as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])  # recorded before connecting
        await conn.connect()
        assert conn.is_connected
        await conn.subscribe(["publicTrade.ETHUSDT"])  # acked while streaming
        assert conn.topics == ("publicTrade.BTCUSDT", "publicTrade.ETHUSDT")
        assert server.subscribed[0] == {"publicTrade.BTCUSDT", "publicTrade.ETHUSDT"}
        await conn.unsubscribe(["publicTrade.BTCUSDT"])
        assert server.subscribed[0] == {"publicTrade.ETHUSDT"}
        await conn.disconnect()
        assert not conn.is_connected
    requests = [m for m in server.received[0] if m["op"] == "subscribe"]
    assert all(isinstance(m["req_id"], str) and m["req_id"] for m in requests)
    assert rec.errors == []


@pytest.mark.anyio
async def test_spot_subscriptions_are_chunked_to_ten_args(rec: Recorder) -> None:
    topics = [f"publicTrade.S{i}USDT" for i in range(23)]
    async with FakeBybitWs("spot") as server:
        conn = make(server, rec)
        await conn.connect()
        await conn.subscribe(topics)
        await conn.disconnect()
    sizes = [len(m["args"]) for m in server.received[0] if m["op"] == "subscribe"]
    assert sizes == [10, 10, 3]
    assert server.subscribed[0] == set(topics)


@pytest.mark.anyio
@pytest.mark.parametrize("category", ["linear", "spot", "option"])
async def test_a_refused_topic_raises_naming_it(category: str, rec: Recorder) -> None:
    async with FakeBybitWs(category) as server:
        server.bad_topics.add("publicTrade.NOPE")
        conn = make(server, rec)
        await conn.connect()
        with pytest.raises(ProtocolError, match=r"publicTrade\.NOPE"):
            await conn.subscribe(["publicTrade.NOPE"])
        assert "publicTrade.NOPE" not in conn.topics  # forgotten
        await conn.subscribe(["publicTrade.BTCUSDT"])  # the stream is fine
        assert conn.is_connected
        await conn.disconnect()


@pytest.mark.anyio
async def test_connect_fails_cleanly_when_a_recorded_topic_is_refused(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        server.bad_topics.add("publicTrade.NOPE")
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT", "publicTrade.NOPE"])
        with pytest.raises(ProtocolError, match=r"publicTrade\.NOPE"):
            await conn.connect()
        assert not conn.is_connected
        await conn.connect()  # the refused topic is gone; the rest subscribes
        assert conn.topics == ("publicTrade.BTCUSDT",)
        await conn.disconnect()


@pytest.mark.anyio
async def test_no_ack_is_a_remote_timeout(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, ack_timeout=0.2)
        await conn.connect()
        server.silent = True
        with pytest.raises(RemoteTimeout):
            await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.disconnect()


@pytest.mark.anyio
@pytest.mark.parametrize("category", CATEGORIES)
async def test_json_pings_and_every_pong_shape(category: str, rec: Recorder) -> None:
    async with FakeBybitWs(category) as server:
        conn = make(server, rec, ping_interval=0.02)
        await conn.connect()
        await until(lambda: conn.pongs >= 2)
        await conn.disconnect()
    pings = [m for m in server.received[0] if m["op"] == "ping"]
    assert len(pings) >= 2 and all(m["req_id"] for m in pings)
    assert conn.last_pong_at is not None


# -- data ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_trades_decode_into_messages(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        await server.publish("publicTrade.BTCUSDT", [trade(1), trade(2)])
        (message,) = await take(events, 1)
        await conn.disconnect()
    assert isinstance(message, Message)
    assert message.topic == "publicTrade.BTCUSDT" and message.kind == "snapshot"
    assert message.frame["trade_id"].to_list() == ["t-1", "t-2"]
    assert message.frame["price"].to_list() == [16578.5, 16578.5]
    assert message.received_at > 0


@pytest.mark.anyio
async def test_decoders_match_the_longest_topic_prefix(rec: Recorder) -> None:
    decoders = {"publicTrade": TRADE, "publicTrade.ETHUSDT": (SYMBOL_ONLY, renamed({}))}
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, decoders)
        await conn.subscribe(["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"])
        await conn.connect()
        events = conn.messages()
        await server.publish("publicTrade.ETHUSDT", [trade(1)])
        (message,) = await take(events, 1)
        await conn.disconnect()
    assert isinstance(message, Message) and message.frame.columns == ["symbol"]


@pytest.mark.anyio
async def test_extractor_renames_keys(rec: Recorder) -> None:
    decoders = {"publicTrade": TopicDecoder(PRICE_SYMBOL, renamed({"p": "price", "s": "symbol"}))}
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, decoders)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        await server.publish("publicTrade.BTCUSDT", [trade(1, price="1.25")])
        (message,) = await take(events, 1)
        await conn.disconnect()
    assert isinstance(message, Message) and message.frame.row(0) == (1.25, "BTCUSDT")


@pytest.mark.anyio
async def test_malformed_frames_are_reported_and_skipped(rec: Recorder) -> None:
    bad_row = {**trade(3)}
    del bad_row["p"]
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        await server.publish("publicTrade.BTCUSDT", [trade(1)])
        await server.send_raw('{"topic": "publicTrade.BTCUSDT", "data": [')  # not JSON
        await server.send_raw('{"topic": 7, "data": []}')  # wrong type
        await server.send_raw('{"topic": "publicTrade.BTCUSDT", "type": "snapshot"}')  # no data
        await server.send_raw('{"topic": "publicTrade.BTCUSDT", "data": 5}')  # data not a list
        # One bad row spoils its frame: nothing of it is delivered.
        await server.publish("publicTrade.BTCUSDT", [trade(2), bad_row])
        await server.publish("publicTrade.BTCUSDT", [{**trade(4), "T": "late"}])
        await server.send_raw('{"topic": "tickers.BTCUSDT", "data": {}}')  # no decoder
        await server.send_raw('{"topic": "tickers.BTCUSDT", "data": {}}')  # reported once
        await server.send_raw("{}")
        await server.publish("publicTrade.BTCUSDT", [trade(5)])
        got = await take_rows(events, 2)
        await until(lambda: len(rec.errors) >= 8)
        assert conn.is_connected  # the stream went on
        await conn.disconnect()
    assert trade_ids(got) == ["t-1", "t-5"]
    assert all(isinstance(error, DecodeError) for error in rec.errors)
    # Envelope problems are reported as frames arrive, row problems as they are decoded.
    fields = [error.field for error in rec.errors]  # type: ignore[attr-defined]
    assert sorted(fields, key=str) == sorted(
        [None, "topic", "data", "data", "p", "T", "topic", "topic"], key=str
    )
    row_error = next(e for e in rec.errors if e.field == "p")  # type: ignore[attr-defined]
    assert "publicTrade.BTCUSDT" in str(row_error)  # names the topic too
    assert conn.decode_errors == 8


@pytest.mark.anyio
async def test_coalescing_keeps_order_and_every_row(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"])
        await conn.connect()
        for i in range(30):
            symbol = "BTCUSDT" if i % 3 else "ETHUSDT"
            await server.publish(f"publicTrade.{symbol}", [trade(i, symbol)])
        await until(lambda: conn.buffered == 30)
        got = await take_rows(conn.messages(), 30)
        await conn.disconnect()
    assert len(got) < 30  # frames already waiting were merged
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [
            tid
            for e in got
            if isinstance(e, Message) and e.topic == f"publicTrade.{symbol}"
            for tid in e.frame["trade_id"].to_list()
        ]
        expected = [f"t-{i}" for i in range(30) if (symbol == "BTCUSDT") == bool(i % 3)]
        assert ids == expected


@pytest.mark.anyio
async def test_a_snapshot_after_deltas_starts_a_new_message(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        for i, kind in enumerate(["snapshot", "delta", "delta", "snapshot", "delta"]):
            await server.publish("publicTrade.BTCUSDT", [trade(i)], kind)
        await until(lambda: conn.buffered == 5)
        got = await take_rows(conn.messages(), 5)
        await conn.disconnect()
    kinds = [(e.kind, e.frame.height) for e in got if isinstance(e, Message)]
    assert kinds == [("snapshot", 1), ("delta", 2), ("snapshot", 1), ("delta", 1)]


@pytest.mark.anyio
async def test_backpressure_holds_frames_without_loss(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, max_buffer=3, batch=1, ping_interval=0.01, silence_timeout=0.05)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        for i in range(200):
            await server.publish("publicTrade.BTCUSDT", [trade(i)])
        await until(lambda: conn.buffered == 3)
        # Let many silence periods pass while nobody drains the queue (pings keep going out).
        pings = len(server.received[0])
        await until(lambda: len(server.received[0]) >= pings + 20)
        assert conn.buffered == 3  # bounded: the reader waits instead of buffering more
        got = await take_rows(conn.messages(), 200)
        assert conn.reconnects == 0  # waiting on a full queue is not silence
        await conn.disconnect()
    assert trade_ids(got) == [f"t-{i}" for i in range(200)]


# -- reconnects ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_dropped_connection_reconnects_and_resubscribes(rec: Recorder) -> None:
    topics = ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"]
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(topics)
        await conn.connect()
        events = conn.messages()
        await server.publish("publicTrade.BTCUSDT", [trade(1)])
        assert trade_ids(await take(events, 1)) == ["t-1"]
        before = datetime.now(UTC)
        await server.drop()
        (event,) = await take(events, 1)
        assert isinstance(event, Reconnected)
        # down since the last frame before the drop
        assert event.attempt == 1 and before - timedelta(seconds=5) < event.down_since <= before
        assert server.connections == 2 and server.subscribed[1] == set(topics)
        assert conn.reconnects == 1 and len(rec.waits) == 1 and 0 <= rec.waits[0] <= 0.05
        await server.publish("publicTrade.ETHUSDT", [trade(2, "ETHUSDT")])
        assert trade_ids(await take(events, 1)) == ["t-2"]
        await conn.disconnect()


@pytest.mark.anyio
async def test_topics_added_while_down_are_subscribed_on_reconnect(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        server.silent = True  # the next subscribe gets no ack ...
        subscribing = asyncio.create_task(conn.subscribe(["publicTrade.SOLUSDT"]))
        await until(lambda: len(server.received[0]) == 2)
        server.silent = False
        await server.drop()  # ... and the connection dies under it
        with pytest.raises(TransportError):
            await subscribing
        (event,) = await take(events, 1)
        assert isinstance(event, Reconnected)
        assert server.subscribed[1] == {"publicTrade.BTCUSDT", "publicTrade.SOLUSDT"}
        await conn.disconnect()


@pytest.mark.anyio
async def test_silence_triggers_a_reconnect(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, ping_interval=0.02, silence_timeout=0.15)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        server.muted.add(0)  # no pongs, no data: a dead connection that stays open
        muted_at = datetime.now(UTC)
        (event,) = await take(events, 1)
        assert isinstance(event, Reconnected)
        assert event.down_since <= muted_at  # from the last sign of life, not from detection
        assert server.connections == 2
        await conn.disconnect()


@pytest.mark.anyio
async def test_manual_reconnect_yields_reconnected(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        await conn.reconnect()
        (event,) = await take(events, 1)
        assert isinstance(event, Reconnected) and server.connections == 2
        await conn.disconnect()


@pytest.mark.anyio
async def test_giving_up_raises_from_messages(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec, max_reconnects=3)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        events = conn.messages()
        await server.stop_accepting()
        with pytest.raises(TransportError, match="gave up after 3"):
            await take(events, 1)
        assert not conn.is_connected
        assert len(rec.waits) == 3
        assert sum(isinstance(e, TransportError) for e in rec.errors) >= 3
        await conn.disconnect()


@pytest.mark.anyio
async def test_connect_to_nothing_is_a_transport_error(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        url = server.url
    conn = WebSocketConnection(url, {"publicTrade": TRADE}, protocol=BybitWsProtocol())
    with pytest.raises(TransportError):
        await conn.connect()


@pytest.mark.anyio
async def test_disconnect_ends_messages_after_the_buffer(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        await conn.subscribe(["publicTrade.BTCUSDT"])
        await conn.connect()
        await server.publish("publicTrade.BTCUSDT", [trade(1)])
        await until(lambda: conn.buffered == 1)
        await conn.disconnect()
        got = [event async for event in conn.messages()]
    assert trade_ids(got) == ["t-1"]


@pytest.mark.anyio
async def test_verbs_need_a_rest_connection(rec: Recorder) -> None:
    async with FakeBybitWs("linear") as server:
        conn = make(server, rec)
        with pytest.raises(ProtocolError, match="no REST"):
            await conn.fetch(TRADE)  # type: ignore[arg-type]


def test_topics_must_be_a_list() -> None:
    conn = WebSocketConnection("ws://127.0.0.1:1", {}, protocol=BybitWsProtocol())
    with pytest.raises(TypeError):
        asyncio.run(conn.subscribe("publicTrade.BTCUSDT"))
    assert "ws://127.0.0.1:1" in repr(conn)
