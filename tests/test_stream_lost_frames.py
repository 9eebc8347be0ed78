"""A malformed WebSocket frame is a gap that the trades sink fills over REST: against the
simulator's ground truth no trade is lost, with the frame cache and without it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hubkit.bybit.provider import open_trades
from hubkit.errors import DecodeError, HubkitError
from hubkit.testing.bybit import BybitSimulator
from hubkit.testing.bybit.tradecheck import TradeCheck, compare_trades
from hubkit.types import Change, Op

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _malformed(sim: BybitSimulator) -> int:
    return sum(n for name, n in sim.fault_counts.items() if name.startswith("malformed_"))


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
@pytest.mark.bybit_sim(symbols={"linear": SYMBOLS}, trades_per_second=150.0, history_seconds=5.0)
def test_trades_of_malformed_frames_are_backfilled_not_lost(
    bybit_sim: BybitSimulator, tmp_path: Path, cached: bool
) -> None:
    bybit_sim.faults.malformed_every_n_messages = 7
    errors: list[HubkitError] = []
    gaps: list[Change] = []
    options = {} if cached else {"cache": None}
    with open_trades(
        SYMBOLS,
        store=tmp_path / "t.db",
        rest_url=bybit_sim.rest_url,
        ws_url=bybit_sim.ws_url,
        **options,
    ) as sink:
        sink.set_error_handler(errors.append)
        sink.subscribe(lambda change: gaps.append(change) if change.op is Op.GAP else None)
        wait_until(lambda: _malformed(bybit_sim) >= 12, "a dozen malformed frames")
        bybit_sim.faults.malformed_every_n_messages = None
        cut = bybit_sim.now_ms()
        check: list[TradeCheck] = []

        def complete() -> bool:
            stored = sink.dao.query()
            check[:] = [
                compare_trades(
                    stored, bybit_sim.ground_truth("trades"), symbols=SYMBOLS, until_ms=cut
                )
            ]
            return check[0].lost == 0

        # the lost frames' trades arrive by backfill; without it they never would
        wait_until(complete, "every trade up to the cut", timeout=20.0)
        status = sink.status()
    result = check[0]
    assert result.clean, result
    assert result.expected > 100
    # every malformed frame was still reported, and none needed a GAP
    malformed = _malformed(bybit_sim)
    assert sum(isinstance(e, DecodeError) for e in errors) == malformed
    assert gaps == [], [g.gap for g in gaps]
    assert status.connected
