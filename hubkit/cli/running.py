"""Running a command for a while: signals as interrupts, an interruptible wait, and the
counters a command keeps of what its sinks report."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from hubkit.cli.output import first_line

if TYPE_CHECKING:
    from hubkit.types import Change

__all__ = ["ErrorLog", "Interrupted", "RowCounter", "signals_as_interrupt", "wait"]


class Interrupted(KeyboardInterrupt):
    """``KeyboardInterrupt`` raised by ``signals_as_interrupt``; ``signum`` says which
    signal (a command may end differently when asked to stop than when interrupted)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_as_interrupt(*signals: signal.Signals) -> Iterator[None]:
    """Raise ``Interrupted`` (a ``KeyboardInterrupt``) in the main thread on these signals
    (SIGTERM is what schedulers send to stop a job; SIGINT is ignored in background jobs of
    a script unless a handler is installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except (ValueError, OSError):  # not allowed here (an embedding interpreter)
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait(seconds: float) -> None:
    """Sleep ``seconds`` (``math.inf``: until interrupted) in short steps, so that Ctrl-C and
    SIGTERM are handled promptly on every platform."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


class RowCounter:
    """Counts the rows of REMOTE upserts a sink reports (its handler runs on hubkit's loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.by_symbol: dict[str, int] = {}
        self.gaps = 0

    def __call__(self, change: Change) -> None:
        from hubkit.types import Op, Source

        if change.op is Op.GAP:
            with self._lock:
                self.gaps += 1
            return
        if change.source is not Source.REMOTE or change.op is not Op.UPSERT:
            return
        frame = change.frame
        counts: dict[str, int] = {}
        if "symbol" in frame.columns:
            for symbol, n in frame.get_column("symbol").value_counts().iter_rows():
                counts[str(symbol)] = int(n)
        with self._lock:
            self.rows += frame.height
            for symbol, n in counts.items():
                self.by_symbol[symbol] = self.by_symbol.get(symbol, 0) + n


class ErrorLog:
    """Keeps the errors a sink hands to its error handler (background sync failures).

    ``lost`` are those after which data may be missing: everything except a remote that
    could not be reached for a while (the sink reconnects and fills the gap itself).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[BaseException] = []

    def __call__(self, exc: BaseException) -> None:
        with self._lock:
            self._items.append(exc)

    @property
    def items(self) -> list[str]:
        """Every error as ``"Type: first line"``, oldest first."""
        with self._lock:
            return [_line(exc) for exc in self._items]

    @property
    def last(self) -> str | None:
        """The newest error as ``"Type: first line"``, or None."""
        with self._lock:
            return _line(self._items[-1]) if self._items else None

    @property
    def lost(self) -> list[str]:
        """The errors after which data may be missing (failed writes, rejected data)."""
        from hubkit.errors import RemoteError, TransportError

        with self._lock:
            return [
                _line(exc)
                for exc in self._items
                if not isinstance(exc, TransportError)
                and not (isinstance(exc, RemoteError) and exc.temporary)
            ]


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"
