"""A store on PostgreSQL: native column types, rows written by other clients, several
processes writing one table through ``Store``, and a writer killed in the middle of a batch.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import sqlalchemy as sa
from test_store import Record, as_utc, record

from hubkit import pgbulk
from hubkit.entity import reflect
from hubkit.store import OutboxWrite, Store

WRITERS = 3
BATCHES = 25  # per writer
OWN = 150  # new keys per batch
SHARED = 200  # keys every writer updates
KILL_BATCH = 20_000


@dataclass
class Tick:
    id: str
    writer: int
    batch: int
    at: datetime


def _ticks(writer: int, batch: int) -> list[Tick]:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    own = [Tick(f"w{writer}-b{batch}-{i}", writer, batch, at) for i in range(OWN)]
    # every writer rewrites a third of the shared keys in each batch, in its own order
    shared = [Tick(f"s{j}", writer, batch, at) for j in range(SHARED) if (j + batch) % 3 == 0]
    return own + shared[::-1] if writer % 2 else own + shared


def test_entity_columns_have_native_types(postgres_database: str) -> None:
    with Store(postgres_database) as s:
        s.table(reflect(Record, "id")).upsert([record(1)])
    query = (
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'record'"
    )
    with psycopg.connect(pgbulk.libpq_uri(postgres_database)) as conn:
        types = dict(conn.execute(query).fetchall())
    assert types["at"] == "timestamp with time zone"
    assert types["amount"] == "numeric"
    assert types["meta"] == "jsonb"
    assert types["active"] == "boolean"
    assert types["day"] == "date"
    assert types["count"] == "bigint"
    assert types["ratio"] == "double precision"
    assert types["side"] == "text" and types["level"] == "bigint"


def test_rows_written_by_other_clients_read_back_in_hubkit_form(postgres_database: str) -> None:
    with Store(postgres_database) as s:
        t = s.table(reflect(Record, "id"))
        t.upsert([record(1)])
        with psycopg.connect(pgbulk.libpq_uri(postgres_database)) as conn:
            conn.execute(
                "UPDATE record SET amount = '1.500', meta = '{\"b\": [1,  2], \"a\": null}', "
                "at = '2024-05-01 09:30:00+09'"
            )
        got = t.get("r00001")
        assert got is not None
        assert got.amount == Decimal("1.5") and got.meta == {"a": None, "b": [1, 2]}
        assert got.at == datetime(2024, 5, 1, 0, 30, tzinfo=UTC)
        row = t.read_all().row(0, named=True)
        assert row["amount"] == "1.5"  # canonical decimal text, as hubkit writes it
        assert row["meta"] == '{"a":null,"b":[1,2]}'  # compact JSON text
        # values bound in queries are cast to the column types
        assert t.query({"amount": Decimal("1.50")}).height == 1
        assert t.query({"at": datetime(2024, 5, 1, 0, 30, tzinfo=UTC)}).height == 1
        assert t.query(t.table.c.day == record(1).day).height == 1
        assert t.query({"meta": {"b": [1, 2], "a": None}}).height == 1


def _writer(url: str, writer: int, start: Any, results: Any) -> None:
    try:
        start.wait(timeout=120)
        with Store(url) as s:
            t = s.table(reflect(Tick, "id"))
            for b in range(BATCHES):
                entry = OutboxWrite("create", f"w{writer}-b{b}-0")
                t.upsert(_ticks(writer, b), cursor=f"{writer}:{b}", outbox=[entry])
        results.put((writer, None))
    except BaseException:
        results.put((writer, traceback.format_exc()))


def test_three_processes_write_one_table_losing_and_duplicating_nothing(
    postgres_database: str,
) -> None:
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(postgres_database, w, start, results))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()  # every writer opens the table at once: creation must not collide
    reports = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [err for _, err in reports if err]
    assert not errors, "\n".join(errors)

    with Store(postgres_database) as s:
        t = s.table(reflect(Tick, "id"))
        stored = t.read_all()
        own = stored.filter(~stored["id"].str.starts_with("s"))
        expected = {
            f"w{w}-b{b}-{i}" for w in range(WRITERS) for b in range(BATCHES) for i in range(OWN)
        }
        assert own.height == len(expected) and set(own["id"]) == expected
        for key, w, b in own.select("id", "writer", "batch").iter_rows():
            assert key.startswith(f"w{w}-b{b}-")
        shared = stored.filter(stored["id"].str.starts_with("s"))
        assert sorted(shared["id"]) == sorted(f"s{j}" for j in range(SHARED))
        for key, _w, b in shared.select("id", "writer", "batch").iter_rows():
            assert (int(key[1:]) + b) % 3 == 0  # a write some writer committed
        assert t.count() == len(expected) + SHARED
        # each batch's outbox entry committed with it: one per batch, none twice
        pending = t.outbox_pending()
        assert sorted(e.key[0] for e in pending) == sorted(
            f"w{w}-b{b}-0" for w in range(WRITERS) for b in range(BATCHES)
        )
        assert len({e.id for e in pending}) == WRITERS * BATCHES
        cursor = t.state().cursor
        assert cursor is not None and cursor.endswith(f":{BATCHES - 1}")


def _endless_writer(url: str) -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    with Store(url) as s:
        t = s.table(reflect(Tick, "id"))
        b = 0
        while True:
            rows = [Tick(f"b{b}-{i}", 0, b, at) for i in range(KILL_BATCH)]
            t.upsert(rows, cursor=str(b))
            b += 1


def _writing_now(url: str) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND pid <> pg_backend_pid() "
        "AND (query ILIKE 'INSERT INTO tick%' OR query ILIKE 'COPY%')"
    )
    with psycopg.connect(pgbulk.libpq_uri(url)) as conn:
        row = conn.execute(query).fetchone()
    return row is not None and int(row[0]) > 0


def test_a_writer_killed_mid_batch_leaves_only_whole_batches(postgres_database: str) -> None:
    with Store(postgres_database) as s:
        t = s.table(reflect(Tick, "id"))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_endless_writer, args=(postgres_database,))
    proc.start()
    try:
        deadline = time.monotonic() + 300
        with Store(postgres_database) as s:
            t = s.table(reflect(Tick, "id"))
            while t.state().cursor is None and time.monotonic() < deadline:
                time.sleep(0.05)  # polling for a condition, not timing
            assert t.state().cursor is not None, "the writer never committed a batch"
        busy = False
        while not busy and time.monotonic() < deadline:
            busy = _writing_now(postgres_database)
        assert busy, "the writer was never seen writing a batch"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    with Store(postgres_database) as s:
        t = s.table(reflect(Tick, "id"))
        cursor = t.state().cursor
        assert cursor is not None
        done = int(cursor) + 1
        counts = t.read_all().group_by("batch").len().sort("batch")
        assert counts["batch"].to_list() == list(range(done))
        assert set(counts["len"]) == {KILL_BATCH}
        # the killed session left no lock behind: its next batch can be written
        t.upsert(
            [Tick(f"b{done}-{i}", 0, done, datetime(2024, 1, 1, tzinfo=UTC)) for i in range(3)]
        )
        assert t.count() == done * KILL_BATCH + 3


def test_same_rows_as_sqlite_for_every_kind(postgres_database: str, tmp_path: Any) -> None:
    items = [record(i) for i in range(1, 40)]
    frames = []
    for url in (f"sqlite:///{tmp_path / 'x.db'}", postgres_database):
        with Store(url) as s:
            t = s.table(reflect(Record, "id"))
            t.upsert(items)
            frames.append(t.read_all().sort("id"))
            assert t.get("r00002") == as_utc(record(2))
    assert frames[0].equals(frames[1])
    assert sa.make_url(postgres_database).get_backend_name() == "postgresql"
