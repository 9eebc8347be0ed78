"""Followers: a sink with ``policy=Follow()`` follows what other processes commit to its store.

The writers are real processes (``follow_writer.py``) committing to a real SQLite file; the
follower is a sink in this process with no connection.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from follow_writer import Trade
from store_backends import BACKENDS, backend_url

import hubkit
from hubkit.errors import StaleDataWarning, ValidationError
from hubkit.policies import follow as follow_policy
from hubkit.policies.follow import net_change, resync_diff
from hubkit.sink import Sink
from hubkit.store import Store, changelog
from hubkit.store.changelog import Entry
from hubkit.types import Change, Op, Source

WRITER = Path(__file__).with_name("follow_writer.py")
DEADLINE = 60.0
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run_writer(db: str, how: str, op: str, first: int, count: int, batch: int) -> None:
    args = [str(db), how, op, str(first), str(count), str(batch)]
    done = subprocess.run(
        [sys.executable, str(WRITER), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]


def truth(db: str) -> pl.DataFrame:
    with Store(db) as store:
        return store.table(hubkit.reflect(Trade, "exec_id")).read_all().sort("exec_id")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.02)


def ids(first: int, count: int) -> set[str]:
    return {f"t{i:06d}" for i in range(first, first + count)}


class Recorder:
    """The changes a sink emitted, by op."""

    def __init__(self, sink: Sink) -> None:
        self.changes: list[Change] = []
        sink.subscribe(self.changes.append)

    def keys(self, op: Op, source: Source = Source.REMOTE) -> set[str]:
        return {
            key
            for c in list(self.changes)
            if c.op is op and c.source is source
            for key in c.frame.get_column("exec_id").to_list()
        }

    def sources(self) -> set[Source]:
        return {c.source for c in list(self.changes)}


class Gate:
    """Holds every follower's next read of the log until ``release()``: a follower that
    cannot keep up, whatever tells it of commits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = threading.Event()
        read = follow_policy._read_next

        def held(*args: Any) -> Any:
            self.opened.wait(DEADLINE)
            return read(*args)

        monkeypatch.setattr(follow_policy, "_read_next", held)

    def release(self) -> None:
        self.opened.set()


def follower(db: str, **options: object) -> Sink:
    return hubkit.open_sink(Trade, "exec_id", store=db, policy=hubkit.Follow(), **options)


def same_rows(sink: Sink, db: str) -> bool:
    return sink.frame().sort("exec_id").equals(truth(db))


def _made(url: str) -> str:
    with Store(url) as store:
        store.table(hubkit.reflect(Trade, "exec_id"))
    return url


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared store holding an empty trades table: a SQLite file, or a database on the
    session's PostgreSQL server."""
    return _made(backend_url(request, request.param, tmp_path))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return _made(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.mark.parametrize("how", ["store", "sink"])
def test_follower_applies_every_commit_of_a_writer_process(db: str, how: str) -> None:
    sink = follower(db)
    try:
        assert sink.connection is None
        seen = Recorder(sink)
        run_writer(db, how, "upsert", 0, 600, 20)
        wait_for(lambda: same_rows(sink, db), "the follower's cache matches the store")
        assert seen.keys(Op.UPSERT) == ids(0, 600)
        assert seen.sources() == {Source.REMOTE}
        # updates of rows committed earlier arrive as their latest version
        price = sink.frame().filter(pl.col("exec_id") == "t000000")["price"].item()
        assert Decimal(price) == Decimal("60000.1")

        run_writer(db, how, "delete", 100, 250, 50)
        wait_for(lambda: same_rows(sink, db), "deletes reach the follower")
        assert seen.keys(Op.DELETE) == ids(100, 250)
        assert sink.status().rows == 350
        deleted = [c.frame for c in seen.changes if c.op is Op.DELETE]
        assert pl.concat(deleted).null_count().sum_horizontal().item() == 0  # whole rows

        status = sink.status()
        assert status.behind is not None and status.behind >= 0
        assert hubkit.status_table(status)["behind_s"].item() == status.behind
    finally:
        sink.close()


def test_a_restarted_follower_holds_what_was_committed_meanwhile_and_follows_on(
    db: str,
) -> None:
    sink = follower(db)
    try:
        run_writer(db, "store", "upsert", 0, 100, 10)
        wait_for(lambda: same_rows(sink, db), "the first rows reach the follower")
    finally:
        sink.close()
    run_writer(db, "store", "upsert", 100, 100, 25)
    run_writer(db, "store", "delete", 0, 50, 25)

    sink = follower(db)
    try:
        assert same_rows(sink, db)  # opened with everything committed while it was closed
        seen = Recorder(sink)
        run_writer(db, "sink", "upsert", 200, 100, 10)
        wait_for(lambda: same_rows(sink, db), "new commits reach the reopened follower")
        assert seen.keys(Op.UPSERT) == ids(200, 100)
        assert seen.keys(Op.DELETE) == set()
    finally:
        sink.close()


def test_own_writes_are_local_changes_only_and_other_writes_still_arrive(db: str) -> None:
    sink = follower(db)
    try:
        seen = Recorder(sink)
        sink.dao.upsert(Trade("mine", "BTCUSDT", Decimal(1), 1.0, NOW))
        sink.force_sync()  # catches up with everything logged, its own commit included
        assert seen.keys(Op.UPSERT, Source.LOCAL) == {"mine"}
        assert seen.keys(Op.UPSERT) == set()
        run_writer(db, "store", "upsert", 0, 10, 10)
        sink.force_sync()
        assert seen.keys(Op.UPSERT) == ids(0, 10)
        assert same_rows(sink, db)
    finally:
        sink.close()


def test_a_follower_behind_the_pruned_log_rereads_and_emits_the_difference(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changelog, "KEEP", 4)
    monkeypatch.setattr(changelog, "PRUNE_EVERY", 4)
    with Store(db) as store:
        table = store.table(hubkit.reflect(Trade, "exec_id"))
        table.upsert([Trade(f"k{i}", "X", Decimal(i), 1.0, NOW) for i in range(5)])
        sink = hubkit.open_sink(Trade, "exec_id", store=db, policy=hubkit.Follow())
        gate = Gate(monkeypatch)
        try:
            seen = Recorder(sink)
            for i in range(5, 25):
                table.upsert([Trade(f"k{i}", "X", Decimal(i), 1.0, NOW)])
            table.delete(["k0", "k1"])
            logged = changelog.entries(table, 0, 100)
            assert len(logged) <= 4 + 4  # bounded
            assert logged[0].seq > 2  # the follower's next entry is gone
            gate.release()
            sink.force_sync()
            assert same_rows(sink, db)
            assert seen.keys(Op.UPSERT) == {f"k{i}" for i in range(5, 25)}
            assert seen.keys(Op.DELETE) == {"k0", "k1"}
        finally:
            gate.release()
            sink.close()


def _listening(url: str) -> bool:
    """Whether a session of the database at ``url`` has run LISTEN on the commits channel."""
    with sa.create_engine(url).connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query ILIKE 'LISTEN%hubkit_commits%'"
            )
        ).scalar_one()
    return bool(found)


def test_on_postgresql_a_follower_learns_of_commits_through_notify(
    postgres_database: str,
) -> None:
    url = _made(postgres_database)
    # polled once an hour: only the announcements (LISTEN hubkit_commits) can bring commits
    sink = hubkit.open_sink(
        Trade, "exec_id", store=url, policy=hubkit.Follow(interval=timedelta(hours=1))
    )
    try:
        seen = Recorder(sink)
        wait_for(lambda: _listening(url), "the follower LISTENs")
        run_writer(url, "store", "upsert", 0, 60, 20)
        wait_for(lambda: same_rows(sink, url), "announced commits reach the follower")
        assert seen.keys(Op.UPSERT) == ids(0, 60)
        run_writer(url, "sink", "delete", 0, 20, 10)
        wait_for(lambda: same_rows(sink, url), "announced deletes reach the follower")
        assert seen.keys(Op.DELETE) == ids(0, 20)
    finally:
        sink.close()


# -- the change log --------------------------------------------------------------------------


def test_the_log_holds_the_keys_of_each_commit_in_order(db: str) -> None:
    with Store(db) as store:
        table = store.table(hubkit.reflect(Trade, "exec_id"))
        table.upsert([Trade("a", "X", Decimal(1), 1.0, NOW), Trade("b", "X", Decimal(2), 1.0, NOW)])
        table.delete(["a", "missing"])
        table.set_state(cursor="42")  # no rows changed: nothing logged
        table.delete(["missing"])  # nothing deleted: nothing logged
        logged = changelog.entries(table, 0, 10)
        assert [e.seq for e in logged] == [1, 2]
        assert changelog.head(table) == 2
        assert logged[0].upserted == [["a", "b"]] and logged[0].deleted == []
        assert logged[1].upserted == [] and logged[1].deleted == [["a"]]
        assert {e.origin for e in logged} == {table.origin}


# -- pure decisions --------------------------------------------------------------------------


def entry(seq: int, up: list[str], down: list[str], origin: str = "w", at: int = 0) -> Entry:
    return Entry(seq, at or seq, origin, [up] if up else [], [down] if down else [])


def test_net_change_keeps_each_keys_last_write() -> None:
    entries = [
        entry(4, ["a", "b"], []),
        entry(5, ["c"], ["a"]),  # a deleted
        entry(6, ["a"], ["b"]),  # a back, b deleted
        entry(7, ["d"], ["d"]),  # delete, then upsert within one commit: d is upserted
    ]
    net = net_change(entries, 3)
    assert net is not None
    assert sorted(net.upsert) == [("a",), ("c",), ("d",)]
    assert net.delete == [("b",)]
    assert (net.last_seq, net.committed_at) == (7, 7)


def test_net_change_leaves_out_keys_last_written_by_the_follower_itself() -> None:
    entries = [
        entry(1, ["a", "b"], [], at=100),
        entry(2, [], ["a"], origin="me", at=200),  # own delete of a: already applied
        entry(3, ["b"], [], origin="me", at=300),
    ]
    net = net_change(entries, 0, own_origin="me")
    assert net is not None
    assert (net.upsert, net.delete, net.last_seq, net.committed_at) == ([], [], 3, 100)


def test_net_change_refuses_entries_that_do_not_follow_the_position() -> None:
    assert net_change([entry(9, ["a"], [])], 7) is None
    nothing = net_change([], 7)
    assert nothing is not None and nothing.last_seq == 7 and not nothing.upsert


def test_resync_diff_finds_changed_new_and_gone_rows() -> None:
    cached = pl.DataFrame({"k": ["a", "b", "c"], "v": [1, 2, None]})
    stored = pl.DataFrame({"v": [1, 5, None, 7], "k": ["a", "b", "c", "d"]})
    changed, gone = resync_diff(["k"], cached, stored)
    assert changed.sort("k").to_dicts() == [{"k": "b", "v": 5}, {"k": "d", "v": 7}]
    assert gone.height == 0
    changed, gone = resync_diff(["k"], cached, stored.filter(pl.col("k") != "a"))
    assert gone["k"].to_list() == ["a"]


@pytest.mark.parametrize("bad", [{"interval": 0}, {"batch": 0}])
def test_follow_refuses_settings_that_cannot_work(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="Follow"):
        hubkit.Follow(**bad)  # type: ignore[arg-type]


# -- load(..., follow=True) ------------------------------------------------------------------

TRADES_WRITER = """
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from hubkit.bybit.datasets import default_catalog
from hubkit.store import Store

dataset = default_catalog()["trades"]
params = dataset.resolve_params({"symbol": "BTCUSDT"})
with Store(sys.argv[1]) as store:
    table = store.table(dataset.spec(), name=dataset.table_name(params))
    table.upsert([
        {"exec_id": f"x{i}", "symbol": "ETHUSDT" if i % 4 == 0 else "BTCUSDT",
         "price": 60000.0 + i, "size": 0.01, "side": "Buy",
         "time": datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC)}
        for i in range(40)
    ])
print("done")
"""


def test_load_follow_reads_what_a_collector_process_stored_without_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "team.db"
    done = subprocess.run(
        [sys.executable, "-c", TRADES_WRITER, str(db)], capture_output=True, text=True
    )
    assert done.stdout.split() == ["done"], done.stderr
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", "http://127.0.0.1:9")  # nothing answers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed fetch would warn StaleDataWarning
        frame = hubkit.load("trades", symbol="BTCUSDT", store=db, follow=True)
    assert sorted(frame["exec_id"]) == sorted(f"x{i}" for i in range(40) if i % 4)
    assert set(frame["symbol"]) == {"BTCUSDT"}
    with pytest.warns(StaleDataWarning):  # without follow, load tries the remote first
        hubkit.load("trades", symbol="BTCUSDT", store=db)


def test_load_follow_never_syncs_and_sees_each_new_commit(db: str) -> None:
    synced: list[object] = []

    async def sync(request: hubkit.catalog.SyncRequest) -> None:
        synced.append(request)

    catalog = hubkit.Catalog([hubkit.Dataset("trades", Trade, "exec_id", sync)])
    try:
        assert catalog.load("trades", store=db, follow=True).height == 0
        run_writer(db, "store", "upsert", 0, 30, 10)
        assert catalog.load("trades", store=db, follow=True).sort("exec_id").equals(truth(db))
        run_writer(db, "store", "delete", 0, 5, 5)
        assert catalog.load("trades", store=db, follow=True).height == 25
        assert synced == []
    finally:
        catalog.close()


def test_a_follower_with_a_window_never_reads_the_whole_table(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubkit.store import TableStore

    monkeypatch.setattr(changelog, "KEEP", 2)
    monkeypatch.setattr(changelog, "PRUNE_EVERY", 2)
    run_writer(db, "store", "upsert", 0, 300, 100)
    whole_reads: list[str] = []
    read_all = TableStore.read_all

    def counted(self: TableStore) -> pl.DataFrame:
        whole_reads.append(self.name)
        return read_all(self)

    monkeypatch.setattr(TableStore, "read_all", counted)
    sink = follower(db, cache=hubkit.FrameCache(max_rows=50))
    gate = Gate(monkeypatch)
    try:
        seen = Recorder(sink)
        # more commits than the log keeps: the follower lost track and re-reads its window
        run_writer(db, "store", "upsert", 300, 20, 5)
        run_writer(db, "store", "delete", 310, 5, 5)
        gate.release()
        sink.force_sync()
        assert whole_reads == []
        stored = truth(db)
        newest = stored.sort("time").tail(50).sort("exec_id")
        assert sink.frame().sort("exec_id").equals(newest)
        # rows that only left the window are not reported as deleted
        assert seen.keys(Op.DELETE) == ids(310, 5)
        assert seen.keys(Op.UPSERT) <= set(stored.get_column("exec_id"))
    finally:
        gate.release()
        sink.close()


def test_a_follower_without_cache_gets_changes_and_a_gap_when_it_lost_track(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changelog, "KEEP", 2)
    monkeypatch.setattr(changelog, "PRUNE_EVERY", 2)
    sink = follower(db, cache=None)
    gate = Gate(monkeypatch)
    try:
        seen = Recorder(sink)
        run_writer(db, "store", "upsert", 0, 20, 10)
        run_writer(db, "store", "delete", 0, 5, 5)
        gate.release()
        sink.force_sync()
        # read in one step: the trades written and then deleted arrive as deletes only
        assert seen.keys(Op.UPSERT) == ids(5, 15)
        deleted = [c.frame for c in seen.changes if c.op is Op.DELETE]
        assert pl.concat(deleted)["exec_id"].sort().to_list() == sorted(ids(0, 5))
        gate = Gate(monkeypatch)
        with Store(db) as store:  # this writer prunes: the follower's next entry is gone
            table = store.table(hubkit.reflect(Trade, "exec_id"))
            for i in range(6):
                table.upsert([Trade(f"k{i}", "X", Decimal(i), 1.0, NOW)])
        gate.release()
        sink.force_sync()
        assert [c.op for c in seen.changes][-1] is Op.GAP
        assert sink.frame().sort("exec_id").equals(truth(db))  # read from the store
    finally:
        gate.release()
        sink.close()


def test_the_status_shows_a_followers_delay_in_the_lag_column() -> None:
    from hubkit.status import SinkStatus, row_html, row_text
    from hubkit.types import ScheduleStatus, SyncStatus

    status = SinkStatus(
        "trades", SyncStatus.FULL_SYNC, ScheduleStatus.NOT_SCHEDULED, False, None, 1, 0, 0,
        None, lag=9.0, behind=0.25,
    )  # fmt: skip
    assert row_text(status)["lag"] == "250 ms"
    assert "behind the writer" in row_html(status)["lag"]
    assert row_text(replace(status, behind=None))["lag"] == "9.0 s"


@pytest.mark.sqlite_only
def test_writers_of_both_sqlite_paths_share_one_gapless_log(sqlite_db: str) -> None:
    spec = hubkit.reflect(Trade, "exec_id")
    with Store(sqlite_db, fast=False) as plain, Store(sqlite_db) as fast:
        slow_table, fast_table = plain.table(spec), fast.table(spec)
        slow_table.upsert([Trade("a", "X", Decimal(1), 1.0, NOW)])
        fast_table.upsert([Trade("b", "X", Decimal(1), 1.0, NOW)])
        slow_table.delete(["a"])
        logged = changelog.entries(fast_table, 0, 10)
    assert [(e.seq, e.upserted, e.deleted) for e in logged] == [
        (1, [["a"]], []),
        (2, [["b"]], []),
        (3, [], [["a"]]),
    ]
