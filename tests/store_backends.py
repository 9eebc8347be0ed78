"""Store URLs per backend for tests that run on SQLite and on PostgreSQL (see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgresql"]


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh store URL of ``backend`` ("sqlite" or "postgresql") for the requesting test:
    a new SQLite file, or a new, empty database on the session's PostgreSQL server."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url
