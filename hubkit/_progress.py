"""Progress reporting for long work that picks its display from where it runs.

Wrap an iterable as tqdm does, or use a bar as a context manager and update it from any
thread::

    for page in hubkit.progress(pages, "backfill trades"):   # total = len(pages) if it has one
        ...

    with hubkit.progress(total=len(pages), desc="backfill trades") as bar:
        for page in pages:
            ...
            bar.update(len(page))       # thread-safe; redraws are throttled

Long operations that report progress (``hubkit.bybit.backfill_klines``, the ``"klines"``
dataset) take ``progress=``: ``True`` for a hubkit display, ``False`` for none, or a callable
``progress(done, total)`` (``total`` may be None while unknown). To drive a tqdm bar instead,
pass a callable that moves it::

    from tqdm.auto import tqdm

    with tqdm(unit="candle") as bar:
        def report(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        bybit.backfill_klines("BTCUSDT", "60", "2024-01-01", "2024-01-08", progress=report)

Display modes (``mode=``):

- ``"widget"``: an ipywidgets ``IntProgress`` and a label, shown with ``IPython.display``;
- ``"text"``: a text bar on ``file`` (default ``sys.stderr``). An interactive stream gets one
  line redrawn with carriage returns; any other stream (a log file, CI output) gets a plain
  line at most every ``log_interval`` seconds, plus a final line;
- ``"quiet"``: nothing is shown (counts are still kept);
- ``"auto"`` (default): ``$HUBKIT_PROGRESS`` if it names one of the modes above; otherwise
  ``"widget"`` inside a Jupyter kernel, ``"text"`` when ``file`` (or stderr) is a terminal,
  and ``"quiet"`` in non-interactive runs such as cron jobs and logs.

An explicit ``mode`` other than ``"auto"`` wins over the environment variable.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TextIO, TypeVar, overload

__all__ = [
    "Progress",
    "ProgressIterable",
    "ProgressMode",
    "in_jupyter_kernel",
    "progress",
    "resolve_mode",
]

T = TypeVar("T")

ProgressMode = Literal["auto", "widget", "text", "quiet"]

_ENV = "HUBKIT_PROGRESS"
_MODES = ("auto", "widget", "text", "quiet")
_BAR_WIDTH = 24


def in_jupyter_kernel() -> bool:
    """True when running inside a Jupyter (ipykernel) kernel, which a front end may display.

    Never imports IPython or ipykernel itself: both must already be loaded, and
    ``get_ipython()`` must return a shell that has a kernel (terminal IPython has none).
    """
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    get_ipython: Callable[[], Any] | None = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed or odd stream
        return False


def _widgets_importable() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_mode(mode: ProgressMode = "auto", file: TextIO | None = None) -> str:
    """The concrete mode (``"widget"``, ``"text"`` or ``"quiet"``) that ``mode`` means here."""
    if mode not in _MODES:
        raise ValueError(f"progress mode must be one of {_MODES}, not {mode!r}")
    if mode != "auto":
        return mode
    wanted = os.environ.get(_ENV, "").strip().lower()
    if wanted in ("widget", "text", "quiet"):
        return wanted
    if file is None and in_jupyter_kernel():
        # A kernel's streams are no terminals, but front ends render carriage returns.
        return "widget" if _widgets_importable() else "text"
    return "text" if _isatty(sys.stderr if file is None else file) else "quiet"


def _clock_text(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _rate_text(n: int, elapsed: float) -> str:
    if elapsed <= 0:
        return "?/s"
    rate = n / elapsed
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.2f}/s"


def _summary(n: int, total: int | None, elapsed: float) -> str:
    """``450/1000 [00:03<00:04, 123/s]`` or ``450 [00:03, 123/s]`` without a total."""
    rate = _rate_text(n, elapsed)
    if total is None:
        return f"{n:,} [{_clock_text(elapsed)}, {rate}]"
    if 0 < n < total and elapsed > 0:
        remaining = _clock_text((total - n) * elapsed / n)
    else:
        remaining = "?" if n < total else "00:00"
    return f"{n:,}/{total:,} [{_clock_text(elapsed)}<{remaining}, {rate}]"


def _line(desc: str, n: int, total: int | None, elapsed: float) -> str:
    prefix = f"{desc}: " if desc else ""
    if total is None or total <= 0:
        return prefix + _summary(n, total, elapsed)
    fraction = min(1.0, n / total)
    filled = int(fraction * _BAR_WIDTH)
    bar = "█" * filled + " " * (_BAR_WIDTH - filled)
    return f"{prefix}{fraction * 100:3.0f}%|{bar}| {_summary(n, total, elapsed)}"


class _Display(Protocol):
    def draw(self, n: int, total: int | None, elapsed: float) -> None: ...

    def finish(self, n: int, total: int | None, elapsed: float, failed: bool) -> None: ...


class _Quiet:
    def draw(self, n: int, total: int | None, elapsed: float) -> None:
        pass

    def finish(self, n: int, total: int | None, elapsed: float, failed: bool) -> None:
        pass


class _Text:
    """One redrawn line on a terminal; separate lines on anything else."""

    def __init__(self, desc: str, file: TextIO, redraw: bool) -> None:
        self._desc = desc
        self._file = file
        self._redraw = redraw
        self._width = 0

    def draw(self, n: int, total: int | None, elapsed: float) -> None:
        self._write(_line(self._desc, n, total, elapsed), end="")

    def finish(self, n: int, total: int | None, elapsed: float, failed: bool) -> None:
        text = _line(self._desc, n, total, elapsed) + (" (failed)" if failed else "")
        self._write(text, end="\n")

    def _write(self, text: str, end: str) -> None:
        try:
            if self._redraw:
                pad = " " * max(0, self._width - len(text))
                self._file.write("\r" + text + pad + end)
                self._width = 0 if end else len(text)
            else:
                self._file.write(text + "\n")
            self._file.flush()
        except (OSError, ValueError):  # a closed or broken stream must not break the work
            pass


class _Widget:
    """An ``IntProgress`` with a label, displayed once; the display is refreshed when done.

    The display carries a ``text/plain`` line as well as the widget view, so notebooks saved
    by headless runs (where widget messages are dropped) still show the final count.
    """

    def __init__(self, desc: str, total: int | None, display: bool) -> None:
        import ipywidgets as widgets

        self.bar = widgets.IntProgress(
            value=0,
            min=0,
            max=max(total or 0, 1),
            description=desc,
            bar_style="info",
            style={"description_width": "initial"},
        )
        self.label = widgets.Label(value="")
        self.box = widgets.HBox([self.bar, self.label])
        self._desc = desc
        self._text = _line(desc, 0, total, 0.0)
        self._handle: Any = None
        if display:
            try:
                from IPython.display import display as ipy_display
            except ImportError:
                pass
            else:
                show: Callable[..., Any] = ipy_display
                self._handle = show(self, display_id=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.box._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self._text
        return bundle

    def draw(self, n: int, total: int | None, elapsed: float) -> None:
        if total is not None and total > 0:
            self.bar.max = total
            self.bar.value = min(n, total)
        self.label.value = _summary(n, total, elapsed)

    def finish(self, n: int, total: int | None, elapsed: float, failed: bool) -> None:
        self.draw(n, total, elapsed)
        if total is None or total <= 0:
            self.bar.max = 1
            self.bar.value = 1
        self.bar.bar_style = "danger" if failed else "success"
        self._text = _line(self._desc, n, total, elapsed) + (" (failed)" if failed else "")
        if self._handle is not None:
            # The display is a courtesy; the work's result matters more.
            with contextlib.suppress(Exception):
                self._handle.update(self)


class Progress:
    """A thread-safe counter with a throttled display; see ``progress()`` to create one.

    ``update(n)`` adds ``n``; the display redraws at most every ``min_interval`` seconds
    (``log_interval`` for text on a non-terminal stream), always at the first update, on
    ``set_total`` and on ``close()``. ``close()`` draws the final state once; later calls and
    updates after close are ignored. Use it as a context manager: an exception leaving the
    block marks the display as failed and is not swallowed. ``display`` (widget mode) says
    whether to show the widget with ``IPython.display``; default: when in a Jupyter kernel.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        *,
        mode: ProgressMode = "auto",
        file: TextIO | None = None,
        min_interval: float = 0.2,
        log_interval: float = 10.0,
        display: bool | None = None,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0 or None, not {total}")
        self.mode = resolve_mode(mode, file)
        self.desc = desc
        self._total = total
        self._n = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw: float | None = None
        self._closed = False
        # Draws may come from hubkit's loop thread; widget messages need the creating cell's
        # context there (ipykernel 7 raised ``LookupError: shell_parent`` without it). Draws
        # are serialised by the lock, so this one copy is never entered twice at once.
        self._context = contextvars.copy_context()
        out = sys.stderr if file is None else file
        redraw = _isatty(out) or (file is None and in_jupyter_kernel())
        self._interval = min_interval if redraw else max(min_interval, log_interval)
        self._display: _Display
        if self.mode == "widget":
            self._interval = min_interval
            # Showing it only makes sense where a front end listens (default: in a kernel).
            show = in_jupyter_kernel() if display is None else display
            self._display = _Widget(desc, total, show)
        elif self.mode == "text":
            self._display = _Text(desc, out, redraw)
        else:
            self._display = _Quiet()

    @property
    def n(self) -> int:
        """How much has been done so far."""
        return self._n

    @property
    def total(self) -> int | None:
        """How much there is to do, if known."""
        return self._total

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def widget(self) -> Any:
        """The ipywidgets box in widget mode (``None`` otherwise)."""
        return self._display.box if isinstance(self._display, _Widget) else None

    def update(self, n: int = 1) -> None:
        """Add ``n`` to the count and redraw if the last redraw is old enough. Any thread."""
        with self._lock:
            if self._closed:
                return
            self._n += n
            self._maybe_draw()

    def set_total(self, total: int | None) -> None:
        """Change (or learn) the total, e.g. once the first page says how many there are."""
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0 or None, not {total}")
        with self._lock:
            if self._closed:
                return
            self._total = total
            self._maybe_draw(force=True)

    def close(self, *, failed: bool = False) -> None:
        """Draw the final state (marked failed if asked) and stop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            args = (self._n, self._total, self._elapsed(), failed)
            self._context.run(self._display.finish, *args)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _maybe_draw(self, force: bool = False) -> None:
        # Called with the lock held, so draws from several threads never interleave.
        now = time.monotonic()
        if force or self._last_draw is None or now - self._last_draw >= self._interval:
            self._last_draw = now
            self._context.run(self._display.draw, self._n, self._total, now - self._started)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc_type is not None)

    def __repr__(self) -> str:
        return f"<Progress {_line(self.desc, self._n, self._total, self._elapsed())}>"


class ProgressIterable(Progress, Generic[T]):
    """A ``Progress`` that counts the items of an iterable as they are taken, as tqdm does.

    Iterating it yields the items unchanged and counts one per item; the display closes when
    the iterable is exhausted (or marked failed when the iterable raises), and when a loop
    that left early lets go of the iterator. It is also a context manager, which closes it
    at the end of the block. Iterate it once.
    """

    def __init__(self, iterable: Iterable[T], total: int | None, desc: str, **kwargs: Any) -> None:
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        super().__init__(total, desc, **kwargs)
        self._iterable = iterable

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        except GeneratorExit:  # the loop stopped early: what was done is the result
            self.close()
            raise
        except BaseException:
            self.close(failed=True)
            raise
        self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this progress has no known total")
        return self.total


@overload
def progress(
    iterable: int | None = None,
    desc: str = "",
    total: int | None = None,
    *,
    mode: ProgressMode = "auto",
    file: TextIO | None = None,
    min_interval: float = 0.2,
) -> Progress: ...


@overload
def progress(
    iterable: Iterable[T],
    desc: str = "",
    total: int | None = None,
    *,
    mode: ProgressMode = "auto",
    file: TextIO | None = None,
    min_interval: float = 0.2,
) -> ProgressIterable[T]: ...


def progress(
    iterable: Iterable[T] | int | None = None,
    desc: str = "",
    total: int | None = None,
    *,
    mode: ProgressMode = "auto",
    file: TextIO | None = None,
    min_interval: float = 0.2,
) -> Progress | ProgressIterable[T]:
    """A progress display for ``total`` units of work, labelled ``desc``; tqdm's argument order.

    - ``progress(items, "desc")``: a ``ProgressIterable`` to loop over; it counts one per
      item and its total is ``len(items)`` when ``items`` has a length (or ``total=``);
    - ``progress(total=n, desc="...")`` or ``progress(n, "...")``: a ``Progress`` to
      ``update()`` yourself (``None``: total unknown).

    See the module docstring for how ``mode`` is chosen. ``file`` is where text mode writes
    (default ``sys.stderr``); passing one also steers ``"auto"`` by whether it is a terminal.
    Redraws happen at most every ``min_interval`` seconds.
    """
    options: dict[str, Any] = {"mode": mode, "file": file, "min_interval": min_interval}
    if iterable is None or isinstance(iterable, int):
        if iterable is not None and total is not None:
            raise TypeError("progress() got the total twice: as its first argument and total=")
        return Progress(total if iterable is None else iterable, desc, **options)
    return ProgressIterable(iterable, total, desc, **options)
