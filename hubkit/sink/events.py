"""Change events of one sink: subscriptions, ordered dispatch on hubkit's loop, errors.

Changes are queued in commit order (``queue`` is called under the sink's write lock, right
after the store commit and the cache update) and handed to the handlers on hubkit's loop
thread, one at a time. A handler's exception, and every error from background work, goes to
the error handler (default: a WARNING log line) and never stops the sink.

An async handler (one that returns an awaitable) has at most one call running: changes that
arrive meanwhile wait for it, and consecutive ones of the same source and kind are merged
into one change (their frames concatenated in order), so a handler slower than the stream
gets fewer, larger changes instead of an ever-growing number of pending tasks. Closing the
sink cancels a call still running and logs, per handler, what was not delivered.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hubkit.errors import HubkitError, SyncError, as_hubkit
from hubkit.sink.delivery import append_change
from hubkit.types import Change, ChangeHandler, ErrorHandler

__all__ = ["Events", "Subscription"]

_log = logging.getLogger("hubkit.sink")


class Subscription:
    """A registered change handler. ``close()`` (or leaving its ``with`` block) unsubscribes;
    closing twice is harmless."""

    def __init__(self, events: Events, handler: ChangeHandler) -> None:
        self._events = events
        self.handler = handler
        self.closed = False
        self.running: asyncio.Future[Any] | None = None  # the async call in flight
        self.waiting: list[Change] = []  # changes for the next async call (merged)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._events.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active"
        return f"<Subscription {self.handler!r} on {self._events.name!r} {state}>"


class Events:
    """The handlers of one sink and the order their changes are delivered in."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self._loop = loop
        self._lock = threading.Lock()
        self._handlers: tuple[Subscription, ...] = ()
        self._error_handler: ErrorHandler = self._log_error
        self.background: set[asyncio.Future[Any]] = set()
        self.last_error: str | None = None
        self.closing = False  # no new async handler calls start

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, handler: ChangeHandler) -> Subscription:
        subscription = Subscription(self, handler)
        with self._lock:
            self._handlers = (*self._handlers, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._handlers = tuple(s for s in self._handlers if s is not subscription)

    def clear(self) -> None:
        with self._lock:
            self._handlers = ()

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        self._error_handler = handler or self._log_error

    # -- delivery -----------------------------------------------------------------------------

    def queue(self, change: Change) -> None:
        """Queue a change for the handlers (called under the write lock: commit order)."""
        self.call_soon(self._dispatch, change)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (interpreter exit): nobody is listening
            _log.debug("sink %s: dropped an event, hubkit's loop is closed", self.name)

    def report_error(self, exc: BaseException) -> None:
        """Hand an error to the error handler (on the loop thread); kept as ``last_error``."""
        error = as_hubkit(exc)
        self.last_error = f"{type(error).__name__}: {error}"
        self.call_soon(self._call_error_handler, error)

    def clear_error(self, text: str) -> None:
        """Forget ``last_error`` if it is ``text`` (a newer, different error stays)."""
        if self.last_error == text:
            self.last_error = None

    def _dispatch(self, change: Change) -> None:
        for subscription in self._handlers:
            if subscription.closed:
                continue
            if subscription.running is not None:  # an async call runs: this change waits
                append_change(subscription.waiting, change)
                continue
            self._call(subscription, change)

    def _call(self, subscription: Subscription, change: Change) -> None:
        try:
            outcome = subscription.handler(change)
        except Exception as exc:
            self.report_error(self._handler_error(subscription, exc))
            return
        if not inspect.isawaitable(outcome):
            return
        if self.closing:  # too late to run it: say so instead of leaving it to the collector
            close = getattr(outcome, "close", None)
            if callable(close):
                close()
            self._log_undelivered(subscription, [change], running=False)
            return
        task = asyncio.ensure_future(outcome)
        subscription.running = task
        self.background.add(task)
        task.add_done_callback(lambda done: self._handler_task_done(subscription, done))

    def _handler_task_done(self, subscription: Subscription, task: asyncio.Future[Any]) -> None:
        self.background.discard(task)
        subscription.running = None
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self.report_error(self._handler_error(subscription, exc))
        if subscription.waiting and not subscription.closed and not self.closing:
            change = subscription.waiting.pop(0)
            self._call(subscription, change)

    def abandon_async(self) -> None:
        """The sink is closing: log, per async handler, the call still running and the
        changes that will not be delivered (the calls are cancelled next)."""
        self.closing = True
        for subscription in self._handlers:
            running = subscription.running is not None and not subscription.running.done()
            if running or subscription.waiting:
                self._log_undelivered(subscription, subscription.waiting, running=running)
            subscription.waiting = []

    def _log_undelivered(
        self, subscription: Subscription, changes: list[Change], *, running: bool
    ) -> None:
        rows = sum(change.frame.height for change in changes)
        _log.warning(
            "sink %s: closing%s; %d change(s) (%d rows) not delivered to change handler %r",
            self.name,
            " cancels a running call" if running else "",
            len(changes),
            rows,
            subscription.handler,
        )

    @staticmethod
    def _handler_error(subscription: Subscription | None, exc: BaseException) -> HubkitError:
        if isinstance(exc, HubkitError):
            return exc
        where = f" {subscription.handler!r}" if subscription is not None else ""
        error = SyncError(f"change handler{where} raised {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    def _call_error_handler(self, error: HubkitError) -> None:
        try:
            self._error_handler(error)
        except Exception:
            _log.exception("sink %s: the error handler raised", self.name)

    def _log_error(self, exc: HubkitError) -> None:
        _log.warning("sink %s: %s: %s", self.name, type(exc).__name__, exc)
