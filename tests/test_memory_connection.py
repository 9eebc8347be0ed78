"""InMemoryConnection: the in-memory remote used to test sinks without a network."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pytest

from hubkit.entity import EntitySpec, reflect
from hubkit.errors import ProtocolError, Rejected, TransportError
from hubkit.testing.memory import InMemoryConnection
from hubkit.types import Connection, Message, Reconnected, StreamEvent, StreamingConnection


@dataclass
class Trade:
    trade_id: str
    price: float
    time: datetime


SPEC: EntitySpec = reflect(Trade, "trade_id")


def _trade(n: int) -> dict[str, object]:
    return {
        "trade_id": f"t{n}",
        "price": float(n),
        "time": datetime(2024, 1, 1, 0, 0, n, tzinfo=UTC),
    }


def test_it_is_a_streaming_connection() -> None:
    conn = InMemoryConnection()
    assert isinstance(conn, Connection)
    assert isinstance(conn, StreamingConnection)


def test_fetch_filters_and_limits() -> None:
    async def main() -> None:
        conn = InMemoryConnection([_trade(n) for n in range(1, 6)], key="trade_id")
        with pytest.raises(TransportError):
            await conn.fetch(SPEC)  # not connected
        await conn.connect()
        everything = await conn.fetch(SPEC)
        assert everything.schema == SPEC.schema
        assert everything["trade_id"].to_list() == ["t1", "t2", "t3", "t4", "t5"]
        newest = await conn.fetch(SPEC, {"limit": 2})
        assert newest["trade_id"].to_list() == ["t4", "t5"]
        since = await conn.fetch(SPEC, {"price>=": 3.0, "price<": 5.0})
        assert since["trade_id"].to_list() == ["t3", "t4"]
        assert (await conn.fetch(SPEC, {"trade_id": "t2"})).height == 1
        with pytest.raises(ProtocolError):
            await conn.fetch(SPEC, {"nope": 1})
        assert conn.count("fetch") == 6

    asyncio.run(main())


def test_writes_are_recorded_and_echoed() -> None:
    async def main() -> None:
        conn = InMemoryConnection()
        await conn.connect()
        echo = await conn.create(SPEC, _trade(1))
        assert echo == _trade(1)
        await conn.update(SPEC, {**_trade(1), "price": 9.0})
        await conn.remove(SPEC, {"trade_id": "t1"})
        assert conn.calls == [("create", ("t1",)), ("update", ("t1",)), ("remove", ("t1",))]
        assert conn.pushes("t1") == 3
        assert conn.rows == {}
        quiet = InMemoryConnection(echo=False)
        await quiet.connect()
        assert await quiet.create(SPEC, _trade(2)) is None

    asyncio.run(main())


def test_injected_failures() -> None:
    async def main() -> None:
        conn = InMemoryConnection()
        await conn.connect()
        conn.fail_next(2, ops=("create",))
        for _ in range(2):
            with pytest.raises(TransportError) as caught:
                await conn.create(SPEC, _trade(1))
            assert caught.value.temporary
        await conn.create(SPEC, _trade(1))
        assert conn.count("create") == 3 and conn.pushes("t1") == 1
        conn.reject_key("t2", "closed market")
        with pytest.raises(Rejected, match="closed market") as refused:
            await conn.update(SPEC, _trade(2))
        assert not refused.value.temporary
        conn.fail_next(1, error=lambda: ProtocolError("teapot", status=418))
        with pytest.raises(ProtocolError, match="teapot"):
            await conn.fetch(SPEC)
        conn.clear_faults()
        await conn.update(SPEC, _trade(2))
        conn.fail_connect()
        await conn.disconnect()
        with pytest.raises(TransportError):
            await conn.connect()
        await conn.connect()
        assert conn.connects == 2 and conn.disconnects == 1
        with pytest.raises(ValueError):
            conn.fail_next(ops=("explode",))

    asyncio.run(main())


def test_stream_delivery_drop_and_disconnect() -> None:
    async def main() -> list[StreamEvent]:
        conn = InMemoryConnection(key="trade_id")
        await conn.connect()
        await conn.subscribe(["trades"])
        assert conn.subscriptions == {"trades"}
        conn.push_stream("trades", [_trade(1)])
        conn.push_stream("other", [_trade(2)])  # not subscribed: stored, not delivered
        conn.push_stream("trades", [_trade(3)], deliver=False)  # lost in transit
        conn.push_stream("trades", [_trade(4)])
        conn.drop()  # t4 was never read: lost too
        conn.push_stream("trades", pl.DataFrame([_trade(5)]), kind="delta")
        events: list[StreamEvent] = []
        two = asyncio.Event()

        async def read() -> None:
            async for event in conn.messages():
                events.append(event)
                if len(events) == 2:
                    two.set()

        reader = asyncio.create_task(read())
        await asyncio.wait_for(two.wait(), 5)
        await conn.disconnect()
        await asyncio.wait_for(reader, 5)  # the iteration ends on disconnect
        assert set(conn.rows) == {("t1",), ("t2",), ("t3",), ("t4",), ("t5",)}
        return events

    first, second = asyncio.run(main())
    assert isinstance(first, Reconnected) and first.attempt == 1
    assert isinstance(second, Message) and second.kind == "delta"
    assert second.frame["trade_id"].to_list() == ["t5"]


def test_messages_from_another_thread_wake_the_reader() -> None:
    async def main() -> Message:
        conn = InMemoryConnection(key="trade_id")
        await conn.connect()
        await conn.subscribe(["trades"])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.push_stream, "trades", [_trade(1)])
        async for event in conn.messages():
            assert isinstance(event, Message)
            return event
        raise AssertionError("no message")

    assert asyncio.run(main()).frame.height == 1
