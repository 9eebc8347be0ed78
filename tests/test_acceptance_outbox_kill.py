"""Acceptance: ``kill -9`` with writes pending in the outbox, then restart: the server applies
each write exactly once.

A JSON-RPC server in this process applies item writes, keeps the answer of every idempotency
key it applied (a repeat gets that answer and changes nothing) and counts applications per
logical write (row id and version, or a removal). It answers slowly, after applying, so kills
land between a write being applied and its answer arriving: the push is repeated after the
restart and must not be applied again. A child process writes rows (creates, updates of rows
of earlier runs, a create then delete) through a ``PushAfterWrite`` sink and is killed with
SIGKILL at random moments; some restarts only flush. The final sink drains the outbox.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hubkit.connections import JsonRpcConnection, JsonRpcMethods
from hubkit.policies import PushAfterWrite
from hubkit.sink import open_sink

METHODS = JsonRpcMethods(create="items.create", update="items.update", remove="items.remove")
KILLS = 10
MAX_RUNS = 24

CHILD = """
import random, sys, time
from dataclasses import dataclass
from datetime import timedelta
from hubkit.connections import JsonRpcConnection, JsonRpcMethods
from hubkit.policies import PushAfterWrite
from hubkit.sink import open_sink

@dataclass
class Item:
    id: str
    version: int
    value: float

db, url, run, seed, creates, updates = sys.argv[1:]
rng = random.Random(int(seed))
methods = JsonRpcMethods(create="items.create", update="items.update", remove="items.remove")
sink = open_sink(
    Item, "id", store=db, name="items",
    connection=JsonRpcConnection(url, methods, timeout=5.0),
    policy=PushAfterWrite(retry_interval=timedelta(milliseconds=20),
                          max_retry_interval=timedelta(milliseconds=100)),
)
print("ready", sink.status().pending_pushes, flush=True)

def write(item):
    sink.dao.upsert(item)                       # committed with its outbox entry ...
    print("w", item.id, item.version, flush=True)   # ... then reported

for i in range(int(creates)):
    write(Item(f"r{run}-{i}", 0, rng.random()))
    if int(updates) and i % 2:
        rows = sink.dao.query()
        pick = rows.row(rng.randrange(rows.height), named=True)
        write(Item(pick["id"], pick["version"] + 1, rng.random()))
if int(creates):
    write(Item(f"r{run}-tmp", 0, rng.random()))
    sink.dao.delete(f"r{run}-tmp")
    print("d", f"r{run}-tmp", flush=True)
deadline = time.monotonic() + 20
while sink.table.outbox_count() and time.monotonic() < deadline:
    time.sleep(0.005)
print("done", sink.table.outbox_count(), flush=True)
sink.close()
"""


@dataclass
class Item:
    id: str
    version: int
    value: float


Logical = tuple[Any, ...]  # ("upsert", id, version) or ("remove", id)


class CountingRpc:
    """JSON-RPC 2.0 over HTTP on 127.0.0.1 that honours idempotency keys and counts."""

    def __init__(self, seed: int) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, Any] = {}  # idempotency key -> the answer it got
        self.logical_of: dict[str, Logical] = {}  # idempotency key -> the write it carried
        self.received: Counter[str] = Counter()  # idempotency key -> requests
        self.applied: Counter[Logical] = Counter()  # logical write -> applications
        self.problems: list[str] = []
        self.slow = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer, delay = outer.handle(json.loads(body), self.headers.get("Idempotency-Key"))
                time.sleep(delay)  # applied, not yet answered: a kill now loses the answer
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client was killed

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/rpc"

    @property
    def replays(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.received.values())

    def handle(self, request: dict[str, Any], header: str | None) -> tuple[dict[str, Any], float]:
        key, method, params = request["id"], request["method"], request["params"]
        logical: Logical = (
            ("remove", params["id"])
            if method == "items.remove"
            else ("upsert", params["id"], params["version"])
        )
        with self._lock:
            delay = self._rng.uniform(0.005, 0.04) if self.slow else 0.0
            self.received[key] += 1
            if header != key:
                self.problems.append(f"{key}: Idempotency-Key header {header!r}")
            if not isinstance(key, str):
                self.problems.append(f"a write without an idempotency key: {request}")
            if key in self.answers:  # a repeat: the first answer, nothing applied
                if self.logical_of[key] != logical:
                    self.problems.append(f"{key} reused for {logical} and {self.logical_of[key]}")
                return {"jsonrpc": "2.0", "id": key, "result": self.answers[key]}, delay
            current = self.rows.get(params["id"])
            if method == "items.remove":
                if current is None:
                    self.problems.append(f"{key}: remove of absent {params['id']}")
                self.rows.pop(params["id"], None)
                result = None
            else:
                before = -1 if current is None else current["version"]
                if params["version"] != before + 1:
                    self.problems.append(f"{key}: {logical} applied over version {before}")
                self.rows[params["id"]] = dict(params)
                result = dict(params)
            self.applied[logical] += 1
            self.answers[key] = result
            self.logical_of[key] = logical
        return {"jsonrpc": "2.0", "id": key, "result": result}, delay

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def seed() -> int:
    return int.from_bytes(os.urandom(4), "big")


@pytest.fixture
def rpc(seed: int) -> Iterator[CountingRpc]:
    server = CountingRpc(seed)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_child(args: list[str], kill_after: float | None) -> tuple[bool, int, list[tuple[str, ...]]]:
    """Run one child; SIGKILL it ``kill_after`` seconds after it is ready (if still running).
    Returns (killed, outbox entries pending at its start, what it reported)."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        first = child.stdout.readline().split()
        assert first[:1] == ["ready"], first
        killed = False
        try:
            child.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            killed = True
        child.wait(timeout=30)
        reported = [tuple(line.split()) for line in child.stdout.read().splitlines()]
    return killed, int(first[1]), reported


def test_kill_9_with_writes_pending_then_restart_applies_each_write_once(
    rpc: CountingRpc, seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    db = tmp_path / "items.db"
    what = f"seed {seed}"
    kills = pending_at_restart = 0
    reported: list[tuple[str, ...]] = []
    for run in range(MAX_RUNS):
        if kills >= KILLS and run > KILLS:
            break
        flush_only = run % 4 == 3  # this restart writes nothing: it only pushes the outbox
        creates, updates = (0, 0) if flush_only else (rng.randint(4, 8), 1)
        args = [str(db), rpc.url, str(run), str(rng.getrandbits(32)), str(creates), str(updates)]
        killed, pending, lines = run_child(args, kill_after=rng.uniform(0.0, 0.3))
        kills += killed
        pending_at_restart += pending
        reported += lines
        if not killed:
            assert lines[-1] == ("done", "0"), (what, lines[-1])
    assert kills >= KILLS, f"{what}: only {kills} kills landed while the child ran"
    assert pending_at_restart > 0, f"{what}: no kill left writes in the outbox"

    # the final restart drains the outbox
    rpc.slow = False
    connection = JsonRpcConnection(rpc.url, METHODS, timeout=5.0)
    policy = PushAfterWrite(retry_interval=timedelta(milliseconds=20))
    with open_sink(
        Item, "id", store=db, name="items", connection=connection, policy=policy
    ) as sink:
        deadline = time.monotonic() + 15
        while sink.table.outbox_count() or sink.status().pending_pushes:
            assert time.monotonic() < deadline, f"{what}: the outbox did not drain"
            time.sleep(0.01)
        local = {row["id"]: row for row in sink.dao.query().iter_rows(named=True)}

    assert rpc.problems == [], (what, rpc.problems[:5])
    # none applied twice; and some pushes were repeated (answers lost to a kill), deduped
    assert max(rpc.applied.values()) == 1, (what, rpc.applied.most_common(3))
    assert rpc.replays > 0, f"{what}: no kill landed between a write and its answer"
    # no write missing: the server holds exactly the local rows ...
    assert rpc.rows == local, what
    # ... and applied every version of every row once, and nothing else
    expected: set[Logical] = {
        ("upsert", row_id, version)
        for row_id, row in local.items()
        for version in range(row["version"] + 1)
    }
    for logical in rpc.applied:
        if logical not in expected:  # only the temporary rows: created, then removed
            row_id = logical[1]
            assert row_id.endswith("-tmp") and row_id not in local, (what, logical)
            assert rpc.applied[("upsert", row_id, 0)] == rpc.applied[("remove", row_id)] == 1
    assert expected <= set(rpc.applied), (what, sorted(expected - set(rpc.applied))[:5])
    # every write a child reported as committed reached the server
    for line in reported:
        if line[0] == "w":
            assert rpc.applied[("upsert", line[1], int(line[2]))] == 1, (what, line)
        elif line[0] == "d":
            assert rpc.applied[("remove", line[1])] == 1, (what, line)
