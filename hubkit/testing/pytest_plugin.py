"""pytest fixtures for hubkit and its users: ``bybit_sim`` and ``hub_store``.

Registered through the ``pytest11`` entry point, so any project that installs hubkit can use::

    def test_trades(bybit_sim):                     # a running BybitSimulator, one per test
        httpx.get(f"{bybit_sim.rest_url}/v5/market/time")

    @pytest.mark.bybit_sim(seed=7, trades_per_second=200, time_scale=60)
    def test_fast_klines(bybit_sim): ...           # marker kwargs go to BybitSimulator(...)

    def test_store(hub_store): ...                  # str path of a fresh SQLite file in tmp_path

``bybit_sim_session`` is one simulator shared by a whole session (cheaper; do not change its
faults). Importing this module is cheap: the simulator is imported when a fixture first runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hubkit.testing.bybit import BybitSimulator

__all__ = ["bybit_sim", "bybit_sim_session", "hub_store"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bybit_sim(**kwargs): keyword arguments for the bybit_sim fixture's simulator"
    )


@pytest.fixture
def bybit_sim(request: pytest.FixtureRequest) -> Iterator[BybitSimulator]:
    """A running ``BybitSimulator`` for one test (seed 0 unless the ``bybit_sim`` marker says)."""
    from hubkit.testing.bybit import BybitSimulator

    marker = request.node.get_closest_marker("bybit_sim")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    with BybitSimulator(**kwargs) as sim:
        yield sim


@pytest.fixture(scope="session")
def bybit_sim_session() -> Iterator[BybitSimulator]:
    """One running ``BybitSimulator`` (seed 0) shared by every test of the session."""
    from hubkit.testing.bybit import BybitSimulator

    with BybitSimulator() as sim:
        yield sim


@pytest.fixture
def hub_store(tmp_path: Path) -> str:
    """Path (str) of a not-yet-created SQLite store file in the test's temporary folder."""
    return str(tmp_path / "hubkit.db")
