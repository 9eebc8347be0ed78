"""Several processes upsert one PostgreSQL table through pgbulk at the same time.

Each writer commits batches of its own new keys plus a random sample of keys that every
writer updates, with its cursor row in the same transaction, for a fixed time. Afterwards
every committed row is there exactly once, nothing else is, every shared key holds a write
that was committed, and each cursor matches its writer's rows. A writer killed with SIGKILL
after staging a batch leaves none of it behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time
import traceback
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from hubkit import pgbulk

WRITERS = 3
DURATION = 10.0  # seconds every writer keeps writing
BATCH = 200  # own new keys per batch
SHARED = 300  # keys every writer updates
SHARED_PER_BATCH = 60


def _tables() -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    rows = sa.Table(
        "rows",
        md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("writer", sa.BigInteger, nullable=False),
        sa.Column("batch", sa.BigInteger, nullable=False),
    )
    cursors = sa.Table(
        "cursors",
        md,
        sa.Column("writer", sa.BigInteger, primary_key=True),
        sa.Column("batch", sa.BigInteger, nullable=False),
    )
    return rows, cursors


def _shared(writer: int, batch: int) -> list[int]:
    return random.Random(writer * 1_000_003 + batch).sample(range(SHARED), SHARED_PER_BATCH)


def _batch(writer: int, batch: int) -> pl.DataFrame:
    ids = [f"w{writer}-b{batch}-{i}" for i in range(BATCH)]
    ids += [f"shared-{j}" for j in _shared(writer, batch)]
    return pl.DataFrame({"id": ids, "writer": writer, "batch": batch})


def _cursor_stmt(cursors: sa.Table, writer: int, batch: int) -> sa.Insert:
    stmt = postgresql.insert(cursors).values(writer=writer, batch=batch)
    return stmt.on_conflict_do_update(index_elements=["writer"], set_={"batch": batch})


def _writer(url: str, writer: int, start: Any, results: Any) -> None:
    committed = 0
    try:
        rows, cursors = _tables()
        conn = pgbulk.connect(url)
        try:
            with conn.cursor() as cur:
                start.wait(timeout=120)
                deadline = time.monotonic() + DURATION
                while time.monotonic() < deadline:
                    pgbulk.upsert(cur, rows, _batch(writer, committed))
                    pgbulk.execute(cur, _cursor_stmt(cursors, writer, committed))
                    conn.commit()
                    committed += 1
        finally:
            conn.close()
        results.put((writer, committed, None))
    except BaseException:
        results.put((writer, committed, traceback.format_exc()))


def _create(url: str) -> None:
    rows, cursors = _tables()
    conn = pgbulk.connect(url)
    try:
        with conn.cursor() as cur:
            pgbulk.execute(cur, sa.schema.CreateTable(rows))
            pgbulk.execute(cur, sa.schema.CreateTable(cursors))
        conn.commit()
    finally:
        conn.close()


def _read(url: str, stmt: sa.Select[Any]) -> pl.DataFrame:
    conn = pgbulk.connect(url)
    try:
        with conn.cursor() as cur:
            return pgbulk.to_frame(pgbulk.fetch_arrow(cur, stmt))
    finally:
        conn.close()


def test_three_writers_lose_and_duplicate_nothing(postgres_database: str) -> None:
    _create(postgres_database)
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(postgres_database, w, start, results))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    reports = [results.get(timeout=DURATION + 180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [err for _, _, err in reports if err]
    assert not errors, "\n".join(errors)
    committed = {w: n for w, n, _ in reports}
    print(f"batches committed per writer in {DURATION:.0f} s: {committed}")
    assert all(n > 0 for n in committed.values()), committed

    rows, cursors = _tables()
    stored = _read(postgres_database, sa.select(rows))
    own = stored.filter(~pl.col("id").str.starts_with("shared-"))
    expected_own = {
        f"w{w}-b{b}-{i}" for w, n in committed.items() for b in range(n) for i in range(BATCH)
    }
    assert own.height == len(expected_own)  # no key twice
    assert set(own["id"]) == expected_own  # none lost, none extra

    touched = {j for w, n in committed.items() for b in range(n) for j in _shared(w, b)}
    shared = stored.filter(pl.col("id").str.starts_with("shared-"))
    assert sorted(shared["id"]) == sorted(f"shared-{j}" for j in touched)
    for key, w, b in shared.iter_rows():
        assert b < committed[w] and int(key.removeprefix("shared-")) in _shared(w, b), key

    cursor_rows = _read(postgres_database, sa.select(cursors)).rows()
    assert sorted(cursor_rows) == [(w, n - 1) for w, n in sorted(committed.items())]


def _staged_then_wait(url: str, staged: Any) -> None:
    rows, _ = _tables()
    conn = pgbulk.connect(url)
    cur = conn.cursor()
    pgbulk.upsert(cur, rows, _batch(9, 0))
    staged.set()
    threading.Event().wait()  # parked, uncommitted, until killed


def test_a_writer_killed_before_commit_leaves_nothing(postgres_database: str) -> None:
    _create(postgres_database)
    rows, _ = _tables()
    ctx = mp.get_context("spawn")
    staged = ctx.Event()
    proc = ctx.Process(target=_staged_then_wait, args=(postgres_database, staged))
    proc.start()
    try:
        assert staged.wait(timeout=120), "the writer never staged its batch"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    assert _read(postgres_database, sa.select(sa.func.count()).select_from(rows)).item() == 0
    # The same keys can be written (no lock or row left behind by the dead session).
    conn = pgbulk.connect(postgres_database)
    try:
        with conn.cursor() as cur:
            assert pgbulk.upsert(cur, rows, _batch(9, 0)) == BATCH + SHARED_PER_BATCH
        conn.commit()
    finally:
        conn.close()
