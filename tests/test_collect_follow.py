"""A collector and a follower end to end: a real ``hubkit collect`` process streams the
simulator's trades into a shared store (a SQLite file, or the session's PostgreSQL server)
while a sink in this process follows that store with ``policy=hubkit.Follow()`` and no
connection. After the collector stops on SIGTERM, every trade it stored is in the follower's
cache and arrived in the follower's REMOTE change events; the stored trades are the
simulator's, none lost within the period collected."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import sim_env
from store_backends import BACKENDS, backend_url
from test_collect_cli import (
    SYMBOLS,
    TABLE,
    CollectProcess,
    _config,
    _stored,
    _truth_window,
)

import hubkit
from hubkit.bybit import PublicTrade
from hubkit.bybit.entities import PUBLIC_TRADE_KEY
from hubkit.sink import Sink
from hubkit.testing import BybitSimulator
from hubkit.types import Change, Op, Source

pytestmark = pytest.mark.timeout(240)


def _until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(params=BACKENDS)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, request.param, tmp_path)


@pytest.fixture
def collectors() -> Iterator[list[CollectProcess]]:
    started: list[CollectProcess] = []
    yield started
    for process in started:
        process.kill()


class Events:
    """The exec_ids a sink's change events carried, by op and source."""

    def __init__(self, sink: Sink) -> None:
        self.changes: list[Change] = []
        sink.subscribe(self.changes.append)

    def keys(self, op: Op, source: Source) -> set[str]:
        return {
            key
            for change in list(self.changes)
            if change.op is op and change.source is source
            for key in change.frame.get_column("exec_id").to_list()
        }


@pytest.mark.bybit_sim(
    symbols={"linear": list(SYMBOLS)}, trades_per_second=40.0, history_seconds=5.0
)
def test_every_trade_a_collector_stores_reaches_a_follower_cache_and_events(
    bybit_sim: BybitSimulator, shared: str, tmp_path: Path, collectors: list[CollectProcess]
) -> None:
    follower = hubkit.open_sink(
        PublicTrade, PUBLIC_TRADE_KEY, store=shared, table=TABLE, policy=hubkit.Follow()
    )
    try:
        assert follower.connection is None  # it never talks to the exchange
        events = Events(follower)
        log = tmp_path / "collect.log"
        collectors.append(CollectProcess(_config(tmp_path, shared), sim_env(bybit_sim), log))
        _until(lambda: _stored(shared).height >= 200, "200 trades stored by the collector")
        _until(lambda: follower.frame().height >= 100, "trades reach the follower while collecting")
        assert collectors[0].stop() == 0, log.read_text()

        stored = _stored(shared)
        stored_ids = set(stored["exec_id"])

        def caught_up() -> bool:
            return set(follower.frame()["exec_id"]) == stored_ids

        _until(caught_up, "the follower's cache holding every stored trade")
        assert follower.frame().height == stored.height
        _until(
            lambda: events.keys(Op.UPSERT, Source.REMOTE) == stored_ids,
            "every stored trade delivered in the follower's REMOTE events",
        )
        assert {change.source for change in events.changes} == {Source.REMOTE}
        assert events.keys(Op.DELETE, Source.REMOTE) == set()
        # the follower's rows are the stored rows
        columns = follower.frame().columns
        assert follower.frame().sort("exec_id").equals(stored.select(columns).sort("exec_id"))
    finally:
        follower.close()

    truth = bybit_sim.ground_truth("trades").filter(pl.col("category") == "linear")
    assert stored.height == len(stored_ids)  # nothing duplicated
    assert set(stored["symbol"]) == set(SYMBOLS)
    for symbol in SYMBOLS:
        mine = set(stored.filter(pl.col("symbol") == symbol)["exec_id"])
        assert mine == _truth_window(truth, stored, symbol), symbol  # nothing lost or extra
