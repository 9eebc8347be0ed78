"""A store nobody closes leaves a silent, clean interpreter exit.

Each scenario is a script run as ``python -X dev -W error::ResourceWarning script.py`` that
opens a store (directly, through ``hubkit.load`` or through a sink), uses it and exits without
closing anything. The exit must print nothing at all on stderr: no ADBC "Cannot close
AdbcConnection with open AdbcStatement", no ResourceWarning. As a check that does not depend
on when the garbage collector runs, the last exit hook of each script also counts the ADBC
connections still open; there must be none.

The scenarios where hubkit's loop exists before the store module is imported (as after an
earlier ``hubkit.load``) matter most: then the store's exit hook runs before the loop closes,
and the store is still used after it (a task's cleanup, a stream storing rows, a sink
committing its cursor).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from hubkit.testing import BybitSimulator

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120.0

# Registered first, so it runs last at exit: after hubkit's loop closed and after the store
# finalizers. It counts the ADBC connections still open, then lets the collector run so that
# anything left unclosed would also report itself on stderr.
PRELUDE = """
import atexit, gc, sys

def open_adbc_connections():
    dbapi = sys.modules.get("adbc_driver_manager.dbapi")
    if dbapi is None:
        return 0
    return sum(1 for o in gc.get_objects() if isinstance(o, dbapi.Connection) and not o._closed)

def _report_at_exit():
    print(f"open at exit: {open_adbc_connections()}", flush=True)
    gc.collect()

atexit.register(_report_at_exit)
"""

# Dev mode turns on asyncio debug, which logs loop callbacks slower than 0.1 s; on a loaded
# machine that is noise, not what these scripts check.
QUIET_LOOP = """
from hubkit.bridge import get_bridge
get_bridge().loop.slow_callback_duration = 60.0
"""

ROWS = """
from dataclasses import dataclass
from datetime import UTC, datetime

@dataclass
class Row:
    id: int
    name: str
    at: datetime

def rows(n, name="a", start=0):
    now = datetime.now(UTC)
    return [Row(i, name, now) for i in range(start, start + n)]
"""

USE_STORE = """
from hubkit.entity import reflect
from hubkit.store import OutboxWrite, Store, _DIRECT_MAX

store = Store(DB)
table = store.table(reflect(Row, "id"))
table.upsert(rows(10), cursor="c1")                                     # bound from Arrow
table.upsert(rows(_DIRECT_MAX + 10, "b"), outbox=[OutboxWrite("create", (1,))])  # staged
assert table.read_all().height == _DIRECT_MAX + 10
assert table.query({"name": "b"}, order_by="id", limit=3).height == 3
assert table.get(5) is not None
assert table.count() == _DIRECT_MAX + 10
assert table.delete([1, 2]).height == 2
assert table.state().cursor == "c1"
table.set_state(extra={"k": 1})
assert table.outbox_count() == 1
table.outbox_done([e.id for e in table.outbox_pending()])
"""


def run_script(
    tmp_path: Path, *blocks: str, env: Mapping[str, str] | None = None, db: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the blocks (each dedented on its own) after ``PRELUDE``; ``DB`` is a store path
    (or ``db``, a store URL)."""
    script = tmp_path / "script.py"
    head = f"DB = {db or str(tmp_path / 'store.db')!r}\n"
    script.write_text("\n".join([PRELUDE, head, *(textwrap.dedent(b) for b in blocks)]))
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HUBKIT_HOME": str(tmp_path / "home"),
            "HUBKIT_PROGRESS": "quiet",
            # ADBC then warns (ResourceWarning) about every connection or cursor left unclosed.
            "_ADBC_DRIVER_MANAGER_WARN_UNCLOSED_RESOURCE": "1",
            **(env or {}),
        },
    )


def assert_clean_exit(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.stderr == ""
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines and lines[-1] == "open at exit: 0", done.stdout
    for line in expected:
        assert line in lines, done.stdout


def test_unclosed_store_used_on_every_path(tmp_path: Path, store_url: str) -> None:
    done = run_script(tmp_path, ROWS, USE_STORE, 'print("used", flush=True)', db=store_url)
    assert_clean_exit(done, "used")


def test_store_collected_without_close(tmp_path: Path, store_url: str) -> None:
    use = "def use():\n" + textwrap.indent(textwrap.dedent(USE_STORE), "    ")
    done = run_script(
        tmp_path,
        ROWS,
        use,
        """
        use()
        gc.collect()
        print(f"open after collection: {open_adbc_connections()}", flush=True)
        """,
        db=store_url,
    )
    assert_clean_exit(done, "open after collection: 0")


def test_store_used_by_loop_work_that_ends_at_exit(tmp_path: Path, store_url: str) -> None:
    # The loop exists before the store module is imported, so the store's exit hook runs
    # first; the task's cleanup then writes and reads through a worker thread.
    done = run_script(
        tmp_path,
        "import asyncio",
        QUIET_LOOP,
        "from hubkit.bridge import run_sync_in_worker",
        ROWS,
        USE_STORE,
        """
        def flush():
            table.upsert(rows(3, "late", start=100_000))
            table.upsert(rows(_DIRECT_MAX + 1, "late"))
            return table.read_all().height

        async def until_exit():
            try:
                await asyncio.Event().wait()
            finally:
                height = await run_sync_in_worker(flush)
                print(f"flushed at exit: {height}", flush=True)

        get_bridge().submit(until_exit())
        print("submitted", flush=True)
        """,
        db=store_url,
    )
    assert_clean_exit(done, "submitted", "flushed at exit: 4109")


def test_unclosed_streaming_sink(tmp_path: Path) -> None:
    # A stream storing rows while the process exits, its policy committing its cursor as it
    # stops, and a pushing sink with a local write: none of them closed.
    done = run_script(
        tmp_path,
        "import threading, time",
        QUIET_LOOP,
        "import hubkit",
        "from hubkit.testing import InMemoryConnection",
        ROWS,
        """
        stream = InMemoryConnection(key="id")
        ticks = hubkit.open_sink(
            Row, "id", store=DB, connection=stream, policy=hubkit.WebSocketSubscription(["t"])
        )
        remote = InMemoryConnection(key="id")
        pushed = hubkit.open_sink(
            Row, "id", store=DB, table="pushed", connection=remote,
            policy=hubkit.PushAfterWrite(),
        )
        pushed.dao.upsert(rows(2, "local"))

        def publish():
            n = 0
            while True:
                stream.push_stream("t", [{"id": n, "name": "s", "at": datetime.now(UTC)}])
                n += 1
                time.sleep(0.001)

        threading.Thread(target=publish, daemon=True).start()
        deadline = time.monotonic() + 60
        while ticks.status().rows < 20:
            assert time.monotonic() < deadline, "the stream stored nothing"
            time.sleep(0.01)
        print("streaming", flush=True)
        """,
    )
    assert_clean_exit(done, "streaming")


def test_load_without_closing(tmp_path: Path, bybit_sim: BybitSimulator) -> None:
    # hubkit.load with its own store, then with a shared Store that is never closed.
    done = run_script(
        tmp_path,
        QUIET_LOOP,
        """
        import hubkit
        first = hubkit.load("instruments", category="linear")
        shared = hubkit.Store(DB)
        again = hubkit.load("instruments", category="linear", store=shared)
        assert again.height == first.height > 0
        print("loaded", flush=True)
        """,
        env={"HUBKIT_BYBIT_REST_URL": bybit_sim.rest_url, "HUBKIT_BYBIT_WS_URL": bybit_sim.ws_url},
    )
    assert_clean_exit(done, "loaded")


@pytest.mark.parametrize("fast", [True, False])
def test_closed_store_and_an_open_one_on_the_same_file(tmp_path: Path, fast: bool) -> None:
    done = run_script(
        tmp_path,
        ROWS,
        f"""
        from hubkit.entity import reflect
        from hubkit.store import Store
        with Store(DB, fast={fast!r}) as s:
            s.table(reflect(Row, "id")).upsert(rows(5))
        other = Store(DB, fast={fast!r})
        assert other.table(reflect(Row, "id")).read_all().height == 5
        print("done", flush=True)
        """,
    )
    assert_clean_exit(done, "done")
