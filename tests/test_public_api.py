from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing of hubkit imported yet); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_public_names_survive_importing_every_submodule() -> None:
    # Importing a submodule binds it on its package: a submodule named like a public
    # function (``hubkit.progress`` once was) silently replaced the function.
    code = """
import importlib, pkgutil, types
import hubkit

names = [m.name for m in pkgutil.walk_packages(hubkit.__path__, "hubkit.")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
for name in hubkit.__all__:
    value = getattr(hubkit, name)
    if isinstance(value, types.ModuleType):
        print("module:", name)
    elif name in hubkit._LAZY:
        if value is not getattr(importlib.import_module(hubkit._LAZY[name]), name):
            print("not from its lazy module:", name)
print("checked", len(names), "modules")
"""
    out = _fresh_python(code).splitlines()
    assert out[:-1] == [], out
    assert out[-1].startswith("checked") and int(out[-1].split()[1]) > 40


def test_progress_stays_callable_after_its_users_are_imported() -> None:
    out = _fresh_python(
        "import hubkit, hubkit.notebook.panel, hubkit.bybit.backfill\n"
        "print(sum(1 for _ in hubkit.progress(range(3), mode='quiet')))\n"
        "print(type(hubkit.progress(total=2, mode='quiet')).__name__)\n"
    )
    assert out.splitlines() == ["3", "Progress"]


def test_subpackages_are_attributes_after_a_plain_import() -> None:
    out = _fresh_python(
        "import hubkit\n"
        "print(hubkit.bybit.Instrument.__name__, hubkit.testing.BybitSimulator.__name__,"
        " hubkit.notebook.status_panel.__name__)\n"
        "print(sorted({'bybit', 'notebook', 'testing'} & set(dir(hubkit))))\n"
    )
    assert out.splitlines() == [
        "Instrument BybitSimulator status_panel",
        "['bybit', 'notebook', 'testing']",
    ]


def test_status_rendering_stands_below_the_notebook_layer() -> None:
    # types and status are imported by every sink; neither may reach up into hubkit.notebook
    # (not even lazily inside a function).
    root = Path(hubkit.__file__).parent
    for name in ("types.py", "status.py"):
        tree = ast.parse((root / name).read_text())
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        assert not [m for m in imported if m and m.startswith("hubkit.notebook")], name
    assert hubkit.SinkStatus.__module__ == "hubkit.status"
