"""The embedded PostgreSQL server the suite runs on, and its pytest fixtures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import psycopg
import pytest
import sqlalchemy as sa

from hubkit import pgbulk
from hubkit.errors import StoreError
from hubkit.testing.postgres import EmbeddedPostgres


def _gone(pid: int) -> bool:
    # The stopped postmaster may linger as a zombie until its parent reaps it.
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_server_answers_through_sqlalchemy_and_adbc(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
    finally:
        engine.dispose()
    assert int(version) >= 180000

    conn = pgbulk.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            assert pgbulk.fetch_arrow(cur, "SELECT 40 + 2 AS n").to_pylist() == [{"n": 42}]
    finally:
        conn.close()


def test_a_second_connection_sees_committed_rows_only(postgres_database: str) -> None:
    uri = pgbulk.libpq_uri(postgres_database)
    with psycopg.connect(uri) as writer, psycopg.connect(uri, autocommit=True) as reader:
        writer.execute("CREATE TABLE t (id int PRIMARY KEY)")
        writer.commit()
        writer.execute("INSERT INTO t VALUES (1), (2)")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
        writer.commit()
        assert reader.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]


def test_each_database_fixture_starts_empty(postgres_database: str) -> None:
    with psycopg.connect(pgbulk.libpq_uri(postgres_database)) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_server_stops_and_removes_its_folder() -> None:
    with EmbeddedPostgres() as pg:
        uri, pid = pg.uri, pg.pid
        folder = Path(psycopg.conninfo.conninfo_to_dict(uri)["host"] or "")
        assert folder.is_dir()
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not pg.running
    assert _gone(pid)
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(uri, connect_timeout=5)
    with pytest.raises(StoreError, match="not running"):
        _ = pg.url


def test_database_names_are_checked(postgres_server: EmbeddedPostgres) -> None:
    with pytest.raises(StoreError, match="plain lower-case identifier"):
        postgres_server.create_database('x"; DROP DATABASE postgres; --')


def _run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "hubkit.testing.pg_fixtures", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_session_fixture_stops_the_server_when_the_session_ends(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    (tmp_path / "test_uses_server.py").write_text(
        textwrap.dedent(
            f"""
            def test_it(postgres_server):
                open({str(pid_file)!r}, "w").write(str(postgres_server.pid))
            """
        )
    )
    result = _run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _gone(int(pid_file.read_text()))


def test_a_server_that_cannot_start_fails_the_test_instead_of_skipping(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from hubkit.errors import StoreError
            from hubkit.testing.postgres import EmbeddedPostgres

            def _broken(self):
                raise StoreError("no server binaries here")

            EmbeddedPostgres.start = _broken
            """
        )
    )
    (tmp_path / "test_needs_server.py").write_text("def test_it(postgres_url):\n    pass\n")
    result = _run_pytest(tmp_path, "-rs")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "1 error" in out, out
    assert "skipped" not in out, out
    assert "no server binaries here" in out, out
