"""Deterministic building blocks: the simulator clock, hashing, price paths, number formatting,
kline interval arithmetic and trade ids.

Everything here is a pure function of its arguments (plus the clock's reading), so the
generators built on it produce the same data for the same seed.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import time
from datetime import UTC, datetime

__all__ = [
    "INTERVALS",
    "PricePath",
    "SimClock",
    "candle_start",
    "fmt_units",
    "interval_ms",
    "key_hash",
    "mix64",
    "next_candle_start",
    "uuid_like",
]

MASK64 = (1 << 64) - 1
MINUTE = 60_000
DAY = 86_400_000
WEEK_OFFSET = 4 * DAY  # 1970-01-05 was a Monday; weekly candles start on Monday 00:00 UTC
INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")


class SimClock:
    """Simulated time in ms since the epoch.

    ``start_ms`` is the simulated time when the clock was made (default: the wall clock); it
    then advances ``time_scale`` simulated ms per wall ms. ``now_ms()`` never goes backwards.
    """

    def __init__(self, start_ms: int | None = None, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.time_scale = float(time_scale)
        self._mono0 = time.monotonic()

    def now_ms(self) -> int:
        """The current simulated time in ms."""
        return self.start_ms + int((time.monotonic() - self._mono0) * 1000.0 * self.time_scale)

    def wall_seconds(self, sim_ms: float) -> float:
        """How many wall-clock seconds ``sim_ms`` simulated milliseconds take."""
        return sim_ms / 1000.0 / self.time_scale


def mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def key_hash(seed: int, *parts: object) -> int:
    """A stable 64-bit hash of a seed and some names (stable across processes and runs)."""
    text = "\x1f".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit(h: int) -> float:
    """Map a 64-bit hash to [0, 1)."""
    return (h >> 11) / float(1 << 53)


def uuid_like(h: int, k: int) -> str:
    """A deterministic RFC 4122-shaped id (version 5 layout) for trade ``k`` of stream ``h``."""
    hi = mix64(h ^ (k * 0x9E3779B97F4A7C15 & MASK64))
    lo = mix64(hi ^ k)
    hi = (hi & ~(0xF << 12)) | (0x5 << 12)
    lo = (lo & ~(0x3 << 62)) | (0x2 << 62)
    s = f"{hi:016x}{lo:016x}"
    return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"


def fmt_units(n: int, decimals: int) -> str:
    """Format a count of ``10**-decimals`` as text: ``fmt_units(1234, 2) == "12.34"``."""
    if decimals <= 0:
        return str(n)
    sign = "-" if n < 0 else ""
    s = str(abs(n)).rjust(decimals + 1, "0")
    return f"{sign}{s[:-decimals]}.{s[-decimals:]}"


# (period in ms, amplitude of log-price) of the value-noise octaves of a price path
_OCTAVES = (
    (MINUTE, 0.0006),
    (15 * MINUTE, 0.002),
    (4 * 60 * MINUTE, 0.008),
    (2 * DAY, 0.03),
    (30 * DAY, 0.10),
)


class PricePath:
    """A smooth, deterministic price as a function of time: ``path.at(t_ms)``.

    The log-price is a sum of piecewise-linear value noise at periods from a minute to a month,
    so any instant, past or future, can be evaluated in O(1) without replaying history.
    """

    __slots__ = ("_knots", "base", "key")

    def __init__(self, key: int, base: float) -> None:
        self.key = key
        self.base = base
        # per octave, the last segment used: (q, value at q, value at q + 1); nearby instants
        # share segments, so most calls hash nothing
        self._knots: list[tuple[int, float, float]] = [(-1, 0.0, 0.0)] * len(_OCTAVES)

    def _v(self, octave: int, q: int) -> float:
        return unit(mix64(self.key ^ (octave << 58) ^ (q & MASK64))) * 2.0 - 1.0

    def at(self, t_ms: int) -> float:
        """The path's price at ``t_ms``."""
        x = 0.0
        knots = self._knots
        for octave, (period, amp) in enumerate(_OCTAVES):
            q, r = divmod(t_ms, period)
            kq, a, b = knots[octave]
            if kq != q:
                a, b = self._v(octave, q), self._v(octave, q + 1)
                knots[octave] = (q, a, b)
            x += amp * (a + (b - a) * (r / period))
        return self.base * math.exp(x)


def interval_ms(interval: str) -> int | None:
    """Length of a fixed-size interval in ms; None for "M" (calendar months)."""
    if interval == "D":
        return DAY
    if interval == "W":
        return 7 * DAY
    if interval == "M":
        return None
    return int(interval) * MINUTE


def candle_start(interval: str, t_ms: int) -> int:
    """Start (ms) of the candle of ``interval`` that contains ``t_ms`` (UTC-aligned)."""
    if interval == "M":
        d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        return calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000
    size = interval_ms(interval)
    assert size is not None
    if interval == "W":
        return (t_ms - WEEK_OFFSET) // size * size + WEEK_OFFSET
    return t_ms // size * size


def next_candle_start(interval: str, start_ms: int) -> int:
    """Start of the candle following the one that starts at ``start_ms``."""
    if interval == "M":
        d = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    size = interval_ms(interval)
    assert size is not None
    return start_ms + size


def prev_candle_start(interval: str, start_ms: int) -> int:
    """Start of the candle before the one that starts at ``start_ms``."""
    return candle_start(interval, start_ms - 1)
