"""Progress displays: text on a given stream, quiet, widget; mode choice; thread safety."""

from __future__ import annotations

import io
import sys
import threading
import types
from typing import Any

import pytest

from hubkit._progress import Progress, _Text, in_jupyter_kernel, progress, resolve_mode


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so text mode redraws with carriage returns."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBKIT_PROGRESS", raising=False)


def test_text_mode_on_a_terminal_redraws_one_line() -> None:
    out = Terminal()
    with progress(100, "backfill", mode="text", file=out, min_interval=0) as bar:
        for _ in range(4):
            bar.update(25)
    text = out.getvalue()
    assert text.count("\r") == 5  # four updates and the final draw
    assert text.endswith("\n") and text.count("\n") == 1
    assert "backfill:  25%|" in text
    final = text.rsplit("\r", 1)[1]
    assert final.startswith("backfill: 100%|")
    assert "100/100" in final
    assert bar.n == 100 and bar.closed


def test_text_redraws_are_throttled() -> None:
    out = Terminal()
    with progress(1000, "load", mode="text", file=out, min_interval=3600) as bar:
        for _ in range(1000):
            bar.update()
    text = out.getvalue()
    assert text.count("\r") == 2  # the first update and the final state only
    assert "1/1,000" in text and "1,000/1,000" in text


def test_text_mode_writes_lines_to_a_log() -> None:
    out = io.StringIO()  # not a terminal: no carriage returns, one line per draw
    with progress(None, "trades", mode="text", file=out) as bar:
        bar.update(5)
        bar.update(7)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("trades: 5 [")
    assert lines[-1].startswith("trades: 12 [")
    assert len(lines) == 2  # the second update fell inside the log interval


def test_shorter_redraws_are_padded_over_the_old_line() -> None:
    out = Terminal()
    text = _Text("x", out, redraw=True)
    text.draw(10**9, None, 1.0)
    text.draw(1, None, 1.0)
    first, second = out.getvalue().split("\r")[1:3]
    assert len(second) == len(first)
    assert second.rstrip().startswith("x: 1 [")


def test_quiet_mode_writes_nothing_but_counts() -> None:
    out = Terminal()
    with progress(10, "quiet", mode="quiet", file=out) as bar:
        bar.update(3)
        bar.set_total(20)
    assert out.getvalue() == ""
    assert (bar.n, bar.total) == (3, 20)


def test_auto_is_quiet_on_a_non_interactive_stream() -> None:
    out = io.StringIO()
    with progress(10, "job", file=out) as bar:
        bar.update(10)
    assert bar.mode == "quiet"
    assert out.getvalue() == ""


def test_auto_is_text_on_a_terminal() -> None:
    assert resolve_mode("auto", Terminal()) == "text"


def test_environment_asks_for_text_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBKIT_PROGRESS", "text")
    out = io.StringIO()
    with progress(2, "cron", file=out) as bar:
        bar.update(2)
    assert bar.mode == "text"
    assert "cron: 100%" in out.getvalue()
    assert resolve_mode("quiet", out) == "quiet"  # an explicit mode wins over the variable


def test_unknown_modes_and_totals_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        progress(1, "x", mode="loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total"):
        progress(-1, "x", mode="quiet")
    with pytest.raises(ValueError, match="total"):
        progress(1, "x", mode="quiet").set_total(-5)


def test_updates_after_close_are_ignored() -> None:
    out = Terminal()
    bar = progress(10, "x", mode="text", file=out, min_interval=0)
    bar.update(4)
    bar.close()
    written = out.getvalue()
    bar.update(4)
    bar.set_total(99)
    bar.close()
    assert out.getvalue() == written
    assert (bar.n, bar.total) == (4, 10)


def test_an_exception_marks_the_bar_failed_and_propagates() -> None:
    out = Terminal()
    with pytest.raises(RuntimeError, match="boom"), progress(10, "x", mode="text", file=out):
        raise RuntimeError("boom")
    assert out.getvalue().endswith("(failed)\n")


def test_updates_from_many_threads_are_all_counted() -> None:
    out = Terminal()
    bar = progress(8000, "threads", mode="text", file=out, min_interval=0)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(1000):
            bar.update()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    assert bar.n == 8000
    final = out.getvalue().rsplit("\r", 1)[1]
    assert "8,000/8,000" in final
    for draw in out.getvalue().split("\r")[1:]:  # draws never interleave
        assert draw.startswith("threads: ")


def test_widget_mode_builds_an_int_progress() -> None:
    import ipywidgets

    bar = Progress(50, "pages", mode="widget", min_interval=0, display=False)
    box = bar.widget
    assert isinstance(box, ipywidgets.HBox)
    meter, label = box.children
    assert isinstance(meter, ipywidgets.IntProgress)
    assert (meter.max, meter.description) == (50, "pages")
    bar.update(20)
    assert meter.value == 20
    assert "20/50" in label.value
    bar.close()
    assert meter.bar_style == "success"
    bundle: dict[str, Any] = bar._display._repr_mimebundle_()  # type: ignore[attr-defined]
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
    assert bundle["text/plain"].startswith("pages:  40%|")


def test_widget_without_a_total_fills_when_done() -> None:
    bar = Progress(None, "pages", mode="widget", display=False)
    with pytest.raises(KeyError), bar:
        bar.update(3)
        raise KeyError("stop")
    meter, label = bar.widget.children
    assert (meter.value, meter.max) == (1, 1)
    assert meter.bar_style == "danger"
    assert label.value.startswith("3 [")


def test_text_and_quiet_modes_have_no_widget() -> None:
    assert progress(1, "x", mode="quiet").widget is None


def test_kernel_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not in_jupyter_kernel()  # pytest is no kernel

    class Shell:
        kernel = object()

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: Shell()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert in_jupyter_kernel()
    assert resolve_mode("auto") == "widget"
    assert resolve_mode("auto", io.StringIO()) == "quiet"  # an explicit stream: its own rules

    Shell.kernel = None
    assert not in_jupyter_kernel()  # terminal IPython has no kernel


def test_wrapping_an_iterable_counts_each_item_and_closes_at_the_end() -> None:
    out = io.StringIO()
    items = ["a", "b", "c"]
    bar = progress(items, "files", mode="text", file=out)
    assert len(bar) == 3 and bar.total == 3
    assert list(bar) == items
    assert bar.n == 3 and bar.closed
    assert out.getvalue().splitlines()[-1].startswith("files: 100%|")


def test_wrapping_a_generator_takes_total_when_given() -> None:
    bar = progress((i * i for i in range(4)), total=4, mode="quiet")
    seen = []
    for value in bar:
        seen.append((value, bar.n))
    # the count moves when the next item is asked for, as tqdm's does
    assert seen == [(0, 0), (1, 1), (4, 2), (9, 3)]
    assert bar.n == 4 and bar.total == 4 and bar.closed


def test_a_loop_left_early_closes_the_display_without_failure() -> None:
    out = io.StringIO()
    bar = progress(range(10), "scan", mode="text", file=out)
    for value in bar:
        if value == 2:
            break
    # the loop's iterator is released when the loop ends, which closes the display
    assert bar.closed and bar.n == 2
    assert "(failed)" not in out.getvalue()


def test_an_iterable_that_raises_marks_the_display_failed() -> None:
    def pages() -> Any:
        yield 1
        raise OSError("connection reset")

    out = io.StringIO()
    bar = progress(pages(), "pages", mode="text", file=out)
    with pytest.raises(OSError, match="connection reset"):
        for _ in bar:
            pass
    assert bar.closed and bar.n == 1
    assert out.getvalue().rstrip().endswith("(failed)")


def test_the_total_cannot_be_given_twice() -> None:
    with pytest.raises(TypeError, match="total twice"):
        progress(5, total=5)
