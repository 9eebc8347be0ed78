"""Starting and stopping the simulator, the command line, the fixtures and cheap imports."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest

from hubkit.testing import BybitSimulator


def test_async_with_runs_on_the_callers_loop() -> None:
    async def main() -> int:
        async with BybitSimulator() as sim:
            async with httpx.AsyncClient(base_url=sim.rest_url) as client:
                r = await client.get("/v5/market/time")
            return r.status_code

    assert asyncio.run(main()) == 200


def test_stop_leaves_no_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim = BybitSimulator()
        with sim:
            httpx.get(f"{sim.rest_url}/v5/market/time")
        sim.stop()  # idempotent
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_misuse_is_refused() -> None:
    sim = BybitSimulator()
    with pytest.raises(RuntimeError):
        _ = sim.rest_url
    with sim:
        with pytest.raises(ValueError, match="unknown ground truth"):
            sim.ground_truth("candles")
        with pytest.raises(RuntimeError):
            sim.start()
    with pytest.raises(ValueError, match="unknown linear symbol"):
        BybitSimulator(symbols={"linear": ["NOPE"]}).start()


def test_import_is_light() -> None:
    code = (
        "import sys, hubkit.testing, hubkit.testing.pytest_plugin;"
        "heavy = ('hubkit.testing.bybit', 'websockets', 'pybit');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_command_line_serves_until_stopped() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubkit.testing.bybit", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        rest_url = proc.stdout.readline().strip().split("=", 1)[1]
        ws_url = proc.stdout.readline().strip().split("=", 1)[1]
        assert ws_url.startswith("ws://127.0.0.1:") and ws_url.endswith("/v5/public")
        assert httpx.get(f"{rest_url}/v5/market/time").json()["retCode"] == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.bybit_sim(seed=42)
def test_fixture_reads_marker(bybit_sim: BybitSimulator, hub_store: str, tmp_path: Path) -> None:
    assert bybit_sim.seed == 42
    assert Path(hub_store).parent == tmp_path and not Path(hub_store).exists()


def test_session_fixture(bybit_sim_session: BybitSimulator) -> None:
    assert httpx.get(f"{bybit_sim_session.rest_url}/v5/market/time").status_code == 200
