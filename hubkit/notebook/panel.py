"""A live ipywidgets status panel for one sink or a group of sinks.

Show it as the last expression of a cell::

    status_panel(trades_sink)                   # one sink
    status_panel(instruments, trades, tickers)  # a group: one row per sink
    panel = status_panel(sinks, refresh=1.0)    # iterables of sinks are flattened
    panel.close()                               # stop updating and remove the widgets

What it promises:

- One row per source: name, sync and schedule status, connected, age of the last sync
  (humanised, kept current), rows, lag, pending pushes, reconnects, rate-limit headroom and
  the last error (first line; the full text behind a ``<details>`` toggle), plus *Sync* and
  *Reconnect* buttons when the source has those methods.
- Updates come from one daemon thread per panel, started under ``contextvars.copy_context()``
  of the creating cell (ipykernel 7 needs the cell's context to send widget messages from a
  thread). It re-reads every source each ``refresh`` seconds, and sooner when a source's
  ``subscribe`` handler reports a change; wake-ups are coalesced so no more than four
  refreshes happen per second. A widget value is assigned only when it changed, so an idle
  panel sends nothing but the ticking age. The thread never prints.
- It fits a laptop screen: the *Sync* and *Reconnect* buttons come first in each row, every
  cell stays on one line, and when the output area is narrow the text columns (sink, sync,
  schedule, last error) are shortened with an ellipsis, their full text shown on hover.
- Buttons never block the kernel: the source's ``force_sync()`` / ``reconnect()`` runs in a
  short-lived worker thread (``schedule_sync()`` is used when there is no ``force_sync``), the
  button is disabled meanwhile, and the outcome (or the error) is shown under the row.
- A click is delivered by the kernel, which handles widget messages between cells: while
  another cell is running, the click waits and takes effect once that cell ends (the panel
  itself keeps updating meanwhile, from its own thread).
- The panel stops by itself once every source reports ``closed``; its widgets then stay on
  screen with the final values. ``close()`` stops it and closes the widgets.
- Where widgets cannot be shown (ipywidgets missing, or not in a Jupyter kernel) the panel is
  a static text/HTML status, re-read on every display; and the widget's display always carries
  ``text/plain`` and ``text/html`` too, so notebooks saved by headless runs (nbclient,
  papermill), which drop widget messages, still show the status.
"""

from __future__ import annotations

import contextvars
import dataclasses
import html
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from hubkit._progress import in_jupyter_kernel
from hubkit.errors import ClosedError, ParameterError
from hubkit.status import (
    COLUMNS,
    SinkStatus,
    error_html,
    row_html,
    row_text,
    short_error,
    status_html,
    status_text,
)
from hubkit.types import ScheduleStatus, SyncStatus

__all__ = ["PanelRow", "StatusPanel", "StatusSource", "Subscription", "status_panel"]

_log = logging.getLogger("hubkit.notebook")

# Change events wake the panel early, but two refreshes are never closer than this.
_MIN_GAP = 0.25
# How long close() waits for the refresh thread (it only ever waits on events).
_JOIN_TIMEOUT = 5.0

_ACTIONS = (("force_sync", "Sync", "refresh"), ("reconnect", "Reconnect", "plug"))

# Column headers short enough for a laptop screen; the full header shows on hover.
_SHORT_HEADERS = {"connected": "conn.", "reconnects": "reconn.", "rate_limit": "rate left"}
# Text columns that give up width first (shortened with an ellipsis, full text on hover);
# every other column keeps its content's width.
_SHRINKING = {"name": "5em", "sync": "5em", "schedule": "5em"}
_CLASS = "hubkit-status-panel"
# One stylesheet scoped to the panel's class: cells on one line, shortened with an ellipsis
# when the output area is narrow, small buttons whose labels are never cut.
_STYLE = f"""<style>
.{_CLASS} {{ font-size: 12px; max-width: 100%; }}
.{_CLASS} .hubkit-cell, .{_CLASS} .hubkit-header {{ min-width: 0; overflow: hidden; margin: 0; }}
.{_CLASS} .hubkit-cell .widget-html-content, .{_CLASS} .hubkit-header .widget-html-content {{
  min-width: 0; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  line-height: 22px; height: 22px; font-size: 12px;
}}
.{_CLASS} .hubkit-actions {{ margin: 0; flex-wrap: nowrap; }}
.{_CLASS} .hubkit-actions .jupyter-button {{
  width: auto; min-width: max-content; flex: 0 0 auto; overflow: visible;
  height: 22px; line-height: 20px; padding: 0 8px; margin: 0 4px 0 0; font-size: 12px;
}}
.{_CLASS} .hubkit-message {{ margin: 0; }}
.{_CLASS} .hubkit-message .widget-html-content {{ line-height: 18px; font-size: 12px; }}
</style>"""


class Subscription(Protocol):
    """What ``subscribe`` returns: closing it stops the events."""

    def close(self) -> None: ...


@runtime_checkable
class StatusSource(Protocol):
    """Anything with ``status() -> SinkStatus``: a sink, or a fake in tests.

    Optional, found by name: ``force_sync()``, ``schedule_sync()``, ``reconnect()`` (all
    called without arguments from a worker thread) and ``subscribe(handler) -> Subscription``
    (the handler is called with each change event, from any thread; the panel only uses it
    as a wake-up and closes the subscription when it stops).
    """

    def status(self) -> SinkStatus: ...


@dataclasses.dataclass(eq=False)
class PanelRow:
    """The widgets of one source's row (ipywidgets objects, typed ``Any``)."""

    source: StatusSource
    cells: dict[str, Any]  # column key (see ``hubkit.status.COLUMNS``) -> ``widgets.HTML``
    buttons: dict[str, Any]  # "force_sync" / "reconnect" -> ``widgets.Button`` (if supported)
    message: Any  # ``widgets.HTML``: outcome of the last button action
    busy: set[str] = dataclasses.field(default_factory=set)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _assign(widget: Any, attr: str, value: object) -> int:
    """Set ``widget.attr`` only if it differs (each assignment is a message); 1 if sent."""
    if getattr(widget, attr) == value:
        return 0
    setattr(widget, attr, value)
    return 1


def _flatten(args: Iterable[object]) -> list[StatusSource]:
    out: list[StatusSource] = []
    for arg in args:
        if isinstance(arg, StatusSource):
            out.append(arg)
        elif isinstance(arg, Iterable) and not isinstance(arg, str | bytes):
            out.extend(_flatten(arg))
        else:
            raise TypeError(f"not a status source (no status() method): {arg!r}")
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _method(source: object, name: str) -> Callable[[], object] | None:
    fn = getattr(source, name, None)
    return fn if callable(fn) else None


class StatusPanel:
    """A live status panel over some status sources; build one with ``status_panel()``.

    ``refresh`` is the polling period in seconds. ``widget=None`` builds widgets when
    ipywidgets imports and this runs in a Jupyter kernel; ``True`` forces them (an
    ``ImportError`` without ipywidgets), ``False`` gives the text/HTML-only panel. With
    ``start=False`` no thread runs until ``start()``; ``refresh_now()`` updates the widgets
    synchronously either way. ``clock`` returns the current UTC time, for ages.
    """

    def __init__(
        self,
        sources: Iterable[StatusSource],
        *,
        refresh: float = 0.5,
        title: str | None = None,
        widget: bool | None = None,
        start: bool = True,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not refresh > 0:
            raise ParameterError(f"refresh must be a positive number of seconds, not {refresh!r}")
        self._sources = tuple(_flatten(sources))
        self._refresh = float(refresh)
        self._title = title or "hubkit"
        self._clock = clock
        self._lock = threading.RLock()  # guards widget writes and the fields below
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._stopped = False
        self._statuses: list[SinkStatus] = []
        self._subscriptions: list[Subscription] = []
        self._thread: threading.Thread | None = None
        self._widgets: list[Any] = []
        self._rows: tuple[PanelRow, ...] = ()
        self._header: Any = None
        self._root: Any = None
        if widget is None:
            widget = in_jupyter_kernel() and _ipywidgets_importable()
        if widget:
            self._build()
            self._subscribe()
        self.refresh_now()
        if start and self._root is not None and not self._stopped:
            self.start()

    # -- public surface -------------------------------------------------------------------

    @property
    def sources(self) -> tuple[StatusSource, ...]:
        return self._sources

    @property
    def widget(self) -> Any:
        """The root ipywidgets ``VBox``, or ``None`` for a text/HTML-only panel."""
        return self._root

    @property
    def rows(self) -> tuple[PanelRow, ...]:
        """One ``PanelRow`` per source, in order (empty for a text/HTML-only panel)."""
        return self._rows

    @property
    def statuses(self) -> list[SinkStatus]:
        """The statuses read by the last refresh."""
        with self._lock:
            return list(self._statuses)

    @property
    def running(self) -> bool:
        """True while the refresh thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """True once every source reported ``closed`` or the panel was closed."""
        return self._stopped or self._closed

    def start(self) -> None:
        """Start the refresh thread (done by the constructor unless ``start=False``)."""
        with self._lock:
            if self._root is None or self._closed or self._stopped or self._thread is not None:
                return
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._loop,), name="hubkit-status-panel", daemon=True
            )
            self._thread.start()

    def refresh_now(self) -> int:
        """Re-read every source and update the widgets now; returns how many values changed.

        Safe from any thread. Stops the panel (see ``stopped``) when every source is closed.
        """
        statuses = [self._read(i, source) for i, source in enumerate(self._sources)]
        now = self._clock()
        with self._lock:
            if self._closed:
                return 0
            self._statuses = statuses
            all_closed = bool(statuses) and all(s.closed for s in statuses)
            if all_closed:
                self._stopped = True
                self._stop.set()
            if self._root is None:
                return 0
            sent = 0
            for row, status in zip(self._rows, statuses, strict=True):
                for key, value in _cells_html(status, now).items():
                    sent += _assign(row.cells[key], "value", value)
                for action, button in row.buttons.items():
                    sent += _assign(button, "disabled", status.closed or action in row.busy)
            sent += _assign(self._header, "value", self._header_html(statuses))
        if all_closed:
            self._unsubscribe()
        return sent

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the refresh thread to end; True if it is not running afterwards."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not self.running

    def close(self) -> None:
        """Stop the refresh thread, drop the subscriptions and close every widget. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._wake.set()
        self.join(_JOIN_TIMEOUT)
        self._unsubscribe()
        with self._lock:
            for w in reversed(self._widgets):
                # DOM widgets own a layout (and often a style) widget with its own comm.
                for part in (getattr(w, "style", None), getattr(w, "layout", None)):
                    if part is not None and callable(getattr(part, "close", None)):
                        part.close()
                w.close()
            self._widgets.clear()

    def __enter__(self) -> StatusPanel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _repr_mimebundle_(
        self, include: object = None, exclude: object = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The widget view plus text/plain and text/html of the current statuses."""
        if not self._closed:
            self.refresh_now()
        statuses = self.statuses
        bundle: dict[str, Any] = {}
        root = self._root
        if root is not None and not self._closed:
            bundle.update(root._repr_mimebundle_() or {})
        bundle["text/plain"] = status_text(statuses, now=self._clock())
        bundle["text/html"] = status_html(statuses, now=self._clock())
        return bundle

    def __repr__(self) -> str:
        return status_text(self.statuses, now=self._clock())

    # -- reading sources ------------------------------------------------------------------

    def _read(self, index: int, source: StatusSource) -> SinkStatus:
        """``source.status()``; a failure becomes the last known status carrying the error."""
        try:
            return source.status()
        except Exception as exc:
            closed = isinstance(exc, ClosedError)
            message = None if closed else f"status() failed: {_describe(exc)}"
            with self._lock:
                known = self._statuses[index] if index < len(self._statuses) else None
            if known is None:
                known = SinkStatus(
                    name=str(getattr(source, "name", type(source).__name__)),
                    sync_status=SyncStatus.OUT_OF_SYNC,
                    schedule_status=ScheduleStatus.NOT_SCHEDULED,
                    connected=False,
                    last_sync=None,
                    rows=0,
                    pending_pushes=0,
                    reconnects=0,
                    last_error=None,
                )
            if closed:
                return dataclasses.replace(known, closed=True, connected=False)
            return dataclasses.replace(known, last_error=message)

    def _subscribe(self) -> None:
        for source in self._sources:
            subscribe = getattr(source, "subscribe", None)
            if not callable(subscribe):
                continue
            try:
                subscription = subscribe(self._on_change)
            except Exception as exc:  # no events then: polling still keeps the row current
                _log.debug("status panel could not subscribe to %r: %s", source, exc)
                continue
            with self._lock:
                self._subscriptions.append(subscription)

    def _unsubscribe(self) -> None:
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            try:
                subscription.close()
            except Exception as exc:
                _log.debug("closing a status panel subscription failed: %s", exc)

    def _on_change(self, _event: object) -> None:
        # Called on the source's thread for every change: only a wake-up, never work.
        self._wake.set()

    # -- the refresh thread ---------------------------------------------------------------

    def _loop(self) -> None:
        min_gap = min(self._refresh, _MIN_GAP)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh_now()
            except Exception as exc:  # a bad source or widget must not end the updates
                _log.debug("status panel refresh failed: %s", exc, exc_info=True)
            if self._stop.is_set():
                break
            if self._wake.wait(self._refresh):
                # Coalesce a burst of change events into one refresh after ``min_gap``.
                rest = min_gap - (time.monotonic() - started)
                if rest > 0 and self._stop.wait(rest):
                    break
                self._wake.clear()

    # -- widgets --------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as widgets

        def make(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            w = factory(*args, **kwargs)
            self._widgets.append(w)
            return w

        self._header = make(widgets.HTML, value="")
        header_cells: list[Any] = [make(widgets.HTML, value="")]  # above the buttons
        for key, header in COLUMNS:
            short = _SHORT_HEADERS.get(key, header)
            label = f'<b title="{html.escape(header)}">{html.escape(short)}</b>'
            header_cells.append(make(widgets.HTML, value=label))
        for cell in header_cells:
            cell.add_class("hubkit-header")
        grid_children: list[Any] = list(header_cells)
        rows: list[PanelRow] = []
        for source in self._sources:
            cells = {key: make(widgets.HTML, value="") for key, _ in COLUMNS}
            for key, cell in cells.items():
                cell.add_class("hubkit-cell")
                cell.add_class(f"hubkit-cell-{key}")
            # The outcome of a click spans the whole width under its row.
            message = make(widgets.HTML, value="", layout=widgets.Layout(grid_column="1 / -1"))
            message.add_class("hubkit-message")
            buttons: dict[str, Any] = {}
            for action, label, icon in _ACTIONS:
                fn = self._action(source, action)
                if fn is None:
                    continue
                button = make(
                    widgets.Button,
                    description=label,
                    icon=icon,
                    tooltip=f"{label} now (runs in the background; waits while a cell runs)",
                    layout=widgets.Layout(width="auto"),
                )
                buttons[action] = button
            row = PanelRow(source=source, cells=cells, buttons=buttons, message=message)
            for action, button in buttons.items():
                button.on_click(self._click_handler(row, action))
            actions = make(widgets.HBox, list(buttons.values()))
            actions.add_class("hubkit-actions")
            grid_children.extend([actions, *(cells[key] for key, _ in COLUMNS), message])
            rows.append(row)
        columns = ["max-content"]
        for key, _ in COLUMNS:
            least = _SHRINKING.get(key)
            columns.append("max-content" if least is None else f"minmax({least}, max-content)")
        columns[1 + [key for key, _ in COLUMNS].index("error")] = "minmax(6em, 1fr)"
        grid = make(
            widgets.GridBox,
            grid_children,
            layout=widgets.Layout(
                grid_template_columns=" ".join(columns),
                grid_gap="0 6px",
                align_items="center",
                width="100%",
            ),
        )
        self._root = make(widgets.VBox, [self._header, grid], layout=widgets.Layout(width="100%"))
        self._root.add_class(_CLASS)
        self._rows = tuple(rows)

    def _header_html(self, statuses: Sequence[SinkStatus]) -> str:
        count = len(statuses)
        parts = [f"{count} sink" + ("" if count == 1 else "s")]
        parts.append(f"{sum(s.connected and not s.closed for s in statuses)} connected")
        pending = sum(s.pending_pushes for s in statuses)
        if pending:
            parts.append(f"{pending:,} pending pushes")
        errors = sum(s.last_error is not None for s in statuses)
        if errors:
            parts.append(f"{errors} with errors")
        if self._stopped:
            parts.append("stopped: all sinks closed")
        summary = f"<b>{html.escape(self._title)}</b> · " + html.escape(" · ".join(parts))
        return _STYLE + summary

    # -- buttons --------------------------------------------------------------------------

    @staticmethod
    def _action(source: StatusSource, action: str) -> Callable[[], object] | None:
        if action == "force_sync":
            return _method(source, "force_sync") or _method(source, "schedule_sync")
        return _method(source, action)

    def _click_handler(self, row: PanelRow, action: str) -> Callable[[Any], None]:
        def on_click(_button: Any) -> None:
            # Runs on the kernel's shell thread: hand the work to a worker and return at once.
            fn = self._action(row.source, action)
            with self._lock:
                if self._closed or fn is None or action in row.busy:
                    return
                row.busy.add(action)
                row.buttons[action].disabled = True
                verb = "syncing" if action == "force_sync" else "reconnecting"
                row.message.value = f'<span style="color:#757575">{verb}…</span>'
            context = contextvars.copy_context()
            worker = threading.Thread(
                target=context.run,
                args=(self._run_action, row, action, fn),
                name=f"hubkit-panel-{action.replace('_', '-')}",
                daemon=True,
            )
            worker.start()

        return on_click

    def _run_action(self, row: PanelRow, action: str, fn: Callable[[], object]) -> None:
        label = "sync" if action == "force_sync" else "reconnect"
        try:
            fn()
        except Exception as exc:
            message = error_html(f"{label} failed: {_describe(exc)}")
        else:
            stamp = self._clock().astimezone(UTC).strftime("%H:%M:%S")
            done = "synced" if action == "force_sync" else "reconnected"
            message = f'<span style="color:#2e7d32">✓ {done} {stamp} UTC</span>'
        with self._lock:
            row.busy.discard(action)
            if self._closed:
                return
            row.message.value = message
            index = self._rows.index(row)
            closed = index < len(self._statuses) and self._statuses[index].closed
            row.buttons[action].disabled = closed
        self._wake.set()


def _cells_html(status: SinkStatus, now: datetime) -> dict[str, str]:
    """The panel's cells: ``row_html``, with the full text on hover where a cell may be cut.

    The last error shows its first line (the full text on hover) rather than the toggle of
    the static HTML table, so the row keeps its height.
    """
    cells = row_html(status, now)
    texts = row_text(status, now)
    for key in _SHRINKING:
        cells[key] = f'<span title="{html.escape(texts[key])}">{cells[key]}</span>'
    if status.last_error:
        full = html.escape(status.last_error.strip())
        short = html.escape(short_error(status.last_error))
        cells["error"] = f'<span style="color:#c62828" title="{full}">{short}</span>'
    return cells


def _ipywidgets_importable() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def status_panel(
    *sources: StatusSource | Iterable[StatusSource],
    refresh: float = 0.5,
    title: str | None = None,
    widget: bool | None = None,
) -> StatusPanel:
    """A live status panel over sinks (or any status sources, or iterables of them).

    Display it (last expression of a cell, or ``IPython.display.display``). ``refresh`` is
    the polling period in seconds; see ``StatusPanel`` for ``widget`` and the module
    docstring for what the panel promises. Call ``close()`` to stop it early.
    """
    return StatusPanel(_flatten(sources), refresh=refresh, title=title, widget=widget)
