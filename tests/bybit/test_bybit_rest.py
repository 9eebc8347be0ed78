"""BybitRest against the simulator: pagination, every entity through ``fetch``, errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import polars as pl
import pytest

from hubkit.bybit.entities import (
    INSTRUMENT_KEY,
    KLINE_KEY,
    PUBLIC_TRADE_KEY,
    TICKER_KEY,
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
)
from hubkit.bybit.klines import to_ms
from hubkit.bybit.rest import BybitRest
from hubkit.entity import reflect
from hubkit.errors import ProtocolError, SchemaError
from hubkit.testing.bybit import BybitSimulator


def test_instruments_follow_every_page(bybit_sim: BybitSimulator) -> None:
    async def main() -> tuple[pl.DataFrame, pl.DataFrame]:
        async with BybitRest(bybit_sim.rest_url) as rest:
            whole = await rest.instruments("linear")
            paged = await rest.instruments("linear", limit=100)
            return whole, paged

    whole, paged = asyncio.run(main())
    pages = [q for p, q in bybit_sim.request_log if p == "/v5/market/instruments-info"]
    assert len(pages) == 1 + -(-whole.height // 100)
    assert all("cursor" in q for q in pages[2:])
    assert paged.sort("symbol").equals(whole.sort("symbol"))


def test_fetch_serves_every_entity(bybit_sim: BybitSimulator) -> None:
    specs = {
        "instrument": reflect(Instrument, INSTRUMENT_KEY),
        "trade": reflect(PublicTrade, PUBLIC_TRADE_KEY),
        "ticker": reflect(Ticker, TICKER_KEY),
        "kline": reflect(Kline, KLINE_KEY),
    }

    async def main() -> dict[str, pl.DataFrame]:
        async with BybitRest(bybit_sim.rest_url) as rest:
            start = to_ms("2024-01-01")
            return {
                "instrument": await rest.fetch(specs["instrument"], {"category": "inverse"}),
                "trade": await rest.fetch(
                    specs["trade"], {"symbols": ["BTCUSDT", "ETHUSDT"], "limit": 10}
                ),
                "ticker": await rest.fetch(specs["ticker"], {"category": "spot"}),
                "kline": await rest.fetch(
                    specs["kline"],
                    {"symbol": "BTCUSDT", "interval": "D", "start": start, "limit": 7},
                ),
            }

    got = asyncio.run(main())
    assert got["instrument"]["category"].unique().to_list() == ["inverse"]
    assert sorted(got["trade"]["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"]
    assert got["trade"].height == 20
    assert got["ticker"]["category"].unique().to_list() == ["spot"]
    assert got["kline"].height == 7
    assert got["kline"]["start"].is_sorted()


def test_errors(bybit_sim: BybitSimulator) -> None:
    @dataclass
    class Other:
        id: str

    async def main() -> None:
        async with BybitRest(bybit_sim.rest_url) as rest:
            with pytest.raises(ProtocolError, match="10001") as info:
                await rest.recent_trades("NOSUCHUSDT")
            assert info.value.code == 10001 and not info.value.temporary
            with pytest.raises(SchemaError, match="serves no Other"):
                await rest.fetch(reflect(Other, "id"))
            with pytest.raises(ProtocolError, match="read-only"):
                await rest.create(reflect(Other, "id"), {"id": "x"})

    asyncio.run(main())
    assert "BybitRest" in repr(BybitRest(bybit_sim.rest_url))
