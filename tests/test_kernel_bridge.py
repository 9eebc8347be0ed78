"""hubkit's event-loop bridge in a real ipykernel, driven over ZMQ with jupyter_client.

What DESIGN.md §3 promises, checked where it matters (a kernel, not a plain thread):

- a WebSocket sink keeps receiving and stays connected through a 5 s pure-Python CPU cell;
- status-panel widget updates (comm_msg on IOPub) reach the client while a cell is busy;
- top-level ``await hubkit.aload(...)`` / ``await sink.aforce_sync()`` work in a cell;
- a kernel interrupt during a blocking ``hubkit.load`` that waits on a slow server raises
  ``KeyboardInterrupt`` promptly, and the next cell loads normally;
- the same with ``nest_asyncio`` applied in the kernel (hubkit never applies it itself).

One simulator and one kernel serve the module (kernel start-up is the slow part). Waits are
bounded; the only time limits asserted are generous ("promptly" < 10 s).
"""

from __future__ import annotations

import ast
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from kernel_helpers import CellResult, RealKernel, sim_env

from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(180)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def cell(code: str) -> str:
    return textwrap.dedent(code).strip()


def value(result: CellResult) -> object:
    """The cell's execute_result as a Python literal."""
    assert result.value is not None, f"no result; stdout={result.stdout!r}"
    return ast.literal_eval(result.value)


def busy_window(result: CellResult) -> tuple[datetime, datetime]:
    """When the kernel said busy and idle for this cell (the kernel's own clock)."""
    states = [
        (m["content"]["execution_state"], m["header"]["date"])
        for m in result.iopub
        if m["header"]["msg_type"] == "status" and m["parent_header"].get("msg_id") == result.msg_id
    ]
    busy = next(d for s, d in states if s == "busy")
    idle = next(d for s, d in states if s == "idle")
    return busy, idle


@pytest.fixture(scope="module")
def sim() -> Iterator[BybitSimulator]:
    with BybitSimulator(seed=3, trades_per_second=40, symbols={"linear": ["BTCUSDT"]}) as s:
        yield s


@pytest.fixture(scope="module")
def kernel(sim: BybitSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKernel]:
    home = tmp_path_factory.mktemp("kernel-home")
    with RealKernel(env=sim_env(sim, home)) as k:
        k.ok(
            cell(
                """
                import time
                import hubkit
                from hubkit import bybit

                def wait_until(condition, timeout=20.0):
                    deadline = time.monotonic() + timeout
                    while not condition():
                        if time.monotonic() > deadline:
                            raise TimeoutError("condition not met")
                        time.sleep(0.02)

                def spin(seconds):
                    # pure-Python CPU work: the kernel's own loop cannot run meanwhile
                    end = time.monotonic() + seconds
                    n = 0
                    while time.monotonic() < end:
                        n += 1
                    return n
                """
            ),
            timeout=90,
        )
        yield k


@pytest.fixture(scope="module")
def trades_kernel(kernel: RealKernel) -> RealKernel:
    """The module kernel with a live trades sink ``sink`` that has received rows."""
    kernel.ok(
        cell(
            """
            sink = bybit.open_trades(["BTCUSDT"], ws_options={"ping_interval": 1.0})
            wait_until(lambda: sink.status().rows > 0)
            sink.status().connected
            """
        ),
        timeout=60,
    )
    return kernel


def test_websocket_sink_survives_a_busy_cell(
    trades_kernel: RealKernel, sim: BybitSimulator
) -> None:
    connections = sim.ws_connections_total
    trades_kernel.ok("before = sink.status()")
    # How long the cell computed is read on the kernel's own clock: the test process may be
    # descheduled between sending the cell and starting to wait for it, so its clock can see
    # less than the cell ran on a loaded machine.
    trades_kernel.ok(
        cell(
            """
            rows_at_start = sink.status().rows
            busy_from = time.monotonic()
            spin(5.0)
            busy_for = time.monotonic() - busy_from
            rows_at_end = sink.status().rows
            """
        ),
        timeout=60,
    )
    after = value(
        trades_kernel.ok(
            "s = sink.status(); (busy_for, rows_at_start, rows_at_end, before.reconnects,"
            " s.reconnects, s.connected, s.last_error)"
        )
    )
    assert isinstance(after, tuple)
    busy_for, rows_at_start, rows_at_end, reconnects_before, reconnects_after, connected, error = (
        after
    )
    assert busy_for >= 5.0, "the cell did not compute for 5 s"
    assert rows_at_end > rows_at_start, "no trades were stored while the cell was busy"
    assert reconnects_after == reconnects_before
    assert connected is True, error
    assert sim.ws_connections_total == connections  # the server saw no new connection


def test_panel_updates_reach_the_client_during_a_busy_cell(trades_kernel: RealKernel) -> None:
    shown = trades_kernel.ok(
        cell(
            """
            from hubkit.notebook import status_panel
            panel = status_panel(sink, refresh=0.25)
            panel
            """
        )
    )
    assert shown.count("comm_open") > 0, "the panel did not create widgets in the kernel"
    assert WIDGET_MIME in shown.data, "the panel was not displayed as a widget"
    result = trades_kernel.collect(trades_kernel.send("spin(3.0)"), timeout=60).check()
    busy, idle = busy_window(result)
    updates = [
        m
        for m in result.iopub
        if m["header"]["msg_type"] == "comm_msg" and busy < m["header"]["date"] < idle
    ]
    assert len(updates) > 0, "no widget update reached the client while the cell was busy"
    trades_kernel.ok("panel.close()")


def test_top_level_await(trades_kernel: RealKernel) -> None:
    result = trades_kernel.ok(
        cell(
            """
            df = await hubkit.aload("instruments")
            await sink.aforce_sync()
            (df.height, sorted(df["category"].unique().to_list()), sink.status().rows > 0)
            """
        ),
        timeout=60,
    )
    height, categories, has_rows = value(result)  # type: ignore[misc]
    assert height > 0
    assert "linear" in categories
    assert has_rows is True


def _interrupt_slow_load(kernel: RealKernel, sim: BybitSimulator, store: str) -> CellResult:
    """Start a blocking load that waits on a slow server, interrupt it, return the cell."""
    sim.faults.http_path = "instruments-info"
    sim.faults.slow_response_seconds = 60.0
    try:
        seen = sim.requests.get("/v5/market/instruments-info", 0)
        msg_id = kernel.send(f"df = hubkit.load('instruments', store={store!r})")
        deadline = time.monotonic() + 30
        while sim.requests.get("/v5/market/instruments-info", 0) == seen:
            assert time.monotonic() < deadline, "the load never reached the simulator"
            time.sleep(0.02)
        interrupted_at = time.monotonic()
        kernel.km.interrupt_kernel()
        result = kernel.collect(msg_id, timeout=30)
        result.elapsed = time.monotonic() - interrupted_at
        return result
    finally:
        sim.faults.reset()


def _assert_interrupted(result: CellResult) -> None:
    assert result.status == "error"
    assert result.error is not None
    assert result.error["ename"] == "KeyboardInterrupt", result.error
    assert result.elapsed < 10.0, f"the interrupt took {result.elapsed:.1f} s"


def test_interrupt_during_a_blocking_load(
    trades_kernel: RealKernel, sim: BybitSimulator, tmp_path: Path
) -> None:
    store = str(tmp_path / "interrupt.db")
    _assert_interrupted(_interrupt_slow_load(trades_kernel, sim, store))
    # hubkit keeps working: the same load succeeds, and the live sink is still streaming
    after = trades_kernel.ok(
        cell(
            f"""
            rows = sink.status().rows
            df = hubkit.load('instruments', store={store!r})
            wait_until(lambda: sink.status().rows > rows)
            (df.height, sink.status().connected)
            """
        ),
        timeout=60,
    )
    height, connected = value(after)  # type: ignore[misc]
    assert height > 0
    assert connected is True


def test_with_nest_asyncio_applied(sim: BybitSimulator, tmp_path: Path) -> None:
    with RealKernel(env=sim_env(sim, tmp_path)) as k:
        result = k.ok(
            cell(
                """
                import nest_asyncio
                nest_asyncio.apply()
                import hubkit
                from hubkit import bybit
                blocking = hubkit.load("instruments")
                awaited = await hubkit.aload("instruments")
                with bybit.open_trades(["BTCUSDT"]) as sink:
                    await sink.aforce_sync()
                    sink.force_sync()
                    connected = sink.status().connected
                (blocking.height, awaited.height, connected)
                """
            ),
            timeout=90,
        )
        blocking, awaited, connected = value(result)  # type: ignore[misc]
        assert blocking > 0
        assert awaited == blocking
        assert connected is True
        store = str(tmp_path / "nested-interrupt.db")
        _assert_interrupted(_interrupt_slow_load(k, sim, store))
        again = k.ok(f"hubkit.load('instruments', store={store!r}).height", timeout=60)
        assert int(again.value or 0) > 0
