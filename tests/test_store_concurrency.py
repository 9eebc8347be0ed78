"""Two writer processes and a reader process share one SQLite file for a fixed time.

Writers upsert distinct keys in batches, each batch with a cursor and an outbox entry in the
same transaction; the reader counts, queries and reads everything in a loop. Nobody may see
"database is locked" (or any error), and no written row may be lost.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hubkit.entity import reflect
from hubkit.store import OutboxWrite, Store

# SQLite's file locking; tests/test_pg_store.py has the same on PostgreSQL
pytestmark = pytest.mark.sqlite_only

DURATION = 10.0  # seconds every process keeps working
BATCH = 50


@dataclass
class Tick:
    id: str
    writer: int
    seq: int
    price: float
    at: datetime


def _writer(path: str, writer: int, start: Any, results: Any) -> None:
    written = 0
    try:
        with Store(path) as store:
            table = store.table(reflect(Tick, "id"))
            batch = 0
            start.wait(timeout=120)
            deadline = time.monotonic() + DURATION
            while time.monotonic() < deadline:
                rows = [
                    Tick(f"w{writer}-{batch}-{i}", writer, batch, i / 10, datetime.now(UTC))
                    for i in range(BATCH)
                ]
                table.upsert(
                    rows,
                    cursor=f"{writer}:{batch}",
                    outbox=[OutboxWrite("create", (rows[0].id,))],
                )
                written += len(rows)
                batch += 1
        results.put(("writer", writer, written, None))
    except BaseException:
        results.put(("writer", writer, written, traceback.format_exc()))


def _reader(path: str, start: Any, results: Any) -> None:
    reads = 0
    try:
        with Store(path) as store:
            table = store.table(reflect(Tick, "id"))
            last = 0
            start.wait(timeout=120)
            deadline = time.monotonic() + DURATION
            while time.monotonic() < deadline:
                n = table.count()
                assert n >= last, f"row count went back from {last} to {n}"
                last = n
                table.query({"writer": 1}, order_by="seq", descending=True, limit=10)
                frame = table.read_all()
                assert frame.height >= n
                table.state()
                reads += 1
        results.put(("reader", 0, reads, None))
    except BaseException:
        results.put(("reader", 0, reads, traceback.format_exc()))


def test_two_writers_and_a_reader_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    with Store(path) as store:
        store.table(reflect(Tick, "id"))  # created up front: all workers start writing at once

    ctx = mp.get_context("spawn")  # no fork: the parent runs threads (Polars, SQLite)
    results = ctx.Queue()
    start = ctx.Barrier(3)  # the clocks start when every process has opened the store
    procs = [
        ctx.Process(target=_writer, args=(path, 1, start, results)),
        ctx.Process(target=_writer, args=(path, 2, start, results)),
        ctx.Process(target=_reader, args=(path, start, results)),
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=DURATION + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    failures = [o[3] for o in outcomes if o[3] is not None]
    assert failures == [], "\n".join(failures)
    written = sum(o[2] for o in outcomes if o[0] == "writer")
    reads = sum(o[2] for o in outcomes if o[0] == "reader")
    assert written > 0 and reads > 0
    with Store(path) as store:
        table = store.table(reflect(Tick, "id"))
        assert table.count() == written
        assert table.outbox_count() == written // BATCH
        for writer in (1, 2):
            mine = table.query({"writer": writer})
            assert mine.height == mine["id"].n_unique()
