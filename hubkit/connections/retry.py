"""Retry decisions, backoff with full jitter, rate-limit parsing and a token bucket.

Pure logic: nothing here opens a socket. Time comes from an injectable ``clock`` and waiting
goes through an injectable ``sleep``, so tests assert the waits without sleeping::

    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(retries=3, sleep=record, clock=lambda: 1_700_000_000.0)

Rules (applied by ``RetryPolicy.wait_for``):

- a ``RateLimited`` error waits what the remote asked for (``retry_after``); when that is more
  than ``max_wait`` it is not retried and the caller sees the ``RateLimited`` error;
- any other ``RemoteError`` with ``temporary`` set (connect errors, timeouts, 5xx, temporary
  error codes) waits ``backoff.delay(attempt)``: exponential, capped, with full jitter;
- everything else (permanent errors, or ``retries`` used up) is not retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from hubkit.errors import HubkitError, ParameterError, RateLimited, RemoteError

__all__ = [
    "Backoff",
    "Clock",
    "RateLimitHeaders",
    "RateLimitInfo",
    "RetryPolicy",
    "Sleep",
    "TokenBucket",
    "parse_reset_timestamp",
    "parse_retry_after",
]

Sleep = Callable[[float], Awaitable[None]]
"""``await sleep(seconds)``; ``asyncio.sleep`` by default, a recorder in tests."""

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); rate-limit reset timestamps are wall-clock times."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS blog).

    ``delay(attempt)`` is uniform in ``[0, min(cap, base * factor ** attempt)]``; attempt 0 is the
    first retry. Full jitter spreads reconnecting clients so they do not hit the server in step.
    ``rng`` is injectable for reproducible tests; by default each ``Backoff`` has its own.
    """

    base: float = 0.25
    factor: float = 2.0
    cap: float = 30.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ParameterError("Backoff needs base >= 0, cap >= 0 and factor >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (before jitter)."""
        # Guard the power against overflow for very long outages.
        exponent = min(max(attempt, 0), 64)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ceiling = self.ceiling(attempt)
        return self.rng.uniform(0.0, ceiling) if self.jitter else ceiling


@dataclass(frozen=True)
class RetryPolicy:
    """How a connection retries one request.

    ``retries``: retries after the first try (0 = try once). ``max_wait``: the longest wait hubkit
    accepts from a rate limit; a longer one is raised as ``RateLimited`` for the caller to
    schedule. ``default_rate_wait``: the wait when a rate-limit answer says nothing about when to
    come back. ``ip_ban_wait``: the wait an HTTP 403 IP ban implies (exchanges ask for at least
    10 minutes).
    """

    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    max_wait: float = 60.0
    default_rate_wait: float = 1.0
    ip_ban_wait: float = 600.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False, repr=False)
    clock: Clock = field(default=time.time, compare=False, repr=False)

    def wait_for(self, error: HubkitError, attempt: int) -> float | None:
        """Seconds to wait before retrying after ``error`` on try ``attempt`` (0-based), or None.

        None means: do not retry, raise ``error``.
        """
        if attempt >= self.retries:
            return None
        if isinstance(error, RateLimited):
            wait = max(0.0, error.retry_after)
            return wait if wait <= self.max_wait else None
        if isinstance(error, RemoteError) and error.temporary:
            return self.backoff.delay(attempt)
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delta-seconds or an HTTP-date).

    ``now`` is the current epoch time (used for dates). Returns None when absent or unreadable;
    never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_reset_timestamp(value: str | None, now: float) -> float | None:
    """Seconds until a reset time given in epoch ms (a rate-limit reset header); never negative."""
    if value is None:
        return None
    try:
        reset_ms = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(reset_ms):
        return None
    return max(0.0, reset_ms / 1000.0 - now)


@dataclass(frozen=True)
class RateLimitHeaders:
    """The response headers in which a remote reports its rate limit: the request budget, what
    is left of it, and when it resets (epoch milliseconds)."""

    limit: str
    remaining: str
    reset_ms: str


@dataclass(frozen=True)
class RateLimitInfo:
    """What the remote said about its rate limit on the last response."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # epoch seconds

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], names: RateLimitHeaders
    ) -> RateLimitInfo | None:
        """Read the three headers ``names`` gives.

        ``headers`` must be case-insensitive (``httpx.Headers``) or use those exact spellings.
        Returns None when none of them is present.
        """
        limit = _int_or_none(headers.get(names.limit))
        remaining = _int_or_none(headers.get(names.remaining))
        reset_ms = _int_or_none(headers.get(names.reset_ms))
        if limit is None and remaining is None and reset_ms is None:
            return None
        return cls(limit, remaining, None if reset_ms is None else reset_ms / 1000.0)


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class TokenBucket:
    """An async client-side rate limiter: ``rate`` requests per second, bursts up to ``burst``.

    ``await bucket.acquire()`` returns when a request may go out; concurrent callers are served
    in arrival order. ``pause(seconds)`` blocks every caller for a while (used when the remote
    says it is overloaded, so other requests of the same connection wait too).
    Use from one event loop. ``clock`` here is monotonic time.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ParameterError("TokenBucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst})"

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    def pause(self, seconds: float) -> None:
        """Hold every ``acquire`` until ``seconds`` from now (extends, never shortens, a pause)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def acquire(self) -> None:
        """Wait until one token is available, then take it."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await self._sleep((1.0 - self._tokens) / self.rate)
