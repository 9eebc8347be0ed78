"""The connections against ``hubkit.testing.BybitSimulator`` (ByBit v5 on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from hubkit.bybit.envelope import BYBIT_RATE_LIMIT_HEADERS, bybit_route
from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections import (
    Backoff,
    HttpConnection,
    RetryPolicy,
    WebSocketConnection,
    array_row,
)
from hubkit.errors import DecodeError, HubkitError
from hubkit.types import Message, Reconnected, StreamEvent

from ._spec import INSTRUMENT, KLINE, TRADE, Instrument, Kline

if TYPE_CHECKING:
    from hubkit.testing import BybitSimulator


class Waits:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(retries=4, backoff=Backoff(base=0.1), sleep=self.sleep)


def rest(sim: BybitSimulator, retry: RetryPolicy | None = None) -> HttpConnection:
    return HttpConnection(
        sim.rest_url,
        {
            Instrument: bybit_route("/v5/market/instruments-info", {"category": "linear"}),
            Kline: bybit_route(
                "/v5/market/kline",
                {"category": "linear"},
                paginated=False,
                row_mapper=array_row(
                    "startTime", "open", "high", "low", "close", "volume", "turnover"
                ),
            ),
        },
        retries=retry if retry is not None else 3,
        rate_limit_headers=BYBIT_RATE_LIMIT_HEADERS,
    )


@pytest.mark.anyio
async def test_instruments_every_page(bybit_sim: BybitSimulator) -> None:
    async with rest(bybit_sim) as conn:
        everything = await conn.fetch(INSTRUMENT, {"limit": 1000})
        paged = await conn.fetch(INSTRUMENT, {"limit": 50})
        pages = conn.requests_made - 1
    assert everything.height > 50
    assert paged["symbol"].to_list() == everything["symbol"].to_list()
    assert pages == -(-everything.height // 50)
    assert bybit_sim.tcp_connections_total == 1  # keep-alive across all pages


@pytest.mark.anyio
async def test_klines_arrays(bybit_sim: BybitSimulator) -> None:
    async with rest(bybit_sim) as conn:
        frame = await conn.fetch(KLINE, {"symbol": "BTCUSDT", "interval": "1", "limit": 5})
    assert 1 <= frame.height <= 5
    assert frame["start"].is_sorted(descending=True)  # ByBit: newest first


@pytest.mark.anyio
async def test_http_faults_are_ridden_out(bybit_sim: BybitSimulator) -> None:
    faults = bybit_sim.faults
    faults.http_path = "instruments-info"
    # A fresh connection per fault: a rate limit pauses the whole connection for a while.
    waits = Waits()
    async with rest(bybit_sim, waits.policy()) as conn:
        faults.http_5xx_next = 2
        await conn.fetch(INSTRUMENT, {"limit": 1000})
    assert len(waits.sleeps) == 2

    waits = Waits()
    async with rest(bybit_sim, waits.policy()) as conn:
        faults.http_429_next = 1
        faults.retry_after_seconds = 3.0
        await conn.fetch(INSTRUMENT, {"limit": 1000})
    assert waits.sleeps == [3.0]

    waits = Waits()
    now = time.time()  # the connection's clock stands still: the wait is reset - now exactly
    policy = dataclasses.replace(waits.policy(), clock=lambda: now)
    async with rest(bybit_sim, policy) as conn:
        faults.rate_limit_next = 1
        faults.rate_limit_reset_ms = 1500
        await conn.fetch(INSTRUMENT, {"limit": 1000})
        limit = conn.last_rate_limit
    # waited until the reset timestamp the simulator sent (1.5 s after its "now"), not the
    # default wait; how close that is to 1.5 s of real time is measured by
    # benchmarks/rest_rate_limit_wait.py
    assert limit is not None and limit.remaining == 0 and limit.reset_at is not None
    assert waits.sleeps == [pytest.approx(limit.reset_at - now)]
    assert limit.reset_at > now
    counts = bybit_sim.fault_counts
    assert counts["http_5xx"] == 2 and counts["http_429"] == 1 and counts["http_10006"] == 1


def stream(sim: BybitSimulator, errors: list[HubkitError], **kwargs: Any) -> WebSocketConnection:
    options: dict[str, Any] = {
        "on_error": errors.append,
        "backoff": Backoff(base=0.05, cap=0.2),
        "ping_interval": 0.05,
        "silence_timeout": 5.0,
    }
    options.update(kwargs)
    return WebSocketConnection(
        sim.ws_endpoint("linear"), {"publicTrade": TRADE}, protocol=BybitWsProtocol(), **options
    )


async def collect(
    events: AsyncIterator[StreamEvent], rows: int, reconnects: int = 0
) -> tuple[list[Message], list[Reconnected]]:
    messages: list[Message] = []
    seen: list[Reconnected] = []
    async with asyncio.timeout(20):
        while sum(m.frame.height for m in messages) < rows or len(seen) < reconnects:
            event = await anext(events)
            if isinstance(event, Message):
                messages.append(event)
            else:
                seen.append(event)
    return messages, seen


@pytest.mark.anyio
@pytest.mark.bybit_sim(trades_per_second=200)
async def test_trades_stream_through_a_dropped_connection(bybit_sim: BybitSimulator) -> None:
    errors: list[HubkitError] = []
    conn = stream(bybit_sim, errors)
    await conn.subscribe(["publicTrade.BTCUSDT", "publicTrade.ETHUSDT"])
    await conn.connect()
    events = conn.messages()
    first, _ = await collect(events, 20)
    bybit_sim.disconnect_all()
    after, reconnected = await collect(events, 20, reconnects=1)
    async with asyncio.timeout(10):  # pings go every 50 ms: wait for an answer, however fast
        while conn.pongs == 0:  # noqa: ASYNC110 - the reader task counts pongs
            await asyncio.sleep(0.01)
    await conn.disconnect()
    assert reconnected[0].attempt >= 1
    assert bybit_sim.ws_connections_total == 2
    assert bybit_sim.subscribers("linear", "publicTrade.BTCUSDT") == 0  # closed at the end
    assert conn.pongs > 0
    assert {m.topic for m in first + after} <= {"publicTrade.BTCUSDT", "publicTrade.ETHUSDT"}
    ids = [tid for m in first + after for tid in m.frame["trade_id"].to_list()]
    truth = set(bybit_sim.ground_truth("trades")["exec_id"].to_list())
    assert set(ids) <= truth and len(ids) == len(set(ids))
    assert errors == []


@pytest.mark.anyio
@pytest.mark.bybit_sim(trades_per_second=200)
async def test_malformed_frames_from_the_simulator(bybit_sim: BybitSimulator) -> None:
    errors: list[HubkitError] = []
    bybit_sim.faults.malformed_every_n_messages = 4
    conn = stream(bybit_sim, errors)
    await conn.subscribe(["publicTrade.BTCUSDT"])
    await conn.connect()
    await collect(conn.messages(), 100)
    await conn.disconnect()
    assert errors and all(isinstance(error, DecodeError) for error in errors)
    assert all(error.field for error in errors if "not JSON" not in str(error))  # type: ignore[attr-defined]
    assert sum(
        bybit_sim.fault_counts.get(f"malformed_{k}", 0)
        for k in ("invalid_json", "wrong_types", "missing_fields")
    ) >= len(errors)
