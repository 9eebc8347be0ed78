"""The collector's main loop: open the feeds of a ``Plan``, sync the polled ones on time,
write heartbeats, and stop cleanly when asked.

The runner knows no exchange: ``open_feed(job, store)`` (given by the caller) turns each
``Job`` into a ``Feed``. A live feed streams on its own from the moment it is opened; a
polled feed syncs once per ``feed.sync()``. Stopping (``stop`` set, e.g. by SIGTERM): the
sync in progress finishes, every feed is closed (a live sink writes what it received and
commits its cursor), the status row says ``stopped`` and ``run`` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hubkit.collector.board import CollectorBoard, CollectorRecord
from hubkit.collector.plan import Job, Plan

if TYPE_CHECKING:
    from hubkit.store import Store

__all__ = ["Collector", "Feed", "OpenFeed", "first_line"]

log = logging.getLogger("hubkit.collector")


class Feed(Protocol):
    """One job at work. ``sync()``: one round of a polled job, returns the rows it synced
    (raises when the round failed); never called for a live job. ``rows()``: rows a live
    feed received so far; ``lag()``: seconds its newest row arrived after its own time;
    ``take_errors()``: errors reported in the background since the last call; ``close()``:
    flush and release."""

    def sync(self) -> int: ...

    def rows(self) -> int: ...

    def lag(self) -> float | None: ...

    def take_errors(self) -> list[str]: ...

    def close(self) -> None: ...


OpenFeed = Callable[[Job, "Store"], Feed]


def first_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class _Counters:
    polled_rows: int = 0
    errors: int = 0
    last_error: str | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text


class Collector:
    """Runs ``plan`` into ``store`` under the name ``name`` until ``stop`` is set.

    ``open_feed`` builds each job's feed. ``clock`` (monotonic seconds) is for tests.
    """

    def __init__(
        self,
        plan: Plan,
        store: Store,
        name: str,
        open_feed: OpenFeed,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.store = store
        self.name = name
        self._open_feed = open_feed
        self._clock = clock
        self._counters = _Counters()
        self._feeds: list[tuple[Job, Feed]] = []
        self._board: CollectorBoard | None = None

    def run(self, stop: threading.Event) -> None:
        """Collect until ``stop`` is set; raises (after writing ``failed`` to the status row)
        when a feed cannot be opened or the store refuses the status row."""
        record = CollectorRecord.starting(self.name, self.plan.describe(), self.plan.heartbeat)
        self._board = CollectorBoard(self.store, record)
        log.info("collector %s started (pid %d), store %s", self.name, record.pid, self.store.url)
        try:
            for job in self.plan.jobs:
                if stop.is_set():
                    break
                self._feeds.append((job, self._open_feed(job, self.store)))
                log.info("%s: %s", "streaming" if job.live else "syncing", job.describe())
            self._loop(stop)
        except BaseException as exc:
            self._close_feeds()
            reason = first_line(exc)
            log.error("collector %s failed: %s", self.name, reason)
            with contextlib.suppress(Exception):  # the store may be what failed
                self._board.stop(failed=reason)
            raise
        log.info("stopping: closing %d feed(s)", len(self._feeds))
        self._close_feeds()
        self._board.stop()
        log.info("collector %s stopped: %d rows", self.name, self._board.record.rows)

    def _loop(self, stop: threading.Event) -> None:
        now = self._clock()
        due = {i: now for i, (job, _) in enumerate(self._feeds) if not job.live}
        next_beat = now + self.plan.heartbeat
        while not stop.is_set():
            for i in sorted(due, key=due.__getitem__):
                if stop.is_set() or due[i] > self._clock():
                    continue
                job, feed = self._feeds[i]
                self._sync(job, feed)
                assert job.every is not None
                due[i] = max(due[i] + job.every, self._clock())
            self._collect_errors()
            if self._clock() >= next_beat:
                self.beat()
                next_beat = self._clock() + self.plan.heartbeat
            wake = min([next_beat, *due.values()])
            stop.wait(max(0.0, wake - self._clock()))

    def _sync(self, job: Job, feed: Feed) -> None:
        started = self._clock()
        try:
            rows = feed.sync()
        except Exception as exc:
            text = first_line(exc)
            self._counters.error(text)
            log.error("%s failed: %s (next try in %gs)", job.describe(), text, job.every)
            return
        self._counters.polled_rows += rows
        log.info("%s: %d rows in %.1fs", job.describe(), rows, self._clock() - started)

    def _collect_errors(self) -> None:
        for job, feed in self._feeds:
            for text in feed.take_errors():
                self._counters.error(text)
                log.warning("%s: %s", job.describe(), text)

    def beat(self) -> None:
        """Write the heartbeat: rows so far, the largest lag of the live feeds, errors."""
        assert self._board is not None
        rows = self._counters.polled_rows + sum(feed.rows() for _, feed in self._feeds)
        lags = [lag for _, feed in self._feeds if (lag := feed.lag()) is not None]
        lag = max(lags) if lags else None
        try:
            self._board.beat(
                rows=rows,
                lag=lag,
                errors=self._counters.errors,
                last_error=self._counters.last_error,
            )
        except Exception as exc:  # the store is down: keep collecting, say so
            log.error("cannot write the heartbeat: %s", first_line(exc))
            return
        lag_text = "-" if lag is None else f"{lag:.2f}s"
        log.debug("heartbeat: %d rows, lag %s, %d errors", rows, lag_text, self._counters.errors)

    def _close_feeds(self) -> None:
        for job, feed in reversed(self._feeds):
            try:
                feed.close()
            except Exception as exc:
                self._counters.error(first_line(exc))
                log.error("closing %s failed: %s", job.describe(), first_line(exc))
        self._collect_errors_of_closed()
        if self._board is not None:
            rows = self._counters.polled_rows + sum(feed.rows() for _, feed in self._feeds)
            self._board.record = _with(self._board.record, rows, self._counters)
        self._feeds.clear()

    def _collect_errors_of_closed(self) -> None:
        for _, feed in self._feeds:
            for text in feed.take_errors():
                self._counters.error(text)


def _with(record: CollectorRecord, rows: int, counters: _Counters) -> CollectorRecord:
    return dataclasses.replace(
        record, rows=rows, errors=counters.errors, last_error=counters.last_error
    )
