"""The collector's runner and status table on a real SQLite store, with feeds that record
what the runner asks of them (the runner knows no exchange)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hubkit.collector import (
    Collector,
    CollectorRecord,
    DatasetRule,
    Job,
    Plan,
    health,
    parse_plan,
    read_collectors,
)
from hubkit.collector.board import collectors_spec
from hubkit.errors import RemoteError
from hubkit.store import Store

pytestmark = pytest.mark.timeout(60)

RULES = {
    "prices": DatasetRule("prices", default_every=0.05),
    "live": DatasetRule("live", live=True),
}


class RecordingFeed:
    """Answers ``sync`` with ``rows`` (or raises what ``failures`` holds next)."""

    def __init__(self, job: Job, rows: int = 3, failures: list[Exception] | None = None) -> None:
        self.job = job
        self.rows_per_sync = rows
        self.failures = failures or []
        self.syncs = 0
        self.received = 0
        self.errors: list[str] = []
        self.closed = False

    def sync(self) -> int:
        self.syncs += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.rows_per_sync

    def rows(self) -> int:
        return self.received

    def lag(self) -> float | None:
        return 0.25 if self.job.live else None

    def take_errors(self) -> list[str]:
        taken, self.errors = self.errors, []
        return taken

    def close(self) -> None:
        self.closed = True


def _until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _record(path: Path) -> CollectorRecord:
    with Store(path) as store:
        (record,) = read_collectors(store)
    return record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "c.db") as st:
        yield st


def _running(collector: Collector) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop = threading.Event()
    failed: list[BaseException] = []

    def target() -> None:
        try:
            collector.run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, stop, failed


def test_polls_on_time_beats_and_stops_cleanly(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = parse_plan("store = 'c.db'\nheartbeat = 0.05\n[prices]\n[live]\n", RULES)
    feeds: list[RecordingFeed] = []

    def open_feed(job: Job, st: Store) -> RecordingFeed:
        assert st is store
        feeds.append(RecordingFeed(job))
        return feeds[-1]

    caplog.set_level(logging.INFO, logger="hubkit.collector")
    thread, stop, failed = _running(Collector(plan, store, "c1", open_feed))
    _until(lambda: len(feeds) == 2 and feeds[0].syncs >= 3, "three rounds of the polled feed")
    polled, live = feeds
    live.received = 40
    _until(lambda: _record(tmp_path / "c.db").rows >= 40 + 3 * 3, "a heartbeat with the rows")
    beat = _record(tmp_path / "c.db")
    assert (beat.id, beat.state, health(beat), beat.lag) == ("c1", "running", "running", 0.25)
    assert beat.collects == "prices every 0.05s; live"
    assert live.syncs == 0  # a live feed streams on its own
    stop.set()
    thread.join(20)
    assert not thread.is_alive() and not failed
    assert polled.closed and live.closed
    final = _record(tmp_path / "c.db")
    assert final.state == "stopped" and health(final) == "stopped"
    assert final.rows == 40 + 3 * polled.syncs
    assert final.heartbeat >= beat.heartbeat
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("collector c1 started")
    assert messages[-1] == f"collector c1 stopped: {final.rows} rows"


def test_a_failed_round_is_counted_and_retried(store: Store, tmp_path: Path) -> None:
    plan = parse_plan("store = 'c.db'\nheartbeat = 0.05\n[prices]\n", RULES)
    feeds: list[RecordingFeed] = []

    def open_feed(job: Job, st: Store) -> RecordingFeed:
        feeds.append(RecordingFeed(job, failures=[RemoteError("HTTP 503 from the exchange")]))
        return feeds[-1]

    thread, stop, failed = _running(Collector(plan, store, "c2", open_feed))
    _until(lambda: bool(feeds) and feeds[0].syncs >= 2, "a second round after the failure")
    feeds[0].errors.append("TransportError: reconnecting")
    _until(lambda: _record(tmp_path / "c.db").errors == 2, "both errors in the status row")
    stop.set()
    thread.join(20)
    assert not failed
    final = _record(tmp_path / "c.db")
    assert (final.state, final.errors, final.last_error) == (
        "stopped",
        2,
        "TransportError: reconnecting",
    )


def test_a_feed_that_cannot_open_fails_the_collector(store: Store, tmp_path: Path) -> None:
    plan = parse_plan("store = 'c.db'\n[prices]\n[live]\n", RULES)
    opened: list[RecordingFeed] = []

    def open_feed(job: Job, st: Store) -> RecordingFeed:
        if job.live:
            raise RemoteError("cannot subscribe to live")
        opened.append(RecordingFeed(job))
        return opened[-1]

    with pytest.raises(RemoteError):
        Collector(plan, store, "c3", open_feed).run(threading.Event())
    assert opened[0].closed  # what was opened is closed again
    final = _record(tmp_path / "c.db")
    assert (final.state, final.last_error) == ("failed", "RemoteError: cannot subscribe to live")
    assert health(final) == "failed"


def test_health_of_a_silent_collector() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    record = CollectorRecord.starting("x", "trades", 10.0, now=now - timedelta(seconds=29))
    assert health(record, now) == "running"
    assert health(record, now + timedelta(seconds=2)) == "not running (no heartbeat for 31s)"
    assert health(record, now + timedelta(hours=3)) == "not running (no heartbeat for 3h)"
    assert health(replace(record, state="stopped"), now + timedelta(hours=3)) == "stopped"


def test_a_restart_under_the_same_name_replaces_the_row(store: Store, tmp_path: Path) -> None:
    plan: Plan = parse_plan("store = 'c.db'\n[live]\n", RULES)
    for _ in range(2):
        stop = threading.Event()
        stop.set()
        Collector(plan, store, "same", lambda job, st: RecordingFeed(job)).run(stop)
    with Store(tmp_path / "c.db") as other:
        assert [r.id for r in read_collectors(other)] == ["same"]


class BlockingFeed(RecordingFeed):
    """A sync round that lasts until ``release`` is set (a long backfill)."""

    def __init__(self, job: Job) -> None:
        super().__init__(job)
        self.release = threading.Event()
        self.inside = threading.Event()

    def sync(self) -> int:
        self.inside.set()
        assert self.release.wait(30)
        return super().sync()


def test_heartbeats_go_on_during_a_long_round(store: Store, tmp_path: Path) -> None:
    plan = parse_plan("store = 'c.db'\nheartbeat = 0.05\n[prices]\n", RULES)
    feeds: list[BlockingFeed] = []

    def open_feed(job: Job, st: Store) -> BlockingFeed:
        feeds.append(BlockingFeed(job))
        return feeds[-1]

    thread, stop, failed = _running(Collector(plan, store, "slow", open_feed))
    _until(lambda: bool(feeds) and feeds[0].inside.is_set(), "the round under way")
    first = _record(tmp_path / "c.db").heartbeat
    _until(lambda: _record(tmp_path / "c.db").heartbeat > first, "a heartbeat during the round")
    stop.set()  # the round in progress finishes first
    feeds[0].release.set()
    thread.join(20)
    assert not failed and feeds[0].syncs == 1 and feeds[0].closed
    assert _record(tmp_path / "c.db").rows == 3


def test_a_second_collector_under_a_running_name_is_warned_about(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = parse_plan("store = 'c.db'\nheartbeat = 60\n[live]\n", RULES)
    with Store(tmp_path / "c.db") as other:
        elsewhere = CollectorRecord.starting("twin", "live", 60.0)
        other.table(collectors_spec()).upsert([replace(elsewhere, host="h2", pid=1)])
    stop = threading.Event()
    stop.set()
    caplog.set_level(logging.WARNING, logger="hubkit.collector")
    Collector(plan, store, "twin", lambda job, st: RecordingFeed(job)).run(stop)
    assert "collector twin seems to run already (host h2, pid 1)" in caplog.text
