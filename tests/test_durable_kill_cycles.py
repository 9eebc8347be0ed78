"""A store file survives many kills in the middle of writing, with in-process readers peeking.

Each cycle runs a child process that opens a sink on the same file (alternately on the fast
ADBC store and on ``Store(path, fast=False)``), commits batches from a writer thread without
pause, peeks at the file with every in-process reader ``hubkit.sqlite_guard`` documents as
safe (the standard ``sqlite3`` module, pandas and Polars on a ``sqlite3`` connection, Polars
through ADBC, SQLAlchemy), first while the writer commits and then with the writer paused
(each reader must then see every commit), and is killed with SIGKILL while the writer is
committing again. After each kill this process checks the file: every reported commit is
there (plus at most the batch in flight), nothing else, and ``integrity_check`` is ok; the
next cycle's sink must find exactly those rows.

``tests/test_durable_sqlite.py`` kills once per reader kind after the writing stopped; this
test kills during writes, many times over one file. The default suite runs 3 cycles; set
``HUBKIT_KILL_CYCLES=20`` for the full acceptance run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import suppress
from pathlib import Path

from test_durable_sqlite import COUNT, HEAD, READERS

REPO = Path(__file__).resolve().parents[1]
CYCLES = int(os.environ.get("HUBKIT_KILL_CYCLES", "3"))
BATCH = 50
TIMEOUT = 240.0
SAFE = ("pandas", "polars-adbc", "polars-sqlite3", "sqlalchemy", "sqlite3")

BODY = """
PEEKS = {}
for name, code in READERS.items():
    space = dict(globals())
    exec(textwrap.dedent(code), space)
    PEEKS[name] = space["peek"]

sink = hubkit.open_sink(Row, key="id", store=STORE(DB), cache=None)
start = sink.dao.count()
print(f"start {start}", flush=True)
state = {"last": start}
go = threading.Event()
go.set()
idle = threading.Event()

def write():
    n = start
    while True:
        if not go.is_set():
            idle.set()
            go.wait()
            idle.clear()
        sink.dao.upsert(batch(n, BATCH))
        n += BATCH
        state["last"] = n
        committed(DB, n)

threading.Thread(target=write, daemon=True).start()
for name in sorted(PEEKS):  # while the writer commits: must not disturb it
    PEEKS[name](DB)
go.clear()
idle.wait()
for name in sorted(PEEKS):  # writer paused: each reader sees every commit
    check(DB, name, PEEKS[name](DB), state["last"])
print("peeked", flush=True)
go.set()
sys.stdin.read()
"""


def run_cycle(tmp_path: Path, db: Path, fast: bool) -> tuple[int, int, list[str]]:
    """One cycle; returns (rows the sink found, last reported commit, reader complaints)."""
    script = tmp_path / "cycle.py"
    readers = {name: READERS[name] for name in SAFE}
    store = "db" if fast else "hubkit.Store(db, fast=False)"
    setup = (
        f"import textwrap\nDB = {str(db)!r}\nBATCH = {BATCH}\nCOUNT = {COUNT!r}\n"
        f"READERS = {readers!r}\nSTORE = lambda db: {store}\n"
    )
    script.write_text(textwrap.dedent(HEAD) + setup + BODY)
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
    start = last = -1
    peeked = False
    complaints: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "start":
                start = last = int(rest)
            elif word == "committed":
                last = int(rest.split()[1])
                if peeked:
                    break  # the writer is committing again: kill it now
            elif word == "stale":
                complaints.append(line.strip())
            elif word == "peeked":
                peeked = True
        else:
            child.wait(TIMEOUT)
            raise AssertionError(f"the cycle ended early:\n{child.stderr.read()}")  # type: ignore[union-attr]
    finally:
        with suppress(ProcessLookupError):  # it may have died of an error (reported above)
            os.kill(child.pid, signal.SIGKILL)
        child.wait(TIMEOUT)
    # Commits it reported after the line that triggered the kill, before the kill landed.
    for line in child.stdout:
        if line.startswith("committed "):
            last = int(line.split()[2])
    return start, last, complaints


def stored(db: Path) -> tuple[list[int], list[tuple[str]]]:
    conn = sqlite3.connect(db)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM row ORDER BY id")]
        return ids, conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def test_commits_survive_repeated_kills_during_writes_and_peeks(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    expected = 0
    for cycle in range(CYCLES):
        start, last, complaints = run_cycle(tmp_path, db, fast=cycle % 2 == 0)
        assert start == expected, f"cycle {cycle}: the sink found {start} rows of {expected}"
        assert last > start, f"cycle {cycle}: nothing was committed"
        assert not complaints, complaints
        ids, integrity = stored(db)
        assert integrity == [("ok",)], f"cycle {cycle}: {integrity}"
        # every reported commit, and at most the one batch committed but not yet reported
        assert len(ids) in (last, last + BATCH), f"cycle {cycle}: {len(ids)} rows, {last} reported"
        assert ids == list(range(len(ids))), f"cycle {cycle}: rows missing in between"
        expected = len(ids)
