"""The decisions behind a stream that loses nothing: which partitions a lost frame concerns,
where their backfill starts, which write failures are retried, when reading pauses."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from hubkit.errors import ClosedError, StoreError, ValidationError
from hubkit.gapfill import ALL, StreamPosition
from hubkit.lossfill import (
    lost_partitions,
    must_pause,
    must_pause_reading,
    note_loss,
    write_is_transient,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_a_topic_naming_a_known_partition_concerns_only_it() -> None:
    known = {"BTCUSDT", "ETHUSDT"}
    assert lost_partitions("publicTrade.BTCUSDT", known, "symbol") == {"BTCUSDT"}
    assert lost_partitions("kline.5.ETHUSDT", known, "symbol") == {"ETHUSDT"}


def test_an_unreadable_frame_or_unknown_topic_concerns_every_partition() -> None:
    known = {"BTCUSDT"}
    assert lost_partitions(None, known, "symbol") is None
    assert lost_partitions("publicTrade.SOLUSDT", known, "symbol") is None  # never seen yet


def test_an_unpartitioned_stream_is_one_partition() -> None:
    assert lost_partitions(None, set(), None) == {ALL}
    assert lost_partitions("tickers.BTCUSDT", set(), None) == {ALL}


def test_the_first_loss_of_a_partition_keeps_its_older_position() -> None:
    early = StreamPosition(key=("a",), time=T0)
    later = StreamPosition(key=("b",), time=T1)
    losses = note_loss(
        None, "publicTrade.BTCUSDT", {"BTCUSDT": early}, partition="symbol", origin=T0
    )
    losses = note_loss(
        losses,
        "publicTrade.BTCUSDT",
        {"BTCUSDT": later, "ETHUSDT": later},
        partition="symbol",
        origin=T2,
    )
    assert losses.positions == {"BTCUSDT": early}
    assert losses.only == {"BTCUSDT"}
    assert losses.count == 2
    assert losses.origin == T0


def test_a_loss_of_unknown_topic_backfills_every_partition_seen_and_unseen() -> None:
    seen = {"BTCUSDT": StreamPosition(key=("a",), time=T1)}
    losses = note_loss(None, None, seen, partition="symbol", origin=T0)
    assert losses.only is None
    assert losses.known_positions() == seen


def test_a_partition_with_no_row_yet_is_kept_without_position() -> None:
    losses = note_loss(None, "x", {}, partition=None, origin=T0)
    assert losses.positions == {ALL: None}
    assert losses.known_positions() == {}
    assert losses.only == {ALL}


def _store_error(cause: Exception) -> StoreError:
    error = StoreError(f"upsert failed: {cause}")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "cause",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database or disk is full"),
        OSError("[Errno 28] No space left on device"),
    ],
)
def test_a_locked_or_full_store_is_retried(cause: Exception) -> None:
    assert write_is_transient(_store_error(cause))


def test_rows_the_store_refuses_for_good_are_not_retried() -> None:
    assert not write_is_transient(_store_error(sqlite3.IntegrityError("NOT NULL constraint")))
    assert not write_is_transient(ValidationError("price: not a number"))
    assert not write_is_transient(ClosedError("sink closed"))
    assert not write_is_transient(RuntimeError("database is locked"))  # not the store's


def test_reading_pauses_at_max_buffer_unless_the_store_is_stalled() -> None:
    normal = {"max_buffer": 10, "held_rows": 5, "max_held_rows": 100}
    assert not must_pause_reading(buffered_events=9, stalled=False, **normal)
    assert must_pause_reading(buffered_events=10, stalled=False, **normal)
    assert not must_pause_reading(buffered_events=10_000, stalled=True, **normal)


def test_reading_pauses_at_the_held_rows_bound_in_any_case() -> None:
    assert must_pause(100, 100) and not must_pause(99, 100)
    for stalled in (True, False):
        assert must_pause_reading(
            buffered_events=0, max_buffer=10, held_rows=100, max_held_rows=100, stalled=stalled
        )
