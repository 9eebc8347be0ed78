"""Commit announcements over LISTEN/NOTIFY on the real server, within and across processes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
import traceback
from typing import Any

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa
from adbc_driver_manager.dbapi import Connection

from hubkit import pgbulk, pgnotify
from hubkit.errors import StoreError

COMMITS = 300  # announced commits the writer process makes
ROWS = 100  # rows per commit


def _setup(url: str) -> sa.Table:
    md = sa.MetaData()
    rows = sa.Table(
        "rows",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("value", sa.Double),
    )
    pgnotify.commits_table(md)
    engine = sa.create_engine(url)
    try:
        md.create_all(engine)
    finally:
        engine.dispose()
    return rows


def _connect(url: str) -> Connection:
    return pgbulk.connect(url)


async def _collect(
    url: str, until: int, started: Any = None
) -> list[tuple[pgnotify.Commit, float]]:
    got: list[tuple[pgnotify.Commit, float]] = []
    async with asyncio.timeout(180), pgnotify.Listener(url) as listener:
        if started is not None:
            started.set()
        async for commit in listener:
            got.append((commit, time.monotonic()))
            if commit.seq >= until:
                break
    return got


def test_announcements_arrive_on_commit_only_and_count_without_gaps(
    postgres_database: str,
) -> None:
    rows = _setup(postgres_database)

    async def main() -> tuple[list[pgnotify.Commit], dict[str, int], dict[str, int]]:
        async with pgnotify.Listener(postgres_database) as listener:
            before = await listener.latest()
            conn = _connect(postgres_database)
            try:
                with conn.cursor() as cur:
                    # the second transaction rolls back: it announces nothing and the
                    # third one gets the number it would have used
                    for i, (seq, keep) in enumerate([(1, True), (2, False), (2, True)]):
                        pgbulk.upsert(cur, rows, pl.DataFrame({"id": [i], "value": [1.0]}))
                        assert pgnotify.announce(cur, "rows") == seq
                        if keep:
                            conn.commit()
                        else:
                            conn.rollback()
                    assert pgnotify.announce(cur, "other") == 1
                    conn.commit()
            finally:
                conn.close()
            # someone else's message on the channel is not an announcement
            async with await psycopg.AsyncConnection.connect(
                pgbulk.libpq_uri(postgres_database), autocommit=True
            ) as other:
                await other.execute("NOTIFY hubkit_commits, 'not json'")
                await other.execute("""NOTIFY hubkit_commits, '{"table": "x"}'""")
            got = []
            async with asyncio.timeout(60):
                async for commit in listener:
                    got.append(commit)
                    if commit.table == "other":
                        break
            return got, before, await listener.latest()

    got, before, after = asyncio.run(main())
    assert before == {}
    assert got == [
        pgnotify.Commit("rows", 1),
        pgnotify.Commit("rows", 2),
        pgnotify.Commit("other", 1),
    ]
    assert after == {"rows": 2, "other": 1}


def test_listener_outside_async_with_raises_store_error(postgres_database: str) -> None:
    listener = pgnotify.Listener(postgres_database)
    with pytest.raises(StoreError, match="not open"):
        asyncio.run(listener.latest())


def _writer(url: str, started: Any, results: Any) -> None:
    try:
        md = sa.MetaData()
        rows = sa.Table("rows", md, sa.Column("id", sa.BigInteger, primary_key=True))
        conn = _connect(url)
        committed: list[float] = []
        try:
            with conn.cursor() as cur:
                started.wait(timeout=120)
                for i in range(COMMITS):
                    ids = range(i * ROWS, (i + 1) * ROWS)
                    pgbulk.upsert(cur, rows, pl.DataFrame({"id": ids}))
                    pgnotify.announce(cur, "rows")
                    committed.append(time.monotonic())
                    conn.commit()
        finally:
            conn.close()
        results.put((committed, None))
    except BaseException:
        results.put(([], traceback.format_exc()))


def test_a_follower_process_receives_every_commit_of_a_writer_process(
    postgres_database: str,
) -> None:
    _setup(postgres_database)
    ctx = mp.get_context("spawn")
    started, results = ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(postgres_database, started, results))
    writer.start()
    try:
        got = asyncio.run(_collect(postgres_database, COMMITS, started))
        committed, error = results.get(timeout=120)
    finally:
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()
    assert error is None, error
    assert [c for c, _ in got] == [pgnotify.Commit("rows", n) for n in range(1, COMMITS + 1)]
    # CLOCK_MONOTONIC is one clock for every process on the machine.
    lat_ms = sorted((t - committed[c.seq - 1]) * 1000 for c, t in got)
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
    print(
        f"\ncommit -> notification received, {COMMITS} commits of {ROWS} rows: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {lat_ms[-1]:.2f} ms"
    )
