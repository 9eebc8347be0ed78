"""Listings and delistings, driven through the simulator: ByBit's list changes between syncs."""

from __future__ import annotations

import threading
from pathlib import Path

from hubkit.bybit.provider import InstrumentChange, InstrumentProvider
from hubkit.testing.bybit import BybitSimulator
from hubkit.types import Change, Op, Source


def test_listings_and_delistings_seen_through_the_simulator(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    bybit_sim.set_status("linear", "APTUSDT", "PreLaunch")  # not listed by default yet
    listed: list[InstrumentChange] = []
    delisted: list[InstrumentChange] = []
    gone = threading.Event()

    def deleted(change: Change) -> None:
        if change.source is Source.REMOTE and change.op is Op.DELETE:  # part of the snapshot
            gone.set()

    with InstrumentProvider(
        "linear",
        store=tmp_path / "h.db",
        rest_url=bybit_sim.rest_url,
        on_listing=listed.append,
        on_delisting=delisted.append,
    ) as provider:
        assert provider.changes == []  # the first snapshot into an empty table is the baseline
        before = set(provider.active_instruments()["symbol"])
        assert {"BTCUSDT", "ETHUSDT", "ADAUSDT"} <= before and "APTUSDT" not in before
        provider.sink.subscribe(deleted)

        bybit_sim.list_symbol("linear", "NEWUSDT", like="BTCUSDT")  # a new listing
        bybit_sim.set_status("linear", "APTUSDT", "Trading")  # out of pre-launch
        bybit_sim.set_status("linear", "ETHUSDT", "Closed")  # no longer trading
        bybit_sim.delist("linear", "ADAUSDT")  # gone from ByBit's list
        provider.refresh()
        assert gone.wait(10), "the vanished instruments were not deleted"

        kinds = {(c.kind, c.symbol, c.old_status, c.new_status) for c in provider.changes}
        assert kinds == {
            ("listed", "NEWUSDT", None, "Trading"),
            ("listed", "APTUSDT", None, "Trading"),
            ("delisted", "ETHUSDT", "Trading", None),
            ("delisted", "ADAUSDT", "Trading", None),
        }
        assert sorted(c.symbol for c in listed) == ["APTUSDT", "NEWUSDT"]
        assert sorted(c.symbol for c in delisted) == ["ADAUSDT", "ETHUSDT"]
        after = set(provider.active_instruments("linear")["symbol"])
        assert after == (before - {"ETHUSDT", "ADAUSDT"}) | {"NEWUSDT", "APTUSDT"}
        stored = set(provider.instruments()["symbol"])
        assert "ADAUSDT" not in stored and "NEWUSDT" in stored
