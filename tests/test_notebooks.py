"""Every notebook in notebooks/ runs in a real kernel against the ByBit simulator.

Each notebook is executed with nbclient (python3 kernel from ipykernel) with
``HUBKIT_BYBIT_REST_URL``/``HUBKIT_BYBIT_WS_URL`` pointing at a simulator started here and
``HUBKIT_HOME`` at a temporary folder, so nothing reaches the internet; the test asserts no
cell failed and that the outputs show real data. ``scheduled_sync`` also runs through papermill
with parameters. The stored notebooks must be valid nbformat 4 with outputs cleared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from kernel_helpers import kernel_env, python_kernel_name, sim_env

from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(240)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("quickstart", "live_trades", "custom_entity", "scheduled_sync")

# What each notebook's outputs must show: regexes with one group, a number that must be > 0,
# and plain texts that must appear somewhere.
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "quickstart": (
        (
            r"instruments: (\d+) rows",
            r"trading USDT perpetuals: (\d+)",
            r"spot instruments: (\d+) rows",
            r"BTCUSDT trades: (\d+) rows",
            r"linear tickers: (\d+) rows",
            r"BTCUSDT 5-minute klines: (\d+) rows",
        ),
        ("BTCUSDT", "linear", "vwap"),
    ),
    "live_trades": (
        (r"VWAP over the last 10 s for (\d+) symbols", r"stored trades: (\d+)"),
        ("BTCUSDT", "ETHUSDT", "vwap", "reconnects: 0"),
    ),
    "custom_entity": (
        (r"(\d+) events",),
        ("server has: [1, 2]", "rejected:", "note 3 after the rollback: None", "buy milk"),
    ),
    "scheduled_sync": (
        (r"synced for [\d.]+ s, (\d+) rows stored", r"new trades: (\d+)"),
        ("BTCUSDT",),
    ),
}


def output_text(nb: nbformat.NotebookNode) -> str:
    """All text the notebook's cells printed or displayed (text/plain and text/html)."""
    parts: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(str(output.data.get("text/plain", "")))
                parts.append(str(output.data.get("text/html", "")))
    return "\n".join(parts)


def errors_of(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if o.output_type == "error"
    ]


def check_outputs(name: str, nb: nbformat.NotebookNode) -> None:
    assert not errors_of(nb), errors_of(nb)
    text = output_text(nb)
    numbers, texts = EXPECTED[name]
    for pattern in numbers:
        found = re.search(pattern, text)
        assert found is not None, f"{name}: no output matches {pattern!r}"
        assert int(found.group(1)) > 0, f"{name}: {found.group(0)!r}"
    for snippet in texts:
        assert snippet in text, f"{name}: {snippet!r} not in the outputs"


@pytest.fixture(scope="module")
def sim() -> Iterator[BybitSimulator]:
    with BybitSimulator(seed=5, trades_per_second=30) as s:
        yield s


@pytest.fixture
def pointed_env(
    sim: BybitSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The kernel's environment: the simulator's URLs and a fresh HUBKIT_HOME.

    nbclient and papermill start kernels with this process's environment, so it is set here.
    """
    env = kernel_env(sim_env(sim, tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_is_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: outputs are not cleared"
            assert cell.execution_count is None


def test_kernelspec_resolves() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(python_kernel_name())
    assert spec.language == "python"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_against_the_simulator(
    name: str, pointed_env: dict[str, str], tmp_path: Path
) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if name == "scheduled_sync":  # keep the default run short (the parameters cell says 10s)
        nb.cells[1].source = nb.cells[1].source.replace('duration = "10s"', 'duration = "2s"')
    client = NotebookClient(
        nb,
        kernel_name=python_kernel_name(),
        timeout=120,
        startup_timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    check_outputs(name, nb)


def test_scheduled_sync_with_papermill_parameters(
    pointed_env: dict[str, str], tmp_path: Path, sim: BybitSimulator
) -> None:
    import papermill

    store = tmp_path / "scheduled.db"
    output = tmp_path / "run.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "scheduled_sync.ipynb"),
        str(output),
        parameters={
            "dataset": "trades",
            "symbols": "BTCUSDT,ETHUSDT",
            "duration": "2s",
            "store": str(store),
        },
        kernel_name=python_kernel_name(),
        cwd=str(tmp_path),
        progress_bar=False,
        start_timeout=120,
        execution_timeout=120,
    )
    nb = nbformat.read(output, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "BTCUSDT,ETHUSDT" in injected[0].source
    check_outputs("scheduled_sync", nb)
    text = output_text(nb)
    assert "ETHUSDT" in text
    assert store.exists()

    # the rows really are in the store the parameters named
    from hubkit.store.inventory import store_inventory

    assert {t.name: t.rows for t in store_inventory(store)}["bybit_public_trade_linear"]


def test_scheduled_sync_of_a_rest_dataset(pointed_env: dict[str, str], tmp_path: Path) -> None:
    import papermill

    output = tmp_path / "instruments.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "scheduled_sync.ipynb"),
        str(output),
        parameters={"dataset": "instruments", "store": str(tmp_path / "i.db")},
        kernel_name=python_kernel_name(),
        cwd=str(tmp_path),
        progress_bar=False,
        start_timeout=120,
        execution_timeout=120,
    )
    nb = nbformat.read(output, as_version=4)
    assert not errors_of(nb)
    found = re.search(r"dataset instruments: synced for [\d.]+ s, (\d+) rows", output_text(nb))
    assert found is not None and int(found.group(1)) > 0
