"""The ground-truth log: everything the simulator produced, as Polars frames.

- ``trades``: every trade made (including each symbol's back history), whether or not anyone
  received it. Columns: category, symbol, exec_id, time_ms, time (Datetime ms UTC), price,
  size (Float64), side, tick_direction, seq, is_block_trade, is_rpi_trade.
- ``klines``: every candle the simulator sent (REST ``kline`` answers and WebSocket ``kline``
  pushes), the latest version per (category, symbol, interval, start). Columns: category,
  symbol, interval, start_ms, start, open, high, low, close, volume, turnover (Float64),
  confirm (True once the candle's interval has ended).
- ``tickers``: every ticker state the simulator produced for a trading symbol (one row each time
  a symbol's ticker changed; the WebSocket pushes these states). Columns: category, symbol,
  ts_ms, ts, last_price, bid1_price, bid1_size, ask1_price, ask1_size, high_price_24h,
  low_price_24h, prev_price_24h, price_24h_pcnt, volume_24h, turnover_24h (Float64).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hubkit.testing.bybit.catalog import Instrument
from hubkit.testing.bybit.market import Candle, Market

if TYPE_CHECKING:
    import polars as pl

__all__ = ["KINDS", "GroundTruth"]

KINDS = ("trades", "klines", "tickers")
TICKER_COLUMNS = (
    ("lastPrice", "last_price"),
    ("bid1Price", "bid1_price"),
    ("bid1Size", "bid1_size"),
    ("ask1Price", "ask1_price"),
    ("ask1Size", "ask1_size"),
    ("highPrice24h", "high_price_24h"),
    ("lowPrice24h", "low_price_24h"),
    ("prevPrice24h", "prev_price_24h"),
    ("price24hPcnt", "price_24h_pcnt"),
    ("volume24h", "volume_24h"),
    ("turnover24h", "turnover_24h"),
)


def _num(text: str) -> float | None:
    return float(text) if text else None


class GroundTruth:
    """Collects klines and tickers as they are sent; trades come from the market itself."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self._klines: dict[tuple[str, str, str, int], tuple[Instrument, Candle, bool]] = {}
        self._tickers: list[tuple[str, str, int, tuple[float | None, ...]]] = []

    def record_kline(self, inst: Instrument, interval: str, candle: Candle, confirm: bool) -> None:
        """Remember a candle that was sent (a later version replaces an earlier one)."""
        key = (inst.category, inst.symbol, interval, candle.start)
        self._klines[key] = (inst, candle, confirm)

    def record_ticker(self, inst: Instrument, ts: int, values: Mapping[str, str]) -> None:
        """Remember a ticker state (REST field names)."""
        row = tuple(_num(values.get(src, "")) for src, _ in TICKER_COLUMNS)
        self._tickers.append((inst.category, inst.symbol, ts, row))

    def frame(self, kind: str) -> pl.DataFrame:
        """The log of ``kind`` ("trades", "klines" or "tickers") as a new Polars frame."""
        builders: dict[str, Callable[[], pl.DataFrame]] = {
            "trades": self._trades,
            "klines": self._kline_frame,
            "tickers": self._ticker_frame,
        }
        if kind not in builders:
            raise ValueError(f"unknown ground truth {kind!r}; expected one of {KINDS}")
        return builders[kind]()

    def _trades(self) -> pl.DataFrame:
        import polars as pl

        trades = self.market.all_trades()
        frame = pl.DataFrame(
            {
                "category": [t.category for t in trades],
                "symbol": [t.symbol for t in trades],
                "exec_id": [t.exec_id for t in trades],
                "time_ms": [t.time for t in trades],
                "price": [float(t.price) for t in trades],
                "size": [float(t.size) for t in trades],
                "side": [t.side for t in trades],
                "tick_direction": [t.tick_direction for t in trades],
                "seq": [t.seq for t in trades],
                "is_block_trade": [t.block for t in trades],
                "is_rpi_trade": [t.rpi for t in trades],
            },
            schema={
                "category": pl.String,
                "symbol": pl.String,
                "exec_id": pl.String,
                "time_ms": pl.Int64,
                "price": pl.Float64,
                "size": pl.Float64,
                "side": pl.String,
                "tick_direction": pl.String,
                "seq": pl.Int64,
                "is_block_trade": pl.Boolean,
                "is_rpi_trade": pl.Boolean,
            },
        )
        time = pl.from_epoch(pl.col("time_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(time.alias("time")).select(
            "category", "symbol", "exec_id", "time_ms", "time", "price", "size", "side",
            "tick_direction", "seq", "is_block_trade", "is_rpi_trade",
        )  # fmt: skip

    def _kline_frame(self) -> pl.DataFrame:
        import polars as pl

        rows = sorted(self._klines.items())
        strs = [self.market.candle_strings(inst, c) for _, (inst, c, _) in rows]
        frame = pl.DataFrame(
            {
                "category": [k[0] for k, _ in rows],
                "symbol": [k[1] for k, _ in rows],
                "interval": [k[2] for k, _ in rows],
                "start_ms": [k[3] for k, _ in rows],
                "open": [float(s[1]) for s in strs],
                "high": [float(s[2]) for s in strs],
                "low": [float(s[3]) for s in strs],
                "close": [float(s[4]) for s in strs],
                "volume": [float(s[5]) for s in strs],
                "turnover": [float(s[6]) for s in strs],
                "confirm": [v[2] for _, v in rows],
            },
            schema={
                "category": pl.String,
                "symbol": pl.String,
                "interval": pl.String,
                "start_ms": pl.Int64,
                "open": pl.Float64,
                "high": pl.Float64,
                "low": pl.Float64,
                "close": pl.Float64,
                "volume": pl.Float64,
                "turnover": pl.Float64,
                "confirm": pl.Boolean,
            },
        )
        start = pl.from_epoch(pl.col("start_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(start.alias("start")).select(
            "category", "symbol", "interval", "start_ms", "start", "open", "high", "low",
            "close", "volume", "turnover", "confirm",
        )  # fmt: skip

    def _ticker_frame(self) -> pl.DataFrame:
        import polars as pl

        rows = list(self._tickers)
        data: dict[str, list[object]] = {
            "category": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "ts_ms": [r[2] for r in rows],
        }
        schema: dict[str, pl.DataType] = {
            "category": pl.String(),
            "symbol": pl.String(),
            "ts_ms": pl.Int64(),
        }
        for i, (_, name) in enumerate(TICKER_COLUMNS):
            data[name] = [r[3][i] for r in rows]
            schema[name] = pl.Float64()
        frame = pl.DataFrame(data, schema=schema)
        ts = pl.from_epoch(pl.col("ts_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(ts.alias("ts")).select(
            "category", "symbol", "ts_ms", "ts", *[name for _, name in TICKER_COLUMNS]
        )
