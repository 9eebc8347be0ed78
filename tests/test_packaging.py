"""What a built wheel carries: the simulator's datasets and the licence metadata.

``.ci/run`` builds the wheel and runs ``hubkit demo`` from it in a fresh virtual environment;
these tests keep the checkout's side of that promise without building anything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ROOT / "hubkit" / "testing" / "bybit" / "data"


def test_every_dataset_file_is_in_the_package_data_folder() -> None:
    # datasets/ stays the source; the package links to each file the simulator reads, and
    # setuptools copies what the links point to into the wheel.
    sources = sorted(p.name for p in (ROOT / "datasets").glob("*.json"))
    assert "instruments_linear.json" in sources and "prices.json" in sources
    shipped = sorted(p.name for p in PACKAGE_DATA.glob("*.json"))
    assert shipped == sources
    for name in sources:
        assert (PACKAGE_DATA / name).read_bytes() == (ROOT / "datasets" / name).read_bytes()


def test_package_data_and_licence_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "data/*.json" in setuptools["package-data"]["hubkit.testing.bybit"]
    # An SPDX expression and the licence file (PEP 639), which setuptools 77 first supports;
    # the older ``license = {text = ...}`` table stops building in 2027.
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["build-system"]["requires"] == ["setuptools>=77"]
    assert any(d.startswith("platformdirs") for d in project["project"]["dependencies"])
