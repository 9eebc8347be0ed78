"""Fixtures of the command-line tests (a plugin: ``pytest_plugins = ["cli_fixtures"]``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import sim_env

from hubkit.testing import BybitSimulator


@pytest.fixture
def pointed(
    bybit_sim: BybitSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[BybitSimulator]:
    """The simulator, with hubkit's URLs and home pointed at it for in-process commands."""
    for name, value in sim_env(bybit_sim).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path / "home"))
    yield bybit_sim
