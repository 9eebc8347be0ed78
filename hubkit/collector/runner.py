"""The collector's main loop: open the feeds of a ``Plan``, sync the polled ones on time,
write heartbeats, and stop cleanly when asked.

The runner knows no exchange: ``open_feed(job, store)`` (given by the caller) turns each
``Job`` into a ``Feed``. A live feed streams on its own from the moment it is opened; a
polled feed syncs once per ``feed.sync()``, on the caller's thread, one job at a time.
Heartbeats are written by a thread of their own, so a long sync round (a klines backfill)
does not make the collector look dead. Stopping (``stop`` set, e.g. by SIGTERM): the sync in
progress finishes, every feed is closed (a live sink writes what it received), the status
row says ``stopped`` and ``run`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from hubkit.collector.board import CollectorBoard, CollectorRecord, health
from hubkit.collector.plan import Job, Plan

if TYPE_CHECKING:
    from hubkit.store import Store

__all__ = ["Collector", "Feed", "OpenFeed", "first_line"]

log = logging.getLogger("hubkit.collector")


class Feed(Protocol):
    """One job at work. ``sync()``: one round of a polled job, returns the rows it synced
    (raises when the round failed); never called for a live job. ``rows()``: rows a live
    feed received so far; ``lag()``: seconds its newest row arrived after its own time;
    ``take_errors()``: errors reported in the background since the last call (called from
    the heartbeat thread); ``close()``: flush and release."""

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


class Collector:
    """Runs ``plan`` into ``store`` under the name ``name`` until ``stop`` is set.

    ``open_feed`` builds each job's feed. Counters (rows, errors) start at zero with each
    run; the status row keeps the name, so a restart replaces its row.
    """

    def __init__(self, plan: Plan, store: Store, name: str, open_feed: OpenFeed) -> None:
        self.plan = plan
        self.store = store
        self.name = name
        self._open_feed = open_feed
        self._lock = threading.Lock()  # feeds, counters and the board, shared with the beats
        self._feeds: list[tuple[Job, Feed]] = []
        self._polled_rows = 0
        self._errors = 0
        self._last_error: str | None = None
        self._board: CollectorBoard | None = None

    def run(self, stop: threading.Event) -> None:
        """Collect until ``stop`` is set; raises (after writing ``failed`` to the status row)
        when a feed cannot be opened or the store refuses the first status row."""
        record = CollectorRecord.starting(self.name, self.plan.describe(), self.plan.heartbeat)
        board = self._board = CollectorBoard(self.store, record)
        log.info("collector %s started (pid %d), store %s", self.name, record.pid, self.store.url)
        before = board.previous
        if before is not None and health(before) == "running" and before.pid != record.pid:
            log.warning(
                "collector %s seems to run already (host %s, pid %d): two collectors under one "
                "name overwrite each other's status row; give each its own name",
                self.name,
                before.host,
                before.pid,
            )
        beats_stop = threading.Event()
        beats = threading.Thread(target=self._beats, args=(beats_stop,), name="hubkit-heartbeat")
        beats.start()
        try:
            for job in self.plan.jobs:
                if stop.is_set():
                    break
                feed = self._open_feed(job, self.store)
                with self._lock:
                    self._feeds.append((job, feed))
                log.info("%s: %s", "streaming" if job.live else "syncing", job.describe())
            self._loop(stop)
        except BaseException as exc:
            beats_stop.set()
            beats.join()
            self._close_feeds()
            reason = first_line(exc)
            log.error("collector %s failed: %s", self.name, reason)
            with contextlib.suppress(Exception):  # the store may be what failed
                board.stop(failed=reason)
            raise
        beats_stop.set()
        beats.join()
        log.info("stopping: closing %d feed(s)", len(self._feeds))
        self._close_feeds()
        board.stop()
        log.info("collector %s stopped: %d rows", self.name, board.record.rows)

    def _loop(self, stop: threading.Event) -> None:
        """Sync each polled job when it is due, until ``stop``."""
        polled = [(job, feed) for job, feed in self._feeds if not job.live]
        due = [time.monotonic()] * len(polled)
        while not stop.is_set():
            for i in sorted(range(len(polled)), key=due.__getitem__):
                if stop.is_set() or due[i] > time.monotonic():
                    continue
                job, feed = polled[i]
                self._sync(job, feed)
                assert job.every is not None
                due[i] = max(due[i] + job.every, time.monotonic())
            stop.wait(max(0.0, min(due) - time.monotonic()) if due else None)

    def _sync(self, job: Job, feed: Feed) -> None:
        started = time.monotonic()
        try:
            rows = feed.sync()
        except Exception as exc:
            text = first_line(exc)
            self._error(text)
            log.error("%s failed: %s (next try in %gs)", job.describe(), text, job.every)
            return
        with self._lock:
            self._polled_rows += rows
        log.info("%s: %d rows in %.1fs", job.describe(), rows, time.monotonic() - started)

    def _error(self, text: str) -> None:
        with self._lock:
            self._errors += 1
            self._last_error = text

    def _beats(self, stop: threading.Event) -> None:
        while not stop.wait(self.plan.heartbeat):
            self.beat()

    def _take_errors(self) -> None:
        with self._lock:
            feeds = list(self._feeds)
        for job, feed in feeds:
            for text in feed.take_errors():
                self._error(text)
                log.warning("%s: %s", job.describe(), text)

    def beat(self) -> None:
        """Write the heartbeat: rows so far, the largest lag of the live feeds, errors (the
        errors the feeds reported since the last beat are logged first)."""
        self._take_errors()
        with self._lock:
            assert self._board is not None
            rows = self._polled_rows + sum(feed.rows() for _, feed in self._feeds)
            lags = [lag for _, feed in self._feeds if (lag := feed.lag()) is not None]
            lag = max(lags) if lags else None
            try:
                self._board.beat(
                    rows=rows, lag=lag, errors=self._errors, last_error=self._last_error
                )
            except Exception as exc:  # the store is down: keep collecting, say so
                log.error("cannot write the heartbeat: %s", first_line(exc))
                return
        lag_text = "-" if lag is None else f"{lag:.2f}s"
        log.debug("heartbeat: %d rows, lag %s, %d errors", rows, lag_text, self._errors)

    def _close_feeds(self) -> None:
        """Close every feed (newest first); the board's record gets the final counters."""
        with self._lock:
            feeds = list(self._feeds)
        for job, feed in reversed(feeds):
            try:
                feed.close()
            except Exception as exc:
                self._error(first_line(exc))
                log.error("closing %s failed: %s", job.describe(), first_line(exc))
        self._take_errors()
        with self._lock:
            if self._board is not None:
                self._board.record = self._board.record.counted(
                    rows=self._polled_rows + sum(feed.rows() for _, feed in feeds),
                    errors=self._errors,
                    last_error=self._last_error,
                )
            self._feeds.clear()
