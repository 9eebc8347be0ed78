"""Kline backfill: time arithmetic, paging, resuming, and kill -9 at random moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from hubkit.bybit import klines as k
from hubkit.bybit.backfill import BackfillResult, backfill_klines
from hubkit.bybit.entities import KLINE_KEY, Kline
from hubkit.bybit.presets import kline_table
from hubkit.entity import reflect
from hubkit.store import Store
from hubkit.testing.bybit import BybitSimulator

MINUTE = 60_000
HOUR = 60 * MINUTE


def ms(text: str) -> int:
    return k.to_ms(text)


# -- pure time arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "at", "up", "down"),
    [
        ("1", "2024-01-03T05:07:30Z", "2024-01-03T05:08:00Z", "2024-01-03T05:07:00Z"),
        ("60", "2024-01-03T05:07:00Z", "2024-01-03T06:00:00Z", "2024-01-03T05:00:00Z"),
        ("60", "2024-01-03T05:00:00Z", "2024-01-03T05:00:00Z", "2024-01-03T05:00:00Z"),
        ("D", "2024-01-03T05:07:00Z", "2024-01-04T00:00:00Z", "2024-01-03T00:00:00Z"),
        ("W", "2024-01-03T05:07:00Z", "2024-01-08T00:00:00Z", "2024-01-01T00:00:00Z"),  # Mondays
        ("M", "2024-01-03T05:07:00Z", "2024-02-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("M", "2024-12-03T00:00:00Z", "2025-01-01T00:00:00Z", "2024-12-01T00:00:00Z"),
    ],
)
def test_alignment(interval: str, at: str, up: str, down: str) -> None:
    assert k.align_up(ms(at), interval) == ms(up)
    assert k.align_down(ms(at), interval) == ms(down)


def test_next_start_and_page_windows() -> None:
    assert k.next_start(ms("2024-01-31"), "M") == ms("2024-02-01")
    assert k.next_start(ms("2024-12-01"), "M") == ms("2025-01-01")
    assert k.next_start(ms("2024-01-01"), "60") == ms("2024-01-01") + HOUR
    # a window never holds more than `limit` candles, whatever the month lengths
    assert k.page_end(0, "1", 1000, 10**15) == 1000 * MINUTE - 1
    assert k.page_end(0, "1", 1000, 5) == 5
    assert k.page_end(0, "M", 12, 10**15) == 12 * 28 * 86_400_000 - 1


def test_time_parsing() -> None:
    assert k.to_ms("2024-01-01") == 1_704_067_200_000
    assert k.to_ms(date(2024, 1, 1)) == 1_704_067_200_000
    assert k.to_ms(datetime(2024, 1, 1)) == 1_704_067_200_000  # naive = UTC
    assert k.to_ms(datetime(2024, 1, 1, tzinfo=UTC)) == 1_704_067_200_000
    assert k.to_ms("1704067200000") == 1_704_067_200_000
    assert k.to_ms(1_704_067_200_000) == 1_704_067_200_000
    with pytest.raises(TypeError):
        k.to_ms(True)
    with pytest.raises(ValueError, match="unknown kline interval"):
        k.interval_ms("2")


def test_coverage_cursor() -> None:
    cov = k.Coverage(100, 500)
    assert k.Coverage.from_cursor(cov.to_cursor()) == cov
    assert k.Coverage.from_cursor(None) is None
    assert k.Coverage.from_cursor("not json") is None
    assert k.Coverage.from_cursor('{"key": 1}') is None
    assert cov.resume_point(100) == 500
    assert cov.resume_point(300) == 500
    assert cov.resume_point(500) == 500  # right at the end: continue from there
    assert cov.resume_point(99) is None
    assert cov.resume_point(501) is None


# -- against the simulator ------------------------------------------------------------------------

SPEC = reflect(Kline, KLINE_KEY)


def stored(
    db: Path, symbol: str = "BTCUSDT", interval: str = "1"
) -> tuple[pl.DataFrame, k.Coverage | None]:
    with Store(db) as store:
        table = store.table(SPEC, name=kline_table("linear", symbol, interval))
        return table.read_all().sort("start"), k.Coverage.from_cursor(table.state().cursor)


def truth(sim: BybitSimulator, symbol: str = "BTCUSDT", interval: str = "1") -> pl.DataFrame:
    return sim.ground_truth("klines").filter(
        (pl.col("category") == "linear")
        & (pl.col("symbol") == symbol)
        & (pl.col("interval") == interval)
    )


def assert_matches_simulator(
    rows: pl.DataFrame, sim: BybitSimulator, first: int, until: int, step: int = MINUTE
) -> None:
    """Stored rows are exactly the simulator's candles starting in [first, until)."""
    starts = [int(t.timestamp() * 1000) for t in rows["start"]]
    assert starts == list(range(first, until, step)), "a gap or a stray candle"
    assert rows.select("start").is_duplicated().sum() == 0
    expected = truth(sim).filter(pl.col("start_ms").is_between(first, until - 1)).sort("start_ms")
    columns = ["open", "high", "low", "close", "volume", "turnover"]
    assert rows.select(columns).equals(expected.select(columns))


def test_backfill_pages_oldest_first_and_reports_progress(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    db = tmp_path / "k.db"
    seen: list[tuple[int, int | None]] = []
    start, end = ms("2024-01-01"), ms("2024-01-01T10:00:00Z") - 1
    result = backfill_klines(
        "BTCUSDT",
        "1",
        start,
        end,
        store=db,
        rest_url=bybit_sim.rest_url,
        limit=100,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert isinstance(result, BackfillResult)
    assert result.complete and not result.resumed
    assert (result.pages, result.rows) == (6, 600)
    assert result.table == "bybit_kline_linear_btcusdt_1"
    assert seen[0] == (0, 600) and seen[-1] == (600, 600)
    rows, cov = stored(db)
    assert cov == k.Coverage(start, end + 1)
    assert_matches_simulator(rows, bybit_sim, start, end + 1)
    assert rows["confirm"].all()
    # the same range again: already covered, no request
    before = bybit_sim.requests["/v5/market/kline"]
    again = backfill_klines("BTCUSDT", "1", start, end, store=db, rest_url=bybit_sim.rest_url)
    assert again.resumed and again.pages == 0
    assert bybit_sim.requests["/v5/market/kline"] == before
    # extending the end fetches only what is new
    longer = backfill_klines(
        "BTCUSDT", "1", start, end + HOUR, store=db, rest_url=bybit_sim.rest_url, progress=False
    )
    assert (longer.pages, longer.rows) == (1, 60)
    rows, cov = stored(db)
    assert cov == k.Coverage(start, end + HOUR + 1)
    assert_matches_simulator(rows, bybit_sim, start, end + HOUR + 1)


def test_earlier_start_joins_the_stored_range(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    url = bybit_sim.rest_url
    t0 = ms("2024-01-01")
    backfill_klines("BTCUSDT", "1", t0 + HOUR, t0 + 3 * HOUR - 1, store=db, rest_url=url)
    before = bybit_sim.requests["/v5/market/kline"]
    result = backfill_klines(
        "BTCUSDT", "1", t0, t0 + 3 * HOUR - 1, store=db, rest_url=url, limit=60, progress=False
    )
    assert bybit_sim.requests["/v5/market/kline"] - before == 1  # only the missing hour
    assert result.complete
    rows, cov = stored(db)
    assert cov == k.Coverage(t0, t0 + 3 * HOUR)
    assert_matches_simulator(rows, bybit_sim, t0, t0 + 3 * HOUR)


@pytest.mark.bybit_sim(time_scale=60.0)
def test_open_candle_is_stored_unconfirmed_and_fetched_again(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    db = tmp_path / "k.db"
    now = bybit_sim.now_ms()
    start = k.align_down(now, "1") - 30 * MINUTE
    result = backfill_klines(
        "BTCUSDT", "1", start, store=db, rest_url=bybit_sim.rest_url, progress=False
    )
    rows, cov = stored(db)
    assert cov is not None
    assert rows.height == (int(rows["start"][-1].timestamp() * 1000) - start) // MINUTE + 1
    unconfirmed = rows.filter(~pl.col("confirm"))
    # the open candle (and one that closed within the last CLOSE_GUARD_MS) stays unconfirmed
    assert 1 <= unconfirmed.height <= 2
    assert unconfirmed["start"].to_list() == rows["start"][-unconfirmed.height :].to_list()
    open_start = int(unconfirmed["start"][0].timestamp() * 1000)
    assert cov.next == open_start == int(result.covered_until.timestamp() * 1000)
    before = bybit_sim.requests["/v5/market/kline"]
    backfill_klines("BTCUSDT", "1", start, store=db, rest_url=bybit_sim.rest_url, progress=False)
    assert bybit_sim.requests["/v5/market/kline"] - before == 1
    assert bybit_sim.request_log[-1][1]["start"] == str(open_start)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not 'option'"):
        backfill_klines("BTC", "1", 0, category="option", store=tmp_path / "k.db")
    with pytest.raises(ValueError, match="limit"):
        backfill_klines("BTCUSDT", "1", 0, limit=0, store=tmp_path / "k.db")


# -- kill -9 ------------------------------------------------------------------------------------


CHILD = """
import sys
from hubkit.bybit.backfill import backfill_klines

def ready(done, total, said=[]):
    if not said:
        said.append(True)
        print("ready", flush=True)   # imports done, store open: the backfill starts now

db, url, start, end, limit = sys.argv[1:6]
backfill_klines("BTCUSDT", "1", int(start), int(end), store=db, rest_url=url,
                limit=int(limit), progress=ready)
print("done", flush=True)
"""


def test_kill_9_at_random_moments_leaves_no_gap(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    """A process backfilling klines is killed with SIGKILL at >= 10 random moments; after each
    kill the stored candles are exactly the simulator's over the cursor's range (no gap, no
    duplicate) and the cursor never moves back; a final run completes the range."""
    db = tmp_path / "k.db"
    start, end = ms("2024-01-01"), ms("2024-01-04") - 1  # 4,320 one-minute candles
    bybit_sim.faults.http_path = "/v5/market/kline"
    bybit_sim.faults.slow_response_seconds = 0.02  # ~30 ms a page of 20: killed mid-way
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    args = [str(db), bybit_sim.rest_url, str(start), str(end), "20"]
    kills_mid_way = 0
    last_next = start
    for cycle in range(11):
        what = f"seed {seed}, cycle {cycle}"
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", what
            try:
                child.wait(timeout=rng.uniform(0.0, 0.6))  # a random moment ...
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)  # ... then kill -9
                kills_mid_way += 1
            child.wait()
        rows, cov = stored(db)
        if cov is None:
            assert rows.height == 0, what
            continue
        assert cov.start == start, what
        assert cov.next >= last_next, what  # never moves back
        last_next = cov.next
        assert_matches_simulator(rows, bybit_sim, start, min(cov.next, end + 1))
    assert kills_mid_way >= 10, f"seed {seed}: only {kills_mid_way} kills landed mid-backfill"
    assert start < last_next <= end, f"seed {seed}: the kills left nothing to resume"
    bybit_sim.faults.slow_response_seconds = 0.0
    result = backfill_klines(
        "BTCUSDT", "1", start, end, store=db, rest_url=bybit_sim.rest_url, progress=False
    )
    assert result.resumed and result.complete
    rows, cov = stored(db)
    assert cov == k.Coverage(start, end + 1)
    assert_matches_simulator(rows, bybit_sim, start, end + 1)
