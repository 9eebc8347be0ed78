"""What hubkit committed to a SQLite file survives other SQLite readers in the same process.

The ADBC driver behind hubkit's fast path carries its own copy of SQLite; ``sqlite3``,
pandas and SQLAlchemy use the system's. Each copy deletes the write-ahead log when its last
connection to a file closes, while the other copy may still be writing into it. Each test
runs a script in a child process that opens sinks on 20 files, commits rows into each, peeks
at the file in between with one kind of reader (checking the reader sees every commit so
far), commits again, and reports every commit; then the child is killed with SIGKILL and
this process checks each file: every reported row is there, and ``integrity_check`` is ok.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import hubkit
from hubkit.errors import StoreError
from hubkit.sqlite_guard import SqliteGuard

pytestmark = pytest.mark.sqlite_only  # other SQLite libraries on the same file


@dataclass
class Item:
    id: int
    name: str


REPO = Path(__file__).resolve().parents[1]
FILES = 20
TIMEOUT = 240.0

HEAD = """
import sqlite3, sys, threading
from dataclasses import dataclass

import hubkit

@dataclass
class Row:
    id: int
    name: str

def batch(start, n=100):
    return [Row(i, "r") for i in range(start, start + n)]

def committed(db, n):
    print(f"committed {db} {n}", flush=True)

def check(db, what, seen, n):
    if seen != n:
        print(f"stale {db} {what} saw {seen} of {n}", flush=True)

def on_sqlite3(db, read):
    conn = sqlite3.connect(db)
    try:
        return int(read(conn))
    finally:
        conn.close()
"""

# Each reader opens, reads (the row count) and closes, as a notebook cell peeking at a store.
COUNT = "SELECT count(*) AS n FROM row"
READERS = {
    "sqlite3": """
        def peek(db):
            return on_sqlite3(db, lambda conn: conn.execute(COUNT).fetchone()[0])
        """,
    "pandas": """
        import pandas as pd
        def peek(db):
            return on_sqlite3(db, lambda conn: pd.read_sql(COUNT, conn)["n"][0])
        """,
    "polars-adbc": """
        import polars as pl
        def peek(db):
            frame = pl.read_database_uri(
                COUNT, f"sqlite:///{db}", engine="adbc"
            )
            return int(frame["n"][0])
        """,
    "polars-sqlite3": """
        import polars as pl
        def peek(db):
            return on_sqlite3(db, lambda conn: pl.read_database(COUNT, conn)["n"][0])
        """,
    "sqlalchemy": """
        import sqlalchemy as sa
        def peek(db):
            engine = sa.create_engine(f"sqlite:///{db}")
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text(COUNT)).scalar_one()
            finally:
                engine.dispose()
        """,
    "hubkit-plain-store": """
        def peek(db):
            with hubkit.Store(db, fast=False) as store:
                return store.table(hubkit.reflect(Row, key="id")).count()
        """,
}

# Sinks on FILES files; on each: commit, peek, commit, peek, commit. Sinks stay open.
INTERLEAVED = """
sinks = []
for i in range(FILES):
    db = f"{DIR}/s{i}.db"
    sink = hubkit.open_sink(Row, key="id", store=STORE(db), cache=None)
    sinks.append(sink)
    n = 0
    for step in range(3):
        sink.dao.upsert(batch(n))
        n += 100
        committed(db, n)
        if step < 2:
            check(db, "peek", peek(db), n)
    check(db, "count", sink.dao.count(), n)
print("ready", flush=True)
sys.stdin.read()
"""

# The reader's connection opens before the sink and closes while the sink is open.
OPENED_BEFORE = """
sinks = []
for i in range(FILES):
    db = f"{DIR}/s{i}.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS other (x INTEGER)")
    conn.commit()
    sink = hubkit.open_sink(Row, key="id", store=db, cache=None)
    sinks.append(sink)
    sink.dao.upsert(batch(0))
    committed(db, 100)
    check(db, "early connection", conn.execute("SELECT count(*) FROM row").fetchone()[0], 100)
    conn.close()
    sink.dao.upsert(batch(100))
    committed(db, 200)
print("ready", flush=True)
sys.stdin.read()
"""

# A second store on the same file opens, commits, peeks and closes while the sink is open.
SECOND_STORE = """
sinks = []
for i in range(FILES):
    db = f"{DIR}/s{i}.db"
    sink = hubkit.open_sink(Row, key="id", store=db, cache=None)
    sinks.append(sink)
    sink.dao.upsert(batch(0))
    with hubkit.Store(db) as other:
        other.table(hubkit.reflect(Row, key="id")).upsert(batch(100))
        check(db, "peek", peek(db), 200)
    committed(db, 200)
    sink.dao.upsert(batch(200))
    committed(db, 300)
print("ready", flush=True)
sys.stdin.read()
"""

# A child forked from a process that uses the store uses it too, then exits; the parent goes on.
FORKED = """
import os
import re
db = f"{DIR}/s0.db"
store = hubkit.Store(db)
table = store.table(hubkit.reflect(Row, key="id"))
table.upsert(batch(0))
committed(db, 100)
pid = os.fork()
if pid == 0:
    table.upsert(batch(100))
    check(db, "child peek", peek(db), 200)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
committed(db, 200)
check(db, "parent peek", peek(db), 200)
table.upsert(batch(200))
committed(db, 300)
check(db, "parent peek", peek(db), 300)
print("ready", flush=True)
sys.stdin.read()
"""

# hubkit commits from another thread while the main thread peeks, as a notebook does while a
# sink stores a stream.
CONCURRENT = """
db = f"{DIR}/s0.db"
sink = hubkit.open_sink(Row, key="id", store=db, cache=None)
done = threading.Event()
def write():
    n = 0
    while not done.is_set():
        sink.dao.upsert(batch(n, 50))
        n += 50
        committed(db, n)
writer = threading.Thread(target=write)
writer.start()
try:
    for _ in range(FILES * 5):
        peek(db)
finally:
    done.set()
    writer.join()
print("ready", flush=True)
sys.stdin.read()
"""


def run_and_kill(
    tmp_path: Path, reader: str, body: str, store: str = "db"
) -> tuple[dict[str, int], list[str]]:
    """Run the script until it prints ``ready``, then SIGKILL it.

    ``store`` is what the script's sinks get as their store, as an expression of ``db``
    (their file). Returns the last count committed per file, and the script's reports of a
    reader that did not see every commit so far.
    """
    script = tmp_path / "script.py"
    setup = f"DIR = {str(tmp_path)!r}\nFILES = {FILES}\nCOUNT = {COUNT!r}\n"
    setup += f"STORE = lambda db: {store}\n"
    parts = [HEAD, setup, READERS[reader], body]
    script.write_text("\n".join(textwrap.dedent(p) for p in parts))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HUBKIT_HOME": str(tmp_path / "home"),
        "HUBKIT_PROGRESS": "quiet",
    }
    child = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    last: dict[str, int] = {}
    lines: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("committed "):
                _, db, n = line.split()
                last[db] = int(n)
            elif line.strip() == "ready":
                break
        else:
            child.wait(TIMEOUT)
            raise AssertionError(f"the script ended early:\n{child.stderr.read()}")  # type: ignore[union-attr]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(TIMEOUT)
    return last, [line for line in lines if line.startswith("stale ")]


def assert_all_stored(committed: dict[str, int]) -> None:
    for db, n in committed.items():
        conn = sqlite3.connect(db)
        try:
            ids = [r[0] for r in conn.execute("SELECT id FROM row ORDER BY id")]
            integrity = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert ids == list(range(n)), f"{db}: {len(ids)} rows of {n} committed"
        assert integrity == [("ok",)], f"{db}: {integrity}"


@pytest.mark.parametrize("reader", sorted(READERS))
def test_commits_survive_a_peek_and_sigkill(tmp_path: Path, reader: str) -> None:
    committed, stale = run_and_kill(tmp_path, reader, INTERLEAVED)
    assert len(committed) == FILES
    assert_all_stored(committed)
    assert not stale


@pytest.mark.parametrize("reader", ["sqlite3", "polars-adbc"])
def test_plain_store_commits_survive_a_peek_and_sigkill(tmp_path: Path, reader: str) -> None:
    # Here hubkit writes through the system library, and Polars reads through ADBC's.
    store = "hubkit.Store(db, fast=False)"
    committed, stale = run_and_kill(tmp_path, reader, INTERLEAVED, store)
    assert len(committed) == FILES
    assert_all_stored(committed)
    assert not stale


def test_commits_survive_a_connection_opened_before_the_sink(tmp_path: Path) -> None:
    committed, stale = run_and_kill(tmp_path, "sqlite3", OPENED_BEFORE)
    assert len(committed) == FILES
    assert_all_stored(committed)
    assert not stale


@pytest.mark.parametrize("reader", ["sqlite3", "polars-adbc"])
def test_commits_survive_peeks_during_writes_and_sigkill(tmp_path: Path, reader: str) -> None:
    committed, _ = run_and_kill(tmp_path, reader, CONCURRENT)
    assert committed
    assert_all_stored(committed)


def test_commits_survive_a_second_store_closing_on_the_same_file(tmp_path: Path) -> None:
    committed, stale = run_and_kill(tmp_path, "sqlite3", SECOND_STORE)
    assert len(committed) == FILES
    assert_all_stored(committed)
    assert not stale


@pytest.mark.parametrize("fast", [True, False])
def test_an_open_store_lets_another_process_checkpoint_everything(
    tmp_path: Path, fast: bool
) -> None:
    # The connections a store keeps open on its file hold no transaction: a checkpoint from
    # another process copies the whole log into the database, so the log cannot grow forever.
    db = tmp_path / "store.db"
    with hubkit.Store(db, fast=fast) as store:
        table = store.table(hubkit.reflect(Item, key="id"))
        for start in range(0, 3000, 1000):
            table.upsert([Item(i, "x" * 100) for i in range(start, start + 1000)])
        checkpoint = (
            "import sqlite3, sys; conn = sqlite3.connect(sys.argv[1]); "
            "print(*conn.execute('PRAGMA wal_checkpoint(PASSIVE)').fetchone())"
        )
        done = subprocess.run(
            [sys.executable, "-c", checkpoint, str(db)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        busy, logged, copied = map(int, done.stdout.split())
        assert (busy, copied) == (0, logged) and logged > 0
        assert table.count() == 3000


@pytest.mark.parametrize("fast", [True, False])
def test_a_closed_store_leaves_no_log_behind(tmp_path: Path, fast: bool) -> None:
    # Every connection the store opened is closed with it: the last one to close copies the
    # log into the database and removes the log and its index.
    db = tmp_path / "store.db"
    with hubkit.Store(db, fast=fast) as store:
        store.table(hubkit.reflect(Item, key="id")).upsert([Item(1, "a")])
        assert Path(f"{db}-wal").exists()
    assert not Path(f"{db}-wal").exists()
    assert not Path(f"{db}-shm").exists()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT id, name FROM item").fetchall() == [(1, "a")]
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_commits_survive_a_forked_child_using_the_store(tmp_path: Path) -> None:
    committed, stale = run_and_kill(tmp_path, "sqlite3", FORKED)
    assert committed
    assert_all_stored(committed)
    assert not stale


def test_guard_closes_after_the_last_use(tmp_path: Path) -> None:
    guard = SqliteGuard(str(tmp_path / "g.db"))
    assert not guard.held
    with guard.use():
        assert guard.held
        with guard.use():
            guard.close()
        assert guard.held  # a use is still in progress
    assert not guard.held
    with guard.use():  # a use after close gets a guard of its own
        assert guard.held
    assert not guard.held


def test_guard_names_a_file_it_cannot_open(tmp_path: Path) -> None:
    path = str(tmp_path / "missing" / "g.db")
    guard = SqliteGuard(path)
    with pytest.raises(StoreError, match=re.escape(path)), guard.use():
        pass
    assert not guard.held
