"""Retry, backoff, rate-limit parsing and the token bucket: pure logic, no sockets, no sleeping."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from hubkit.bybit.envelope import BYBIT_RATE_LIMIT_HEADERS
from hubkit.connections.retry import (
    Backoff,
    RateLimitHeaders,
    RateLimitInfo,
    RetryPolicy,
    TokenBucket,
    parse_reset_timestamp,
    parse_retry_after,
)
from hubkit.errors import ProtocolError, RateLimited, RemoteTimeout, TransportError


class FakeTime:
    """A clock that only moves when something sleeps on it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backoff_is_exponential_and_capped_without_jitter() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=3.0, jitter=False)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.ceiling(10_000) == 3.0  # no overflow on long outages


def test_full_jitter_stays_within_the_ceiling_and_spreads() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=8.0, rng=random.Random(7))
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 4.0  # full jitter, not a fixed step


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


def test_wait_for_follows_the_rules() -> None:
    policy = RetryPolicy(retries=2, backoff=Backoff(base=1.0, jitter=False), max_wait=30.0)
    assert policy.wait_for(TransportError("down"), 0) == 1.0
    assert policy.wait_for(RemoteTimeout("slow"), 1) == 2.0
    assert policy.wait_for(ProtocolError("boom", status=503), 0) == 1.0
    assert policy.wait_for(RateLimited("wait", retry_after=12.5), 0) == 12.5
    # A wait longer than max_wait goes back to the caller as the RateLimited error.
    assert policy.wait_for(RateLimited("ban", retry_after=600.0), 0) is None
    assert policy.wait_for(ProtocolError("bad request", status=400), 0) is None
    assert policy.wait_for(TransportError("down"), 2) is None  # retries used up


def test_retry_after_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-4", now) == 0.0
    date = format_datetime(datetime.fromtimestamp(now + 120, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(120.0)
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None


def test_reset_timestamp_is_epoch_milliseconds() -> None:
    assert parse_reset_timestamp("1672738136324", 1672738134.824) == pytest.approx(1.5)
    assert parse_reset_timestamp("1672738134000", 1672738134.824) == 0.0  # in the past
    assert parse_reset_timestamp(None, 0.0) is None
    assert parse_reset_timestamp("x", 0.0) is None


def test_rate_limit_info_from_bybit_headers() -> None:
    headers = httpx.Headers(
        {
            "X-Bapi-Limit": "10",
            "X-Bapi-Limit-Status": "9",
            "x-bapi-limit-reset-timestamp": "1672738134824",
        }
    )
    info = RateLimitInfo.from_headers(headers, BYBIT_RATE_LIMIT_HEADERS)
    assert info == RateLimitInfo(limit=10, remaining=9, reset_at=1672738134.824)
    assert RateLimitInfo.from_headers(httpx.Headers({}), BYBIT_RATE_LIMIT_HEADERS) is None


def test_rate_limit_headers_are_read_only_where_named() -> None:
    headers = httpx.Headers({"RateLimit-Limit": "100", "X-Bapi-Limit": "10"})
    names = RateLimitHeaders("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset-Ms")
    assert RateLimitInfo.from_headers(headers, names) == RateLimitInfo(100, None, None)


@pytest.mark.anyio
async def test_token_bucket_spaces_requests() -> None:
    clock = FakeTime()
    bucket = TokenBucket(2.0, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await bucket.acquire()
    # Two go out at once (the burst), then one every half second.
    assert clock.sleeps == pytest.approx([0.5, 0.5, 0.5])


@pytest.mark.anyio
async def test_token_bucket_pause_holds_everyone() -> None:
    clock = FakeTime()
    bucket = TokenBucket(100.0, burst=10, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    bucket.pause(3.0)
    bucket.pause(1.0)  # never shortens a pause
    await bucket.acquire()
    assert clock.sleeps == [3.0]


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
