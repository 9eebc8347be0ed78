"""A bulk commit (more rows than ``changelog.KEYS_MAX``) logs no keys; followers re-read."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from follow_writer import Trade

import hubkit
from hubkit.policies.follow import net_change
from hubkit.store import Store, changelog
from hubkit.store.changelog import Entry
from hubkit.types import Change, Op, Source

WRITER = Path(__file__).with_name("follow_writer.py")
DEADLINE = 120.0


def write(db: Path, first: int, count: int, batch: int) -> None:
    args = [str(db), "store", "upsert", str(first), str(count), str(batch)]
    done = subprocess.run(
        [sys.executable, str(WRITER), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def stored_ids(db: Path) -> set[str]:
    with Store(db) as store:
        frame = store.table(hubkit.reflect(Trade, "exec_id")).read_all()
    return set(frame.get_column("exec_id").to_list())


def test_a_whole_entry_of_another_writer_makes_the_follower_reread() -> None:
    keyed = Entry(1, 10, "other", [["a"]], [])
    whole = Entry(2, 20, "other", [], [], whole=True)
    assert net_change([keyed, whole], 0, "me") is None
    own = Entry(2, 20, "me", [], [], whole=True)  # its writer applied it already
    net = net_change([keyed, own], 0, "me")
    assert net is not None and net.upsert == [("a",)] and net.last_seq == 2


def test_a_bulk_commit_reaches_the_follower_and_logs_no_keys(tmp_path: Path) -> None:
    db = tmp_path / "bulk.db"
    with Store(db) as store:
        store.table(hubkit.reflect(Trade, "exec_id"))
    bulk = changelog.KEYS_MAX + 500
    changes: list[Change] = []
    sink = hubkit.open_sink(Trade, "exec_id", store=db, policy=hubkit.Follow())
    try:
        sink.subscribe(changes.append)
        write(db, 0, bulk, bulk)  # one commit
        write(db, bulk, 30, 10)  # then small ones, logged with their keys
        want = stored_ids(db)
        assert len(want) == bulk + 30
        deadline = time.monotonic() + DEADLINE
        while set(sink.frame().get_column("exec_id").to_list()) != want:
            assert time.monotonic() < deadline, "the follower's cache never matched the store"
            time.sleep(0.05)
        upserted = {
            key
            for c in list(changes)
            if c.op is Op.UPSERT and c.source is Source.REMOTE
            for key in c.frame.get_column("exec_id").to_list()
        }
        assert upserted == want
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        logged = conn.execute(
            "SELECT upserted FROM hubkit_changes WHERE table_name = 'trade' ORDER BY seq"
        ).fetchall()
    assert logged[0][0] == changelog.WHOLE
    assert len(logged) == 4 and all(row[0].startswith("[") for row in logged[1:])
