"""Shared fixtures: the session's PostgreSQL server (``hubkit.testing.pg_fixtures``) and
``store_url``, which runs a test once per store backend.

``store_url`` is a new SQLite file for the ``sqlite`` run and a new, empty database on the
session's PostgreSQL server for the ``postgresql`` run. Tests that hold only on SQLite (WAL,
pragmas, the ADBC SQLite driver, file paths) are marked ``sqlite_only`` and take no
``store_url``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_backends import BACKENDS, backend_url

pytest_plugins = ["hubkit.testing.pg_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: the behaviour tested exists only on a SQLite store"
    )


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store, once per backend (see the module doc)."""
    return backend_url(request, request.param, tmp_path)
