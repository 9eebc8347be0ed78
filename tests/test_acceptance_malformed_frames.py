"""Acceptance: malformed WebSocket frames reach the error handler naming the field, the trades
sink keeps running, and every stored trade is exactly one the simulator made."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from hubkit.bybit.provider import open_trades
from hubkit.errors import DecodeError, HubkitError
from hubkit.testing.bybit import BybitSimulator
from hubkit.types import Change, Source

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
EVERY = 5  # every 5th data message of a connection is malformed, the three kinds in turn
COLUMNS = ["exec_id", "symbol", "price", "size", "side", "time", "is_block_trade", "seq"]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _malformed(sim: BybitSimulator) -> int:
    counts = sim.fault_counts
    return sum(n for name, n in counts.items() if name.startswith("malformed_"))


@pytest.mark.bybit_sim(symbols={"linear": SYMBOLS}, trades_per_second=100.0, history_seconds=5.0)
def test_malformed_frames_are_reported_skipped_whole_and_the_stream_goes_on(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    bybit_sim.faults.malformed_every_n_messages = EVERY
    errors: list[HubkitError] = []
    stored_rows: list[int] = []

    def on_change(change: Change) -> None:
        if change.source is Source.REMOTE:
            stored_rows.append(change.frame.height)

    with open_trades(
        SYMBOLS, store=tmp_path / "t.db", rest_url=bybit_sim.rest_url, ws_url=bybit_sim.ws_url
    ) as sink:
        sink.set_error_handler(errors.append)  # also receives what the connection reports
        sink.subscribe(on_change)
        wait_until(lambda: len(errors) >= 9, "three malformed frames of each kind")
        # the sink keeps running: good trades keep arriving after the bad frames
        after_errors = sum(stored_rows)
        wait_until(lambda: sum(stored_rows) >= after_errors + 100, "good trades after them")
        bybit_sim.faults.malformed_every_n_messages = None
        # frames of one connection arrive in order, and errors and changes reach the handlers
        # in that order: once trades sent after the switch are stored, every malformed frame
        # sent before it has been reported
        switched = sum(stored_rows)
        wait_until(lambda: sum(stored_rows) >= switched + 50, "trades after the switch")
        total = _malformed(bybit_sim)
        status = sink.status()
        stored = sink.dao.query()

    # every malformed frame was reported once, as a DecodeError
    assert len(errors) == total == _malformed(bybit_sim)
    assert all(isinstance(e, DecodeError) for e in errors), errors
    counts = bybit_sim.fault_counts
    assert (
        min(counts[f"malformed_{k}"] for k in ("invalid_json", "wrong_types", "missing_fields"))
        >= 3
    )
    # ... naming the field that broke it (a frame that is not JSON at all has no field)
    by_field: dict[str | None, list[HubkitError]] = {}
    for error in errors:
        by_field.setdefault(getattr(error, "field", None), []).append(error)
    not_json = by_field.pop(None, [])
    assert len(not_json) == counts["malformed_invalid_json"]
    assert all("not JSON" in str(e) for e in not_json)
    assert set(by_field) == {"ts", "p"}, by_field.keys()  # a string where ts is a number; no p
    assert len(by_field["ts"]) == counts["malformed_wrong_types"]
    assert len(by_field["p"]) == counts["malformed_missing_fields"]
    assert all("'p' (column 'price') is missing" in str(e) for e in by_field["p"])
    assert all("$.ts" in str(e) for e in by_field["ts"])
    assert status.connected and status.last_error is not None
    assert status.last_error.startswith("DecodeError")

    # nothing partial: each stored trade is a ground-truth trade, field for field
    assert stored.height >= 100
    assert stored.select(COLUMNS).null_count().row(0) == (0,) * len(COLUMNS)
    assert stored["exec_id"].is_duplicated().sum() == 0
    truth = (
        bybit_sim.ground_truth("trades")
        .filter((pl.col("category") == "linear") & pl.col("symbol").is_in(SYMBOLS))
        .with_columns(
            time=pl.from_epoch("time_ms", time_unit="ms").dt.replace_time_zone("UTC"),
        )
        .select(COLUMNS)
        .cast(dict(stored.select(COLUMNS).schema))
    )
    joined = stored.select(COLUMNS).join(truth, on="exec_id", how="left", suffix="_truth")
    for column in COLUMNS[1:]:
        differs = joined.filter(pl.col(column).ne_missing(pl.col(f"{column}_truth")))
        assert differs.height == 0, (column, differs.head(3))
