"""Deterministic ByBit-like public trades for benchmarks.

``trade_frame(n)`` returns ``n`` trades as a Polars frame with the columns of ``Trade``
(a 36-character text id, symbol, price, size, side, time as UTC datetime, block flag);
``trade_tuples(frame)`` turns it into the row tuples a stdlib ``sqlite3`` baseline binds
(time as integer microseconds, the flag as 0/1), ``trade_wire(frame)`` into ByBit
``publicTrade`` JSON objects (``{"T": ..., "s": ..., "p": "123.4", ...}``). The same
``seed`` always gives the same rows, so methods measured in one process see equal data.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import polars as pl

import hubkit

SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT",
    "DOTUSDT", "TRXUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "APTUSDT", "ARBUSDT", "OPUSDT",
)  # fmt: skip


class Side(enum.Enum):
    BUY = "Buy"
    SELL = "Sell"


@dataclass
class Trade:
    """One public trade, mapped from ByBit's short wire keys."""

    id: Annotated[str, hubkit.wire("i")]
    symbol: Annotated[str, hubkit.wire("s")]
    price: Annotated[float, hubkit.wire("p")]
    size: Annotated[float, hubkit.wire("v")]
    side: Annotated[Side, hubkit.wire("S")]
    time: Annotated[datetime, hubkit.wire("T")]
    block_trade: Annotated[bool, hubkit.wire("BT")]


def _uuid_like(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def trade_frame(n: int, *, seed: int = 7) -> pl.DataFrame:
    """``n`` trades with distinct random keys, in time order, as a frame of ``Trade`` columns."""
    rng = random.Random(seed)
    ids = [_uuid_like(rng) for _ in range(n)]
    base_ms = 1_700_000_000_000
    return pl.DataFrame(
        {
            "id": ids,
            "seq": pl.int_range(n, eager=True, dtype=pl.Int64),
        }
    ).select(
        pl.col("id"),
        pl.col("seq")
        .hash(seed)
        .mod(len(SYMBOLS))
        .replace_strict(list(range(len(SYMBOLS))), list(SYMBOLS), return_dtype=pl.String)
        .alias("symbol"),
        (10_000 + (pl.col("seq").hash(seed + 1) % 5_000_000) / 100).alias("price"),
        ((pl.col("seq").hash(seed + 2) % 100_000 + 1) / 1000).alias("size"),
        pl.when(pl.col("seq").hash(seed + 3) % 2 == 0)
        .then(pl.lit("Buy"))
        .otherwise(pl.lit("Sell"))
        .alias("side"),
        pl.from_epoch(base_ms + pl.col("seq") * 3, time_unit="ms")
        .dt.cast_time_unit("us")
        .dt.replace_time_zone("UTC")
        .alias("time"),
        (pl.col("seq").hash(seed + 4) % 50 == 0).alias("block_trade"),
    )


def trade_tuples(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    """The frame's rows as stdlib ``sqlite3`` parameters (time in µs, flag as 0/1)."""
    return frame.with_columns(
        pl.col("time").dt.epoch("us"), pl.col("block_trade").cast(pl.Int64)
    ).rows()


def trade_wire(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as ByBit ``publicTrade`` objects (prices and sizes as strings)."""
    return (
        frame.select(
            pl.col("time").dt.epoch("ms").alias("T"),
            pl.col("symbol").alias("s"),
            pl.col("side").alias("S"),
            pl.col("size").cast(pl.String).alias("v"),
            pl.col("price").cast(pl.String).alias("p"),
            pl.col("id").alias("i"),
            pl.col("block_trade").alias("BT"),
        )
    ).to_dicts()
