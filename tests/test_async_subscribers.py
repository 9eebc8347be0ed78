"""An async change handler slower than the writes: one call at a time, the changes that
arrive meanwhile merged into its next call (nothing lost, order kept), and a close that
says what it leaves undelivered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from hubkit.sink import open_sink
from hubkit.sink.delivery import append_change
from hubkit.types import Change, Gap, Op, Source

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Item:
    id: str
    price: float


def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


class SlowHandler:
    """An async handler that holds each call until ``open()``; counts overlapping calls."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None  # created on hubkit's loop by the first call
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = 0
        self.peak = 0
        self.calls: list[list[str]] = []

    def open(self) -> None:
        assert self.loop is not None and self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)

    async def __call__(self, change: Change) -> None:
        if self.gate is None:
            self.gate, self.loop = asyncio.Event(), asyncio.get_running_loop()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
            self.calls.append(change.frame["id"].to_list())
        finally:
            self.running -= 1


def test_a_slow_async_handler_gets_merged_changes_one_call_at_a_time(tmp_path: Path) -> None:
    handler = SlowHandler()
    ids = [f"r{i:03}" for i in range(100)]
    with open_sink(Item, "id", store=tmp_path / "s.db") as sink:
        sink.subscribe(handler)
        sink.dao.upsert([Item(ids[0], 1.0)])
        eventually(lambda: handler.running == 1)
        for i in ids[1:]:  # one commit, one change each, while the first call is held
            sink.dao.upsert([Item(i, 1.0)])
        handler.open()
        eventually(lambda: sum(len(c) for c in handler.calls) == len(ids))
    assert handler.peak == 1  # never more than one call running
    assert [row for call in handler.calls for row in call] == ids  # every row, in order
    assert handler.calls[0] == [ids[0]]
    assert len(handler.calls) == 2  # the 99 changes that waited came as one


def test_close_logs_what_an_async_handler_did_not_get(tmp_path: Path) -> None:
    handler = SlowHandler()  # never opened
    records: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("hubkit.sink")
    logger.addHandler(capture)
    try:
        with open_sink(Item, "id", store=tmp_path / "s.db") as sink:
            sink.subscribe(handler)
            sink.dao.upsert([Item("first", 1.0)])
            eventually(lambda: handler.running == 1)
            for i in range(10):
                sink.dao.upsert([Item(f"later{i}", 1.0)])
            stored = sink.dao.query().height
    finally:
        logger.removeHandler(capture)
    assert stored == 11  # the store has them all; only the handler missed them
    (record,) = [r for r in records if "not delivered" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "cancels a running call" in message
    assert "1 change(s) (10 rows)" in message
    assert handler.running == 0  # the running call was cancelled, not left behind


def _change(ids: list[str], op: Op = Op.UPSERT, source: Source = Source.LOCAL) -> Change:
    return Change(frame=pl.DataFrame({"id": ids}), source=source, op=op)


def test_consecutive_changes_of_one_kind_merge_in_order() -> None:
    waiting: list[Change] = []
    for ids in (["a"], ["b", "c"], ["d"]):
        append_change(waiting, _change(ids))
    assert len(waiting) == 1
    assert waiting[0].frame["id"].to_list() == ["a", "b", "c", "d"]


def test_changes_of_another_kind_or_gaps_wait_as_their_own() -> None:
    waiting: list[Change] = []
    append_change(waiting, _change(["a"]))
    append_change(waiting, _change(["a"], op=Op.DELETE))
    append_change(waiting, _change(["b"], source=Source.REMOTE, op=Op.DELETE))
    gap = Gap(start=T0, end=T0, reason="x")
    empty = pl.DataFrame({"id": []}, schema={"id": pl.String})
    for _ in range(2):
        append_change(waiting, Change(frame=empty, source=Source.REMOTE, op=Op.GAP, gap=gap))
    append_change(waiting, _change(["c"]))
    assert [(c.op, c.source, c.frame.height) for c in waiting] == [
        (Op.UPSERT, Source.LOCAL, 1),
        (Op.DELETE, Source.LOCAL, 1),
        (Op.DELETE, Source.REMOTE, 1),
        (Op.GAP, Source.REMOTE, 0),
        (Op.GAP, Source.REMOTE, 0),
        (Op.UPSERT, Source.LOCAL, 1),
    ]
