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

Everything is kept as typed columns (``array``), not objects per row: trades are the trade
streams' own columns (about 25 bytes a trade, see ``trades``) and their strings are derived
when a frame is built; klines take about 60 bytes a candle plus an index entry, tickers about
100 bytes a state.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hubkit.testing.bybit.instruments import Instrument
from hubkit.testing.bybit.market import Candle, Market
from hubkit.testing.bybit.trades import DIRECTIONS, SIDES, SPOT_ID_BASE, TradeStream

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["KINDS", "GroundTruth", "trade_frame"]

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
TRADE_COLUMNS = (
    "category", "symbol", "exec_id", "time_ms", "time", "price", "size", "side",
    "tick_direction", "seq", "is_block_trade", "is_rpi_trade",
)  # fmt: skip
MASK64 = (1 << 64) - 1


def _num(text: str) -> float:
    return float(text) if text else math.nan


def _column(values: array[int] | array[float], kind: str) -> pa.Array:
    """A copy of an ``array`` column as an Arrow array (a copy: the array keeps growing)."""
    import pyarrow as pa

    types = {
        "q": pa.int64(),
        "B": pa.uint8(),
        "H": pa.uint16(),
        "I": pa.uint32(),
        "d": pa.float64(),
    }
    return pa.Array.from_buffers(types[kind], len(values), [None, pa.py_buffer(values.tobytes())])


def _series(values: array[int] | array[float], kind: str) -> pl.Series:
    """A copy of an ``array`` column as a Polars series."""
    import polars as pl

    series = pl.from_arrow(_column(values, kind))
    assert isinstance(series, pl.Series)
    return series


def _scaled(units: pl.Series, scale: float | pl.Series) -> pl.Series:
    """``units / scale`` as Float64, each value rounded once: equal to ``float()`` of the
    decimal text (an integer below 2**53 over an exact power of ten). Arrow divides element
    by element; Polars may multiply by the reciprocal instead, which is not always equal."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    divisor = pa.scalar(scale, pa.float64()) if isinstance(scale, float) else scale.to_arrow()
    series = pl.from_arrow(pc.divide(units.to_arrow().cast(pa.float64()), divisor))
    assert isinstance(series, pl.Series)
    return series


def _mix64(x: pa.Array) -> pa.Array:
    """``pricing.mix64`` over a uint64 Arrow array (Arrow's unchecked arithmetic wraps)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def u(v: int) -> pa.Scalar:
        return pa.scalar(v, pa.uint64())

    x = pc.add(x, u(0x9E3779B97F4A7C15))
    x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, u(30))), u(0xBF58476D1CE4E5B9))
    x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, u(27))), u(0x94D049BB133111EB))
    return pc.bit_wise_xor(x, pc.shift_right(x, u(31)))


def _hex16(x: pa.Array) -> pl.Series:
    """Each uint64 as 16 lowercase hex digits, most significant first."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    def u(v: int) -> pa.Scalar:
        return pa.scalar(v, pa.uint64())

    # reverse the byte order, so the little-endian bytes of each value are its digits in order
    for mask, bits in ((0x00FF00FF00FF00FF, 8), (0x0000FFFF0000FFFF, 16), (MASK64 >> 32, 32)):
        x = pc.bit_wise_or(
            pc.shift_left(pc.bit_wise_and(x, u(mask)), u(bits)),
            pc.bit_wise_and(pc.shift_right(x, u(bits)), u(mask)),
        )
    raw = pa.Array.from_buffers(pa.binary(8), len(x), [None, x.buffers()[1]], offset=x.offset)
    series = pl.from_arrow(raw.cast(pa.binary()))
    assert isinstance(series, pl.Series)
    return series.bin.encode("hex")


def uuid_column(h: int, count: int) -> pl.Series:
    """``pricing.uuid_like(h, k)`` for k in 0..count-1, computed column-wise."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    def u(v: int) -> pa.Scalar:
        return pa.scalar(v, pa.uint64())

    k = pl.int_range(0, count, dtype=pl.UInt64, eager=True).to_arrow()
    hi = _mix64(pc.bit_wise_xor(u(h), pc.multiply(k, u(0x9E3779B97F4A7C15))))
    lo = _mix64(pc.bit_wise_xor(hi, k))
    hi = pc.bit_wise_or(pc.bit_wise_and(hi, u(MASK64 ^ (0xF << 12))), u(0x5 << 12))
    lo = pc.bit_wise_or(pc.bit_wise_and(lo, u(MASK64 ^ (0x3 << 62))), u(0x2 << 62))
    frame = pl.DataFrame({"hi": _hex16(hi), "lo": _hex16(lo)})
    hi_s, lo_s = pl.col("hi").str, pl.col("lo").str
    return frame.select(
        pl.concat_str(
            hi_s.slice(0, 8), pl.lit("-"), hi_s.slice(8, 4), pl.lit("-"), hi_s.slice(12, 4),
            pl.lit("-"), lo_s.slice(0, 4), pl.lit("-"), lo_s.slice(4, 12),
        ).alias("exec_id")
    ).to_series()  # fmt: skip


def trade_frame(stream: TradeStream) -> pl.DataFrame:
    """The trades of one stream as a frame with the ``trades`` columns (no ``time`` yet)."""
    import polars as pl

    n = stream.count
    k = pl.int_range(0, n, dtype=pl.Int64, eager=True)
    members = stream.members
    insts = [st.inst for st in members]
    pscale: float | pl.Series
    qscale: float | pl.Series
    if stream.member_ix is not None:
        ix = _series(stream.member_ix, "H")

        def per_member(values: list[object], dtype: pl.DataType) -> pl.Series:
            return pl.Series(values, dtype=dtype).gather(ix)

        symbol = per_member([i.symbol for i in insts], pl.String())
        pscale = per_member([10.0**i.decimals for i in insts], pl.Float64())
        qscale = per_member([10.0**i.qty_decimals for i in insts], pl.Float64())
    else:
        inst = insts[0] if insts else None
        symbol = pl.repeat(inst.symbol if inst else "", n, dtype=pl.String, eager=True)
        pscale = 10.0 ** (inst.decimals if inst else 0)
        qscale = 10.0 ** (inst.qty_decimals if inst else 0)
    if stream.category == "spot" and insts:
        prefix = str(SPOT_ID_BASE + insts[0].symbol_id)
        exec_id = pl.select(pl.lit(prefix) + k.cast(pl.String).str.zfill(10)).to_series()
    else:
        exec_id = uuid_column(stream.hash, n)
    flags = _series(stream.flags, "B").cast(pl.Int64)
    times = _series(stream.times, "q")
    prices = _series(stream.prices, "q")
    sizes = _series(stream.sizes, "q")
    m = k + 1
    frame = pl.DataFrame(
        {
            "category": pl.repeat(stream.category, n, dtype=pl.String, eager=True),
            "symbol": symbol,
            "exec_id": exec_id,
            "time_ms": times,
            "price": _scaled(prices, pscale),
            "size": _scaled(sizes, qscale),
            "side": pl.Series(SIDES).gather(flags & 1),
            "tick_direction": pl.Series(DIRECTIONS).gather((flags // 2) & 3),
            "seq": stream.seq0 + m + 3 * (m // 3) + (m % 3 == 2).cast(pl.Int64),
            "is_block_trade": (flags & 8) != 0,
            "is_rpi_trade": (flags & 16) != 0,
        }
    )
    return frame


class _KlineSeries:
    """The candles sent of one (category, symbol, interval), newest version of each."""

    __slots__ = ("cols", "confirm", "index", "inst", "turnover")

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.index: dict[int, int] = {}  # start ms -> row
        self.cols = tuple(array("q") for _ in range(6))  # start, open, high, low, close, volume
        self.turnover = array("d")  # as sent: rounded to the wire's decimals
        self.confirm = array("B")

    def record(self, candle: Candle, confirm: bool) -> None:
        digits = 8 if self.inst.is_inverse else 4
        turnover = float(f"{candle.turnover:.{digits}f}")
        values = (candle.start, candle.open, candle.high, candle.low, candle.close, candle.volume)
        row = self.index.get(candle.start)
        if row is None:
            self.index[candle.start] = len(self.confirm)
            for col, v in zip(self.cols, values, strict=True):
                col.append(v)
            self.turnover.append(turnover)
            self.confirm.append(confirm)
        else:
            for col, v in zip(self.cols, values, strict=True):
                col[row] = v
            self.turnover[row] = turnover
            self.confirm[row] = confirm


class GroundTruth:
    """Collects klines and tickers as they are sent; trades come from the market itself."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self._klines: dict[tuple[str, str, str], _KlineSeries] = {}
        self._ticker_keys: list[tuple[str, str]] = []
        self._ticker_key_ix: dict[tuple[str, str], int] = {}
        self._ticker_key = array("I")
        self._ticker_ts = array("q")
        self._ticker_values = tuple(array("d") for _ in TICKER_COLUMNS)

    def record_kline(self, inst: Instrument, interval: str, candle: Candle, confirm: bool) -> None:
        """Remember a candle that was sent (a later version replaces an earlier one)."""
        key = (inst.category, inst.symbol, interval)
        series = self._klines.get(key)
        if series is None:
            series = self._klines[key] = _KlineSeries(inst)
        series.record(candle, confirm)

    def record_ticker(self, inst: Instrument, ts: int, values: Mapping[str, str]) -> None:
        """Remember a ticker state (REST field names)."""
        key = (inst.category, inst.symbol)
        ix = self._ticker_key_ix.get(key)
        if ix is None:
            ix = self._ticker_key_ix[key] = len(self._ticker_keys)
            self._ticker_keys.append(key)
        self._ticker_key.append(ix)
        self._ticker_ts.append(ts)
        for col, (src, _) in zip(self._ticker_values, TICKER_COLUMNS, strict=True):
            col.append(_num(values.get(src, "")))

    def nbytes(self) -> int:
        """Bytes held by the trade, kline and ticker columns (not counting small indexes)."""
        total = sum(s.nbytes() for s in self.market.streams.values())
        for series in self._klines.values():
            total += sum(len(c) * 8 for c in series.cols) + len(series.turnover) * 9
        total += len(self._ticker_ts) * (12 + 8 * len(TICKER_COLUMNS))
        return total

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

        schema = {
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
        }
        parts = [trade_frame(s) for s in list(self.market.streams.values()) if s.count]
        frame = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
        frame = frame.cast(schema)  # type: ignore[arg-type]
        time = pl.from_epoch(pl.col("time_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(time.alias("time")).select(TRADE_COLUMNS)

    def _kline_frame(self) -> pl.DataFrame:
        import polars as pl

        parts = []
        for (category, symbol, interval), series in sorted(self._klines.items()):
            d, qd = series.inst.decimals, series.inst.qty_decimals
            start, o, h, lo, c, v = (_series(col, "q") for col in series.cols)
            confirm = _series(series.confirm, "B")
            turnover = _series(series.turnover, "d")
            n = len(series.confirm)
            part = pl.DataFrame(
                {
                    "category": pl.repeat(category, n, dtype=pl.String, eager=True),
                    "symbol": pl.repeat(symbol, n, dtype=pl.String, eager=True),
                    "interval": pl.repeat(interval, n, dtype=pl.String, eager=True),
                    "start_ms": start,
                    "open": _scaled(o, 10.0**d),
                    "high": _scaled(h, 10.0**d),
                    "low": _scaled(lo, 10.0**d),
                    "close": _scaled(c, 10.0**d),
                    "volume": _scaled(v, 10.0**qd),
                    "turnover": turnover,
                    "confirm": confirm.cast(pl.Boolean),
                }
            )
            parts.append(part.sort("start_ms"))
        schema = {
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
        }
        frame = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
        frame = frame.cast(schema)  # type: ignore[arg-type]
        start_time = pl.from_epoch(pl.col("start_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(start_time.alias("start")).select(
            "category", "symbol", "interval", "start_ms", "start", "open", "high", "low",
            "close", "volume", "turnover", "confirm",
        )  # fmt: skip

    def _ticker_frame(self) -> pl.DataFrame:
        import polars as pl

        key = _series(self._ticker_key, "I")
        categories = pl.Series([k[0] for k in self._ticker_keys], dtype=pl.String)
        symbols = pl.Series([k[1] for k in self._ticker_keys], dtype=pl.String)
        data: dict[str, pl.Series] = {
            "category": categories.gather(key),
            "symbol": symbols.gather(key),
            "ts_ms": _series(self._ticker_ts, "q"),
        }
        for col, (_, name) in zip(self._ticker_values, TICKER_COLUMNS, strict=True):
            data[name] = _series(col, "d").fill_nan(None)
        frame = pl.DataFrame(data)
        ts = pl.from_epoch(pl.col("ts_ms"), time_unit="ms").dt.replace_time_zone("UTC")
        return frame.with_columns(ts.alias("ts")).select(
            "category", "symbol", "ts_ms", "ts", *[name for _, name in TICKER_COLUMNS]
        )
