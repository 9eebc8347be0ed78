from __future__ import annotations

import subprocess
import sys

import hubkit


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert hubkit.__all__ == sorted(hubkit.__all__)
    for name in hubkit.__all__:
        assert getattr(hubkit, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        hubkit.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("hubkit.no_such_name resolved")


def test_import_hubkit_stays_light() -> None:
    heavy = ["httpx", "websockets", "ipywidgets", "pyarrow", "adbc_driver_sqlite", "pandas"]
    code = f"import sys, hubkit\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import hubkit pulled in: {out}"


def test_submodules_import_on_demand() -> None:
    from hubkit import bybit, testing

    assert hasattr(bybit, "Instrument")
    assert hasattr(testing, "BybitSimulator")
