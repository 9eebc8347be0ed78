"""pytest fixtures for tests on a real PostgreSQL server: ``postgres_server``, ``postgres_url``.

Load them with ``pytest_plugins = ["hubkit.testing.pg_fixtures"]`` in a top-level conftest::

    def test_on_postgres(postgres_url):          # SQLAlchemy URL of the session's server
        engine = sqlalchemy.create_engine(postgres_url)

    def test_isolated(postgres_database):        # a fresh, empty database for one test
        engine = sqlalchemy.create_engine(postgres_database)

One server (``EmbeddedPostgres``) serves the whole session and is stopped at its end. A
test that needs it when it cannot start fails with the server's error: it is never skipped,
so a machine that cannot run PostgreSQL shows up as failures, not as silence.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from hubkit.errors import StoreError
from hubkit.testing.postgres import EmbeddedPostgres

__all__ = ["postgres_database", "postgres_server", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """A running ``EmbeddedPostgres`` shared by the session (``.url``, ``.uri``, ``.pid``)."""
    server = EmbeddedPostgres()
    try:
        server.start()
    except StoreError as exc:
        pytest.fail(f"PostgreSQL server for the tests did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: EmbeddedPostgres) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``) of the session server's ``postgres`` database."""
    return postgres_server.url


@pytest.fixture(scope="session")
def _postgres_database_names() -> Iterator[str]:
    return (f"hubkit_test_{n}" for n in itertools.count(1))


@pytest.fixture
def postgres_database(
    postgres_server: EmbeddedPostgres, _postgres_database_names: Iterator[str]
) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database for one test; dropped afterwards."""
    name = next(_postgres_database_names)
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
