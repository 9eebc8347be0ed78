"""Acceptance: bursts of HTTP 5xx, 429 and ByBit 10006 during periodic syncs of instruments.

Every sync completes with exactly the simulator's instruments, and every wait the connection
took is what the answer said: ``Retry-After`` seconds after a 429, the time left until
``X-Bapi-Limit-Reset-Timestamp`` after a 10006, a bounded jittered backoff after a 5xx.
Waits are recorded through ``RetryPolicy(sleep=..., clock=...)`` (and really slept: the
headers ask for 0.2 s); nothing here measures time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from hubkit.bybit.entities import INSTRUMENT_KEY, Instrument
from hubkit.bybit.presets import CATEGORIES, INSTRUMENT_TABLE
from hubkit.bybit.rest import BybitRest
from hubkit.connections import Backoff, RetryPolicy
from hubkit.errors import HubkitError
from hubkit.policies import PeriodicSync
from hubkit.sink import open_sink
from hubkit.testing.bybit import BybitSimulator
from hubkit.types import Change, Op, Source

PATH = "/v5/market/instruments-info"
BACKOFF = Backoff(base=0.01, cap=0.05)
WAIT_S = 0.2  # what the simulator's headers ask for: Retry-After 0.2, reset 200 ms ahead


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic()
    status: int
    headers: dict[str, str]
    ret_code: int | None


class Log:
    """The connection's answers, clock readings and sleeps, in the order they happened."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, value: Any) -> None:
        with self._lock:
            self.events.append((kind, value))

    def snapshot(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.events)

    def clock(self) -> float:
        now = time.time()
        self.add("clock", now)
        return now

    async def sleep(self, seconds: float) -> None:
        self.add("sleep", seconds)
        await asyncio.sleep(seconds)


class RecordingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, noting every answer (status, headers, ByBit retCode)."""

    def __init__(self, log: Log) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        code: int | None = None
        if response.status_code == 200:
            code = int(json.loads(body)["retCode"])
        headers = {k.lower(): v for k, v in response.headers.items()}
        self._log.add("answer", Answer(time.monotonic(), response.status_code, headers, code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _kind(answer: Answer) -> str:
    if answer.status >= 500:
        return "5xx"
    if answer.status == 429:
        return "429"
    if answer.ret_code == 10006:
        return "10006"
    assert answer.status == 200 and answer.ret_code == 0, answer
    return "ok"


def check_waits(events: list[tuple[str, Any]]) -> dict[str, list[float]]:
    """Each fault answer is followed by exactly one wait, the one its headers ask for; no
    other wait happens. Returns the waits by fault kind."""
    waits: dict[str, list[float]] = {"5xx": [], "429": [], "10006": []}
    expected: tuple[str, float | None] | None = None  # (kind, exact wait or None for backoff)
    clock_for: Answer | None = None  # a 10006 whose envelope has not read the clock yet
    for index, (kind, value) in enumerate(events):
        if kind == "answer":
            assert expected is None, f"event {index}: an answer before the wait for {expected}"
            fault = _kind(value)
            if fault == "429":
                expected = ("429", float(value.headers["retry-after"]))
            elif fault == "10006":
                clock_for = value
            elif fault == "5xx":
                expected = ("5xx", None)
        elif kind == "clock" and clock_for is not None:
            # the envelope rule reads the clock once, right after the answer arrived
            reset_ms = float(clock_for.headers["x-bapi-limit-reset-timestamp"])
            expected = ("10006", max(0.0, reset_ms / 1000.0 - value))
            clock_for = None
        elif kind == "sleep":
            assert expected is not None, f"event {index}: a wait of {value} s nobody asked for"
            fault, exact = expected
            if exact is None:
                assert 0.0 <= value <= BACKOFF.cap, f"event {index}: backoff {value}"
            else:
                assert value == exact, f"event {index}: waited {value} s, {fault} said {exact} s"
            waits[fault].append(value)
            expected = None
    assert expected is None and clock_for is None, "the last fault was never waited for"
    return waits


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def _served_instruments(sim: BybitSimulator) -> pl.DataFrame:
    async with BybitRest(sim.rest_url, rate_limit=None) as rest:
        return await rest.instruments(list(CATEGORIES))


@pytest.mark.bybit_sim(seed=3)
def test_periodic_sync_completes_through_5xx_429_and_10006_bursts(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    faults = bybit_sim.faults
    faults.http_path = PATH
    faults.retry_after_seconds = WAIT_S
    faults.rate_limit_reset_ms = int(WAIT_S * 1000)
    # the first requests get 3 x 503, then 3 x 429, then 3 x retCode 10006 (the server's order)
    faults.http_5xx_next, faults.http_429_next, faults.rate_limit_next = 3, 3, 3

    log = Log()
    retry = RetryPolicy(retries=12, backoff=BACKOFF, max_wait=5.0, sleep=log.sleep, clock=log.clock)
    rest = BybitRest(
        bybit_sim.rest_url, retries=retry, rate_limit=None, transport=RecordingTransport(log)
    )
    errors: list[HubkitError] = []
    synced: list[float] = []  # time.monotonic() of each stored snapshot

    def on_change(change: Change) -> None:
        if change.source is Source.REMOTE and change.op is Op.UPSERT:
            synced.append(time.monotonic())

    def last_fault_at() -> float:
        answers = [v for k, v in log.snapshot() if k == "answer" and _kind(v) != "ok"]
        return max(a.at for a in answers)

    policy = PeriodicSync(interval=timedelta(seconds=1), params={"category": list(CATEGORIES)})
    with open_sink(
        Instrument,
        INSTRUMENT_KEY,
        store=tmp_path / "h.db",
        connection=rest,
        policy=policy,
        table=INSTRUMENT_TABLE,
    ) as sink:
        sink.set_error_handler(errors.append)
        sink.subscribe(on_change)
        # burst 1: the first sync (query on start) goes through all nine faults
        wait_until(lambda: bool(synced) and synced[-1] > last_fault_at(), "the first sync")
        assert bybit_sim.fault_counts.get("http_10006") == 3
        # burst 2, mixed in while the sink runs: the next periodic sync meets them
        faults.http_5xx_next, faults.http_429_next, faults.rate_limit_next = 2, 2, 2
        wait_until(lambda: bybit_sim.fault_counts.get("http_10006") == 5, "the second burst")
        wait_until(lambda: synced[-1] > last_fault_at(), "the sync after the second burst")
        stored = sink.dao.query()
        status = sink.status()
    faults.reset()

    assert errors == [], errors  # no sync failed: every fault was waited out inside the fetch
    counts = bybit_sim.fault_counts
    assert (counts["http_5xx"], counts["http_429"], counts["http_10006"]) == (5, 5, 5)
    waits = check_waits(log.snapshot())
    assert len(waits["5xx"]) == len(waits["429"]) == len(waits["10006"]) == 5
    assert waits["429"] == [WAIT_S] * 5
    assert all(0.0 <= w <= WAIT_S for w in waits["10006"])

    served = asyncio.run(_served_instruments(bybit_sim))
    order = list(INSTRUMENT_KEY)
    assert stored.height == served.height == status.rows
    assert sorted(stored["category"].unique()) == sorted(CATEGORIES)
    assert stored.sort(order).equals(served.select(stored.columns).sort(order))
