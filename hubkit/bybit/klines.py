"""Kline time arithmetic and the backfill plan, free of I/O so it is testable on its own.

ByBit candles start on UTC boundaries: minute intervals and ``D`` on multiples of their length
since the epoch, ``W`` on Mondays 00:00 UTC, ``M`` on the first day of each month.

The backfill cursor is a small JSON object committed with each page of rows::

    {"from": <ms>, "next": <ms>}

meaning "every candle starting in [from, next) is stored and closed". A run that starts inside
(or right at the end of) that range resumes at ``next``; any other start begins a new range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from hubkit.errors import ParameterError

__all__ = [
    "INTERVALS",
    "INTERVAL_ALIASES",
    "Coverage",
    "align_up",
    "interval_ms",
    "kline_interval",
    "next_start",
    "page_end",
    "to_ms",
]

_MINUTE: Final = 60_000
_DAY: Final = 86_400_000
_WEEK: Final = 7 * _DAY
_MONDAY: Final = 4 * _DAY  # 1970-01-05, the first Monday after the epoch (a Thursday)
_MONTH_MIN: Final = 28 * _DAY  # the shortest month: used to size a page window safely
_MINUTES: Final = frozenset({"1", "3", "5", "15", "30", "60", "120", "240", "360", "720"})


#: ByBit's interval names, shortest first.
INTERVALS: Final = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")

#: The usual names beside ByBit's: minutes ``1m``, hours ``1h``, days ``1d``, weeks ``1w``,
#: months ``1M`` (a capital M: ``1m`` is a minute).
INTERVAL_ALIASES: Final = {
    **{f"{n}m": n for n in ("1", "3", "5", "15", "30")},
    **{f"{int(n) // 60}h": n for n in ("60", "120", "240", "360", "720")},
    "1d": "D",
    "1w": "W",
    "1M": "M",
}


def kline_interval(value: str | int) -> str:
    """ByBit's name of a kline interval: ``"1h"`` and ``60`` -> ``"60"``, ``"1d"`` -> ``"D"``.

    Accepts ByBit's names (``INTERVALS``) and the usual ones (``INTERVAL_ALIASES``); anything
    else raises ``ParameterError`` (a ``ValueError``) listing both.
    """
    text = str(value).strip() if not isinstance(value, bool) else ""
    if text in _INTERVAL_SET:
        return text
    alias = INTERVAL_ALIASES.get(text)
    if alias is not None:
        return alias
    raise ParameterError(
        f"unknown kline interval {value!r}; expected one of {', '.join(INTERVALS)} "
        f"or {', '.join(INTERVAL_ALIASES)}"
    )


_INTERVAL_SET: Final = frozenset(INTERVALS)


def interval_ms(interval_name: str) -> int:
    """The length of a candle in ms (a month counts as its shortest, 28 days); any name
    ``kline_interval`` accepts."""
    name = kline_interval(interval_name)
    if name in _MINUTES:
        return int(name) * _MINUTE
    return {"D": _DAY, "W": _WEEK, "M": _MONTH_MIN}[name]


def _month_start(ms: int, *, up: bool) -> int:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    first = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    first_ms = int(first.timestamp() * 1000)
    if up and first_ms < ms:
        return _add_month(first_ms)
    return first_ms


def _add_month(ms: int) -> int:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def align_up(ms: int, interval_name: str) -> int:
    """The start of the first candle that starts at or after ``ms``."""
    name = kline_interval(interval_name)
    if name == "M":
        return _month_start(ms, up=True)
    step = interval_ms(name)
    origin = _MONDAY if name == "W" else 0
    return -((origin - ms) // step) * step + origin


def align_down(ms: int, interval_name: str) -> int:
    """The start of the candle that contains ``ms``."""
    name = kline_interval(interval_name)
    if name == "M":
        return _month_start(ms, up=False)
    step = interval_ms(name)
    origin = _MONDAY if name == "W" else 0
    return (ms - origin) // step * step + origin


def next_start(start_ms: int, interval_name: str) -> int:
    """The start of the candle after the one that starts at ``start_ms``."""
    name = kline_interval(interval_name)
    if name == "M":
        return _add_month(start_ms)
    return start_ms + interval_ms(name)


def page_end(pos: int, interval_name: str, limit: int, end: int) -> int:
    """The last ms of a request window starting at ``pos`` that holds at most ``limit``
    candles, clipped to ``end`` (inclusive). Sized so that either reading of ByBit's
    ``start``/``end``/``limit`` (the first or the last ``limit`` candles of the window) gives
    the same rows."""
    return min(end, pos + limit * interval_ms(interval_name) - 1)


def to_ms(value: Any) -> int:
    """ms since the epoch from an int (ms), a datetime (naive = UTC), a date, or ISO text."""
    if isinstance(value, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)
    raise TypeError(f"cannot read a time from {value!r}")


@dataclass(frozen=True)
class Coverage:
    """What a series' stored cursor says is complete: candles starting in [start, next)."""

    start: int
    next: int

    def to_cursor(self) -> str:
        return json.dumps({"from": self.start, "next": self.next}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> Coverage | None:
        """Parse a stored cursor; ``None`` (start afresh) for a missing or foreign one."""
        if not cursor:
            return None
        try:
            raw = json.loads(cursor)
            return cls(int(raw["from"]), int(raw["next"]))
        except (ValueError, KeyError, TypeError):
            return None

    def resume_point(self, start: int) -> int | None:
        """Where a run that wants candles from ``start`` continues, if this range helps."""
        if self.start <= start <= self.next:
            return self.next
        return None
