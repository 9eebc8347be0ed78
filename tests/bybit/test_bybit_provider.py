"""InstrumentProvider and open_trades."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from hubkit.bridge import get_bridge
from hubkit.bybit.provider import InstrumentChange, InstrumentProvider, aopen_trades, open_trades
from hubkit.bybit.rest import BybitRest
from hubkit.errors import OfflineError, StaleDataWarning, StoreError
from hubkit.testing.bybit import BybitSimulator
from hubkit.testing.faults import deletes_from, fail_store_writes
from hubkit.types import Change, Op, Source

Sample = Callable[[str], Any]


class FakeBybit:
    """Serves instruments-info from lists the test changes between syncs."""

    def __init__(self, items: Mapping[str, list[dict[str, Any]]]) -> None:
        self.items = {c: list(v) for c, v in items.items()}
        self.down = False
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        category = request.url.params["category"]
        result = {"category": category, "list": self.items.get(category, []), "nextPageCursor": ""}
        body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1}
        return httpx.Response(200, json=body)

    def connection(self) -> BybitRest:
        return BybitRest(
            "http://bybit.invalid", transport=httpx.MockTransport(self.handler), retries=0
        )


def linear(sample: Sample, symbol: str, status: str) -> dict[str, Any]:
    item = dict(sample("rest_instruments_linear.json")["result"]["list"][0])
    item.update(symbol=symbol, status=status)
    return item


def test_listings_and_delistings(sample: Sample, tmp_path: Path) -> None:
    fake = FakeBybit(
        {
            "linear": [
                linear(sample, "BTCUSDT", "Trading"),
                linear(sample, "ETHUSDT", "Trading"),
                linear(sample, "BIOUSDT", "PreLaunch"),
                linear(sample, "OLDUSDT", "Trading"),
            ]
        }
    )
    listed: list[InstrumentChange] = []
    delisted: list[InstrumentChange] = []
    done = threading.Event()

    def on_delisting(change: InstrumentChange) -> None:
        delisted.append(change)

    def deleted(change: Change) -> None:
        if change.source is Source.REMOTE and change.op is Op.DELETE:
            done.set()

    with InstrumentProvider(
        "linear",
        store=tmp_path / "h.db",
        connection=fake.connection(),
        on_listing=listed.append,
        on_delisting=on_delisting,
    ) as provider:
        assert provider.changes == []  # the first snapshot into an empty table is the baseline
        assert sorted(provider.active_instruments()["symbol"]) == ["BTCUSDT", "ETHUSDT", "OLDUSDT"]
        provider.sink.subscribe(deleted)
        fake.items["linear"] = [
            linear(sample, "BTCUSDT", "Trading"),
            linear(sample, "ETHUSDT", "Delivering"),  # delisted: no longer trading
            linear(sample, "BIOUSDT", "Trading"),  # listed: out of pre-launch
            linear(sample, "NEWUSDT", "Trading"),  # listed: new
        ]  # OLDUSDT is gone from the list: delisted and deleted
        provider.refresh()
        assert done.wait(10), "the gone instrument was not deleted"
        kinds = {(c.kind, c.symbol, c.old_status, c.new_status) for c in provider.changes}
        assert kinds == {
            ("listed", "BIOUSDT", "PreLaunch", "Trading"),
            ("listed", "NEWUSDT", None, "Trading"),
            ("delisted", "ETHUSDT", "Trading", "Delivering"),
            ("delisted", "OLDUSDT", "Trading", None),
        }
        assert sorted(c.symbol for c in listed) == ["BIOUSDT", "NEWUSDT"]
        assert sorted(c.symbol for c in delisted) == ["ETHUSDT", "OLDUSDT"]
        active = provider.active_instruments("linear")
        assert sorted(active["symbol"]) == ["BIOUSDT", "BTCUSDT", "NEWUSDT"]
        assert "OLDUSDT" not in provider.instruments()["symbol"].to_list()
        assert provider.instruments()["category"].unique().to_list() == ["linear"]


def test_a_snapshot_and_the_delete_of_vanished_instruments_commit_together(
    sample: Sample, tmp_path: Path
) -> None:
    fake = FakeBybit(
        {"linear": [linear(sample, "BTCUSDT", "Trading"), linear(sample, "OLDUSDT", "Trading")]}
    )
    delisted: list[InstrumentChange] = []
    with InstrumentProvider(
        "linear",
        store=tmp_path / "h.db",
        connection=fake.connection(),
        on_delisting=delisted.append,
    ) as provider:
        fake.items["linear"] = [
            linear(sample, "BTCUSDT", "Settling"),
            linear(sample, "NEWUSDT", "Trading"),
        ]
        with (
            fail_store_writes(provider.sink.store, when=deletes_from("bybit_instrument")) as fault,
            pytest.raises(StoreError),
        ):
            provider.refresh()
        assert fault.fired == 1
        stored = provider.sink.table.read_all().sort("symbol")
        assert stored.select("symbol", "status").rows() == [
            ("BTCUSDT", "Trading"),
            ("OLDUSDT", "Trading"),
        ]
        assert provider.instruments()["symbol"].to_list() == ["BTCUSDT", "OLDUSDT"]
        assert provider.changes == []
        provider.refresh()
        stored = provider.sink.table.read_all().sort("symbol")
        assert stored.select("symbol", "status").rows() == [
            ("BTCUSDT", "Settling"),
            ("NEWUSDT", "Trading"),
        ]
        assert provider.instruments()["symbol"].to_list() == ["BTCUSDT", "NEWUSDT"]
        get_bridge().run(asyncio.sleep(0))  # the change handlers have run
        kinds = sorted((c.kind, c.symbol) for c in provider.changes)
        assert kinds == [("delisted", "BTCUSDT"), ("delisted", "OLDUSDT"), ("listed", "NEWUSDT")]
        assert sorted(c.symbol for c in delisted) == ["BTCUSDT", "OLDUSDT"]


def test_offline_start_uses_stored_instruments(sample: Sample, tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    fake = FakeBybit({"linear": [linear(sample, "BTCUSDT", "Trading")]})
    with InstrumentProvider("linear", store=db, connection=fake.connection()):
        pass
    fake.down = True
    with (
        pytest.warns(StaleDataWarning, match="1 stored instruments"),
        InstrumentProvider("linear", store=db, connection=fake.connection()) as provider,
    ):
        assert provider.active_instruments()["symbol"].to_list() == ["BTCUSDT"]
    with pytest.raises(OfflineError, match="hubkit simulate"):
        InstrumentProvider("linear", store=tmp_path / "empty.db", connection=fake.connection())


def test_provider_against_the_simulator(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    with InstrumentProvider(store=tmp_path / "h.db", rest_url=bybit_sim.rest_url) as provider:
        everything = provider.instruments()
        assert sorted(everything["category"].unique()) == ["inverse", "linear", "option", "spot"]
        active = provider.active_instruments("linear")
        assert active.height > 500
        assert active["status"].unique().to_list() == ["Trading"]
        assert provider.sink.status().rows == everything.height
        assert "InstrumentProvider" in repr(provider)


def test_provider_opens_awaited(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    async def main() -> int:
        provider = await InstrumentProvider.aopen(
            "spot", store=tmp_path / "h.db", rest_url=bybit_sim.rest_url
        )
        async with provider:
            return provider.active_instruments().height

    assert asyncio.run(main()) > 10


@pytest.mark.bybit_sim(symbols={"linear": ["BTCUSDT"]}, trades_per_second=200)
def test_open_trades_stores_the_stream(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    arrived = threading.Event()
    received: list[pl.DataFrame] = []

    def on_change(change: Change) -> None:
        if change.source is Source.REMOTE and change.frame.height:
            received.append(change.frame)
            if sum(f.height for f in received) >= 200:
                arrived.set()

    with open_trades(
        "BTCUSDT", store=tmp_path / "t.db", rest_url=bybit_sim.rest_url, ws_url=bybit_sim.ws_url
    ) as sink:
        assert sink.name == "bybit_public_trade_linear"
        sink.subscribe(on_change)
        assert arrived.wait(30), "no trades arrived"
        frame = sink.frame()
    truth = bybit_sim.ground_truth("trades").filter(pl.col("symbol") == "BTCUSDT")
    assert set(frame["exec_id"]) <= set(truth["exec_id"])
    assert frame.height >= 200
    assert bybit_sim.subscribers("linear", "publicTrade.BTCUSDT") == 0  # closed: unsubscribed


def test_open_trades_awaited(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    async def main() -> str:
        sink = await aopen_trades(
            ["BTCUSDT", "ETHUSDT"],
            store=tmp_path / "t.db",
            rest_url=bybit_sim.rest_url,
            ws_url=bybit_sim.ws_url,
        )
        async with sink:
            return sink.name

    assert asyncio.run(main()) == "bybit_public_trade_linear"


def test_open_trades_needs_symbols(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        open_trades([], store=tmp_path / "t.db")
    with pytest.raises(ValueError, match="unknown ByBit category"):
        open_trades("BTCUSDT", "futures", store=tmp_path / "t.db")


@pytest.mark.bybit_sim(symbols={"linear": ["BTCUSDT"]}, trades_per_second=50)
def test_ticker_stream_rows_are_complete_after_deltas(bybit_sim: BybitSimulator) -> None:
    from hubkit.bybit.streams import tickers_ws_connection
    from hubkit.types import Message

    async def main() -> list[Message]:
        conn = tickers_ws_connection("linear", bybit_sim.ws_url)
        got: list[Message] = []
        async with conn:
            await conn.subscribe(["tickers.BTCUSDT"])
            async for event in conn.messages():
                if isinstance(event, Message):
                    got.append(event)
                if sum(m.kind == "delta" for m in got) >= 3:
                    return got
        return got

    messages = asyncio.run(asyncio.wait_for(main(), 30))
    assert messages[0].kind == "snapshot"
    frame = pl.concat([m.frame for m in messages])
    assert frame["category"].unique().to_list() == ["linear"]
    assert frame["symbol"].unique().to_list() == ["BTCUSDT"]
    for column in ("last_price", "bid1_price", "ask1_price", "mark_price", "index_price"):
        assert frame[column].null_count() == 0, column  # deltas merged into the snapshot
