"""Status rendering (text, HTML, frame) and the live ipywidgets status panel, on fake sources."""

from __future__ import annotations

import contextvars
import dataclasses
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

import hubkit
from hubkit.notebook import (
    StatusPanel,
    format_duration,
    humanize_age,
    status_html,
    status_panel,
    status_table,
    status_text,
)
from hubkit.status import SinkStatus, short_error
from hubkit.types import ScheduleStatus, SyncStatus

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WAIT = 10.0  # upper bound for conditions that normally hold within milliseconds

probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def make_status(name: str = "instruments", **changes: Any) -> SinkStatus:
    base = SinkStatus(
        name=name,
        sync_status=SyncStatus.FULL_SYNC,
        schedule_status=ScheduleStatus.SCHEDULED,
        connected=True,
        last_sync=NOW - timedelta(seconds=12),
        rows=12345,
        pending_pushes=0,
        reconnects=1,
        last_error=None,
        lag=0.25,
        rate_limit_remaining=118,
    )
    return dataclasses.replace(base, **changes)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (a bounded wait, not a timer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


class FakeSubscription:
    def __init__(self, source: FakeSource, handler: Callable[[object], object]) -> None:
        self.source = source
        self.handler = handler
        self.closed = False

    def close(self) -> None:
        self.closed = True
        with self.source.lock:
            if self.handler in self.source.handlers:
                self.source.handlers.remove(self.handler)


class FakeSource:
    """A status source whose status the test sets; records calls and the threads they ran on."""

    def __init__(self, name: str = "instruments", **changes: Any) -> None:
        self.lock = threading.Lock()
        self.current = make_status(name, **changes)
        self.handlers: list[Callable[[object], object]] = []
        self.subscriptions: list[FakeSubscription] = []
        self.status_calls = 0
        self.calls: list[tuple[str, str]] = []  # (method, thread name)
        self.called = threading.Event()
        self.gate = threading.Event()  # force_sync/reconnect block until this is set
        self.gate.set()
        self.error: Exception | None = None
        self.seen_probe: list[str] = []

    def status(self) -> SinkStatus:
        with self.lock:
            self.status_calls += 1
            self.seen_probe.append(probe.get())
            return self.current

    def set(self, **changes: Any) -> None:
        with self.lock:
            self.current = dataclasses.replace(self.current, **changes)
            handlers = list(self.handlers)
        for handler in handlers:
            handler(object())

    def subscribe(self, handler: Callable[[object], object]) -> FakeSubscription:
        subscription = FakeSubscription(self, handler)
        with self.lock:
            self.handlers.append(handler)
            self.subscriptions.append(subscription)
        return subscription

    def _call(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))
        self.called.set()
        assert self.gate.wait(WAIT)
        if self.error is not None:
            raise self.error

    def force_sync(self) -> None:
        self._call("force_sync")

    def reconnect(self) -> None:
        self._call("reconnect")


class StatusOnly:
    """The smallest status source: no buttons, no events."""

    def __init__(self, status: SinkStatus) -> None:
        self.current = status

    def status(self) -> SinkStatus:
        return self.current


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def panels() -> Iterator[list[StatusPanel]]:
    made: list[StatusPanel] = []
    yield made
    for panel in made:
        panel.close()


def manual_panel(panels: list[StatusPanel], *sources: Any, clock: Clock) -> StatusPanel:
    panel = StatusPanel(sources, widget=True, start=False, clock=clock)
    panels.append(panel)
    return panel


# -- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (-3.0, "just now"),
        (0.4, "just now"),
        (1.0, "1 s ago"),
        (59.9, "59 s ago"),
        (60.0, "1 min ago"),
        (3599.0, "59 min ago"),
        (3600.0, "1 h ago"),
        (3600.0 + 5 * 60, "1 h 5 min ago"),
        (3 * 86400.0 + 7, "3 d ago"),
    ],
)
def test_humanize_age(seconds: float | None, text: str) -> None:
    assert humanize_age(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.0123, "12 ms"), (1.5, "1.5 s"), (75.0, "1 min 15 s"), (7260.0, "2 h 1 min")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_short_error_keeps_the_first_line_and_cuts_long_ones() -> None:
    assert short_error(None) == "—"
    assert short_error("boom") == "boom"
    assert short_error("boom\n  at line 2") == "boom …"
    cut = short_error("x" * 200)
    assert len(cut) == 60
    assert cut.endswith("…")


def test_status_text_shows_every_value() -> None:
    text = status_text(
        [make_status(), make_status("trades", connected=False, pending_pushes=3, last_sync=None)],
        now=NOW,
    )
    header, first, second = text.splitlines()
    for label in ("sink", "sync", "schedule", "connected", "last sync", "rows", "lag"):
        assert label in header
    for value in ("instruments", "full sync", "scheduled", "yes", "12 s ago", "12,345"):
        assert value in first
    assert "250 ms" in first
    assert "118" in first
    assert second.startswith("trades")
    assert " no " in second
    assert "never" in second
    assert status_text([]) == "no sinks"
    assert status_text(make_status(), now=NOW).splitlines()[1] == first


def test_status_text_appends_the_full_text_of_long_errors() -> None:
    full = "TransportError: connection refused\nwhile fetching page 3"
    text = status_text(make_status(last_error=full), now=NOW)
    table_line = text.splitlines()[1]
    assert "TransportError: connection refused …" in table_line
    assert text.endswith(f"last error of instruments: {full}")


def test_status_html_escapes_names_and_errors() -> None:
    error = "<script>alert('x')</script> & more\n" + "detail " * 30
    page = status_html(
        [make_status("<b>sink</b>", last_error=error), make_status(last_error="short")], now=NOW
    )
    assert "<script>" not in page
    assert "<b>sink</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&lt;b&gt;sink&lt;/b&gt;" in page
    assert "<details>" in page  # the full text on demand
    assert "detail detail" in page
    assert ">short<" in page
    assert page.startswith("<table") and page.endswith("</table>")
    assert page.count("<tr>") == 3
    assert "12 s ago" in page
    assert "no sinks" in status_html([])


def test_status_table_has_typed_columns() -> None:
    naive = datetime(2024, 5, 1, 11, 59, 0)  # taken as UTC
    frame = status_table(
        [make_status(), make_status("trades", last_sync=naive, last_error="boom", lag=None)],
        now=NOW,
    )
    assert frame.schema["last_sync"] == pl.Datetime("us", "UTC")
    assert frame.schema["rows"] == pl.Int64
    assert frame["name"].to_list() == ["instruments", "trades"]
    assert frame["sync_status"].to_list() == ["full_sync", "full_sync"]
    assert frame["age_s"].to_list() == [12.0, 60.0]
    assert frame["last_sync"][1] == naive.replace(tzinfo=UTC)
    assert frame["lag_s"].to_list() == [0.25, None]
    assert frame["last_error"].to_list() == [None, "boom"]
    assert frame["rate_limit_remaining"].to_list() == [118, 118]
    empty = status_table([])
    assert empty.height == 0
    assert empty.schema == frame.schema


# -- the panel, driven by refresh_now() ----------------------------------------------------


def test_panel_rows_show_the_source_values(panels: list[StatusPanel], clock: Clock) -> None:
    a, b = FakeSource("instruments"), FakeSource("trades", connected=False, last_error="boom")
    panel = manual_panel(panels, a, b, clock=clock)
    assert not panel.running
    assert [row.source for row in panel.rows] == [a, b]
    cells = panel.rows[0].cells
    assert "instruments" in cells["name"].value
    assert "full sync" in cells["sync"].value
    assert "12 s ago" in cells["last_sync"].value
    assert cells["rows"].value == "12,345"
    assert cells["lag"].value == "250 ms"
    assert cells["rate_limit"].value == "118"
    assert "no" in panel.rows[1].cells["connected"].value
    assert "boom" in panel.rows[1].cells["error"].value
    header = panel.widget.children[0].value
    assert "2 sinks" in header and "1 connected" in header and "1 with errors" in header


def test_refresh_now_updates_changed_values_only(panels: list[StatusPanel], clock: Clock) -> None:
    source = FakeSource()
    panel = manual_panel(panels, source, clock=clock)
    sent: list[str] = []
    for key, cell in panel.rows[0].cells.items():
        cell.observe(lambda change, key=key: sent.append(key), "value")
    assert panel.refresh_now() == 0
    assert sent == []

    source.set(rows=20000, sync_status=SyncStatus.OUT_OF_SYNC)
    assert panel.refresh_now() == 2
    assert sorted(sent) == ["rows", "sync"]
    assert panel.rows[0].cells["rows"].value == "20,000"
    assert "out of sync" in panel.rows[0].cells["sync"].value
    assert panel.statuses == [source.current]


def test_age_of_the_last_sync_ticks(panels: list[StatusPanel], clock: Clock) -> None:
    panel = manual_panel(panels, FakeSource(), clock=clock)
    cell = panel.rows[0].cells["last_sync"]
    assert "12 s ago" in cell.value
    clock.now += timedelta(seconds=1)
    assert panel.refresh_now() == 1
    assert "13 s ago" in cell.value
    clock.now += timedelta(minutes=5)
    panel.refresh_now()
    assert "5 min ago" in cell.value


def test_long_errors_are_escaped_with_the_full_text_on_hover(
    panels: list[StatusPanel], clock: Clock
) -> None:
    source = FakeSource()
    panel = manual_panel(panels, source, clock=clock)
    source.set(last_error="<img src=x onerror=alert(1)>\n" + "trace " * 40)
    panel.refresh_now()
    value = panel.rows[0].cells["error"].value
    assert "<img" not in value
    assert "&lt;img src=x onerror=alert(1)&gt;" in value
    # one line in the row (the first, shortened), the whole text in the hover title
    shown = value.split(">", 1)[1]
    assert "trace" not in shown and shown.endswith(" …</span>")
    assert 'title="&lt;img src=x onerror=alert(1)&gt;\ntrace trace' in value


def test_a_failing_status_call_shows_in_its_row(panels: list[StatusPanel], clock: Clock) -> None:
    source = FakeSource()
    panel = manual_panel(panels, source, clock=clock)

    def broken() -> SinkStatus:
        raise RuntimeError("database is locked")

    source.status = broken  # type: ignore[method-assign]
    panel.refresh_now()
    row = panel.rows[0]
    assert "status() failed: RuntimeError: database is locked" in row.cells["error"].value
    assert row.cells["rows"].value == "12,345"  # the last known values stay
    assert not panel.stopped


def test_sources_and_groups_are_flattened(panels: list[StatusPanel]) -> None:
    a, b, c = FakeSource("a"), FakeSource("b"), StatusOnly(make_status("c"))
    panel = status_panel(a, [b, c], widget=True)
    panels.append(panel)
    assert panel.sources == (a, b, c)
    assert len(panel.rows) == 3
    assert panel.rows[2].buttons == {}  # no force_sync/reconnect: no buttons
    with pytest.raises(TypeError, match="not a status source"):
        status_panel(42, widget=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh"):
        status_panel(a, refresh=0, widget=False)


# -- the refresh thread ------------------------------------------------------------------


def test_thread_applies_change_events(panels: list[StatusPanel]) -> None:
    source = FakeSource()
    panel = status_panel(source, refresh=60.0, widget=True)  # polling alone would be too slow
    panels.append(panel)
    assert panel.running
    source.set(rows=777)
    assert wait_until(lambda: panel.rows[0].cells["rows"].value == "777")


def test_thread_polls_sources_without_events(panels: list[StatusPanel]) -> None:
    source = StatusOnly(make_status())
    panel = status_panel(source, refresh=0.05, widget=True)
    panels.append(panel)
    source.current = make_status(rows=5)
    assert wait_until(lambda: panel.rows[0].cells["rows"].value == "5")


def test_thread_runs_in_the_creating_context(panels: list[StatusPanel]) -> None:
    source = FakeSource()
    token = probe.set("cell-42")
    try:
        panel = status_panel(source, refresh=60.0, widget=True)
    finally:
        probe.reset(token)
    panels.append(panel)
    calls_before = source.status_calls
    source.set(rows=1)
    assert wait_until(lambda: source.status_calls > calls_before)
    assert source.seen_probe[-1] == "cell-42"  # read on the panel's thread, in the copied context


def test_change_bursts_are_coalesced(panels: list[StatusPanel]) -> None:
    source = FakeSource()
    panel = status_panel(source, refresh=60.0, widget=True)
    panels.append(panel)
    start = source.status_calls
    for n in range(200):
        source.set(rows=n)
    assert wait_until(lambda: panel.rows[0].cells["rows"].value == "199")
    assert source.status_calls - start < 20  # 200 events, a handful of refreshes


def test_panel_stops_when_all_sources_close(panels: list[StatusPanel]) -> None:
    a, b = FakeSource("a"), FakeSource("b")
    panel = status_panel(a, b, refresh=60.0, widget=True)
    panels.append(panel)
    a.set(closed=True)
    assert wait_until(lambda: "closed" in panel.rows[0].cells["connected"].value)
    assert panel.running
    b.set(closed=True)
    assert panel.join(WAIT)
    assert panel.stopped
    assert "stopped: all sinks closed" in panel.widget.children[0].value
    assert all(button.disabled for row in panel.rows for button in row.buttons.values())
    assert all(sub.closed for sub in a.subscriptions + b.subscriptions)
    assert a.handlers == [] and b.handlers == []
    assert panel.widget.comm is not None  # the final state stays on screen until close()


def test_closed_error_from_status_counts_as_closed(panels: list[StatusPanel]) -> None:
    source = FakeSource()
    panel = status_panel(source, refresh=0.05, widget=True)
    panels.append(panel)

    def closed() -> SinkStatus:
        raise hubkit.ClosedError("sink is closed")

    source.status = closed  # type: ignore[method-assign]
    assert panel.join(WAIT)
    assert panel.statuses[0].closed
    assert panel.statuses[0].name == "instruments"


def test_close_stops_the_thread_and_closes_widgets(panels: list[StatusPanel]) -> None:
    source = FakeSource()
    panel = status_panel(source, refresh=60.0, widget=True)
    widgets = [panel.widget, *panel.rows[0].cells.values(), *panel.rows[0].buttons.values()]
    assert panel.running
    panel.close()
    assert not panel.running
    assert panel.stopped
    assert all(w.comm is None for w in widgets)
    assert source.subscriptions[0].closed
    panel.close()  # idempotent
    assert panel.refresh_now() == 0


def test_panel_is_a_context_manager() -> None:
    source = FakeSource()
    with status_panel(source, widget=True) as panel:
        assert panel.running
    assert not panel.running


# -- buttons -----------------------------------------------------------------------------


def test_force_sync_button_runs_in_a_worker(panels: list[StatusPanel], clock: Clock) -> None:
    source = FakeSource()
    source.gate.clear()  # force_sync blocks until the test lets it finish
    panel = manual_panel(panels, source, clock=clock)
    row = panel.rows[0]
    button = row.buttons["force_sync"]

    button.click()  # returns although force_sync is still blocked
    assert source.called.wait(WAIT)
    assert button.disabled
    assert "syncing" in row.message.value
    button.click()  # ignored while busy
    source.gate.set()
    assert wait_until(lambda: "synced" in row.message.value and not button.disabled)
    assert source.calls == [("force_sync", "hubkit-panel-force-sync")]


def test_reconnect_button_shows_errors_in_the_row(panels: list[StatusPanel], clock: Clock) -> None:
    source = FakeSource()
    source.error = hubkit.TransportError("connection <refused>")
    panel = manual_panel(panels, source, clock=clock)
    row = panel.rows[0]
    row.buttons["reconnect"].click()
    assert wait_until(lambda: "failed" in row.message.value)
    assert "reconnect failed: TransportError: connection &lt;refused&gt;" in row.message.value
    assert not row.buttons["reconnect"].disabled
    assert source.calls == [("reconnect", "hubkit-panel-reconnect")]


def test_sync_button_falls_back_to_schedule_sync(panels: list[StatusPanel], clock: Clock) -> None:
    class Scheduled(StatusOnly):
        def __init__(self) -> None:
            super().__init__(make_status())
            self.scheduled = threading.Event()

        def schedule_sync(self) -> None:
            self.scheduled.set()

    source = Scheduled()
    panel = manual_panel(panels, source, clock=clock)
    assert list(panel.rows[0].buttons) == ["force_sync"]
    panel.rows[0].buttons["force_sync"].click()
    assert source.scheduled.wait(WAIT)


# -- displays ----------------------------------------------------------------------------


def test_widget_display_carries_text_and_html(panels: list[StatusPanel], clock: Clock) -> None:
    panel = manual_panel(panels, FakeSource(), clock=clock)
    bundle = panel._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == panel.widget.model_id
    assert "12,345" in bundle["text/plain"]
    assert bundle["text/html"].startswith("<table")


def test_text_only_panel_without_widgets() -> None:
    source = FakeSource()
    panel = status_panel(source, widget=False)
    assert panel.widget is None
    assert panel.rows == ()
    assert not panel.running
    source.set(rows=4321)
    bundle = panel._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "4,321" in bundle["text/plain"]
    assert "4,321" in bundle["text/html"]
    assert "4,321" in repr(panel)
    assert source.subscriptions == []
    panel.close()


def test_outside_a_kernel_the_panel_is_text_only() -> None:
    panel = status_panel(FakeSource())
    assert panel.widget is None
    assert not panel.running


def test_importing_hubkit_does_not_import_ipywidgets() -> None:
    code = (
        "import sys, hubkit, hubkit.notebook, hubkit._progress, hubkit.status\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_status_renders_itself_as_text_and_html() -> None:
    from datetime import UTC, datetime

    from hubkit.status import SinkStatus
    from hubkit.types import ScheduleStatus, SyncStatus

    status = SinkStatus(
        name="trades<x>",
        sync_status=SyncStatus.FULL_SYNC,
        schedule_status=ScheduleStatus.NOT_SCHEDULED,
        connected=True,
        last_sync=datetime.now(UTC),
        rows=1234,
        pending_pushes=2,
        reconnects=1,
        last_error=None,
    )
    text = str(status)
    assert "trades<x>" in text and "1,234" in text
    html = status._repr_html_()
    assert "trades&lt;x&gt;" in html and "<table" in html
    assert "SinkStatus(" in repr(status)  # the dataclass repr stays for debugging


def test_buttons_come_first_and_long_values_keep_their_full_text_on_hover(
    panels: list[StatusPanel], clock: Clock
) -> None:
    long_name = "bybit_public_trade_linear_with_a_long_name"
    a, b = FakeSource(long_name), FakeSource("tickers")
    panel = manual_panel(panels, a, b, clock=clock)
    header, grid = panel.widget.children
    columns = re.findall(r"minmax\([^)]*\)|\S+", grid.layout.grid_template_columns)
    assert len(columns) == 12  # the actions, then the eleven status columns
    first_row = grid.children[12:25]
    assert first_row[0].children == tuple(panel.rows[0].buttons.values())
    assert [c.description for c in first_row[0].children] == ["Sync", "Reconnect"]
    assert first_row[-1] is panel.rows[0].message
    assert panel.rows[0].message.layout.grid_column == "1 / -1"  # the outcome spans the row
    name = panel.rows[0].cells["name"].value
    assert f'title="{long_name}"' in name and long_name in name
    # the text columns may shrink (ellipsis); the numbers keep their width
    assert columns[1].startswith("minmax(") and columns[6] == "max-content"
    assert "<style>" in header.value and "text-overflow: ellipsis" in header.value
