"""The default home: ``HUBKIT_HOME``, else the platform's cache folder (``XDG_CACHE_HOME``).

Run in fresh interpreters with a controlled environment, as a user's shell would start them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is the Linux cache folder"
)


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HUBKIT_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path / "user")  # never the real home of whoever runs the tests
    return {**env, **values}


def _default_home(env: dict[str, str]) -> Path:
    code = "from hubkit.home import default_home; print(default_home())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return Path(done.stdout.strip())


def test_follows_xdg_cache_home(tmp_path: Path) -> None:
    cache = tmp_path / "xdg-cache"
    assert _default_home(_env(tmp_path, XDG_CACHE_HOME=str(cache))) == cache / "hubkit"


def test_without_xdg_it_is_the_cache_folder_in_the_home(tmp_path: Path) -> None:
    assert _default_home(_env(tmp_path)) == tmp_path / "user" / ".cache" / "hubkit"


def test_hubkit_home_wins(tmp_path: Path) -> None:
    env = _env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"), HUBKIT_HOME=str(tmp_path / "hk"))
    assert _default_home(env) == tmp_path / "hk"


def test_an_empty_hubkit_home_is_unset(tmp_path: Path) -> None:
    env = _env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"), HUBKIT_HOME="")
    assert _default_home(env) == tmp_path / "xdg" / "hubkit"


def test_the_command_line_keeps_its_store_there(tmp_path: Path) -> None:
    """``hubkit status`` without ``--store`` looks in the XDG cache folder."""
    cache = tmp_path / "xdg-cache"
    env = _env(tmp_path, XDG_CACHE_HOME=str(cache))
    done = subprocess.run(
        [sys.executable, "-m", "hubkit", "status"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1  # nothing stored yet
    assert done.stderr.strip() == f"hubkit status: error: no store at {cache / 'hubkit'}/hubkit.db"
    assert not cache.exists()  # status is read-only
