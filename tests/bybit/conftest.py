"""Fixtures for the ByBit provider tests: the real samples and spec helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "bybit"


@pytest.fixture
def samples_dir() -> Path:
    """``tests/samples/bybit``: ByBit's public responses and frames (see its SOURCES.md)."""
    return SAMPLES


@pytest.fixture
def sample(samples_dir: Path) -> Callable[[str], Any]:
    """``sample("ws_kline.json")`` -> the parsed JSON of one sample."""

    def read(name: str) -> Any:
        return json.loads((samples_dir / name).read_text())

    return read


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "soak: a long run under faults (tens of seconds); part of the default suite and CI",
    )
