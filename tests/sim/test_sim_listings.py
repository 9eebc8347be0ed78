"""Listing, status changes and delisting at run time, as instruments-info serves them."""

from __future__ import annotations

import pytest
from simclient import result

from hubkit.testing import BybitSimulator


def symbols(sim: BybitSimulator, **params: str) -> dict[str, str]:
    items = result(sim, "/v5/market/instruments-info", category="linear", limit=1000, **params)
    return {item["symbol"]: item["status"] for item in items["list"]}


def test_listing_status_and_delisting_show_on_the_next_request(bybit_sim: BybitSimulator) -> None:
    assert symbols(bybit_sim)["BTCUSDT"] == "Trading"
    bybit_sim.list_symbol("linear", "NEWUSDT", like="BTCUSDT")
    new = result(bybit_sim, "/v5/market/instruments-info", category="linear", symbol="NEWUSDT")
    item = new["list"][0]
    model = result(bybit_sim, "/v5/market/instruments-info", category="linear", symbol="BTCUSDT")
    assert item["priceFilter"] == model["list"][0]["priceFilter"]
    assert int(item["launchTime"]) == pytest.approx(bybit_sim.now_ms(), abs=60_000)

    bybit_sim.set_status("linear", "ETHUSDT", "Closed")
    default = symbols(bybit_sim)
    assert "NEWUSDT" in default and "ETHUSDT" not in default  # the default list is Trading only
    assert symbols(bybit_sim, status="Closed")["ETHUSDT"] == "Closed"

    bybit_sim.delist("linear", "ADAUSDT")
    assert "ADAUSDT" not in symbols(bybit_sim)
    gone = result(bybit_sim, "/v5/market/instruments-info", category="linear", symbol="ADAUSDT")
    assert gone["list"] == []


def test_changes_to_unknown_symbols_are_refused(bybit_sim: BybitSimulator) -> None:
    with pytest.raises(ValueError, match="NOPEUSDT"):
        bybit_sim.set_status("linear", "NOPEUSDT", "Trading")
    with pytest.raises(ValueError, match="NOPEUSDT"):
        bybit_sim.list_symbol("linear", "XUSDT", like="NOPEUSDT")
    with pytest.raises(ValueError, match="already listed"):
        bybit_sim.list_symbol("linear", "BTCUSDT", like="ETHUSDT")
