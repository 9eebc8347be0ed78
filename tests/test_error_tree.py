"""Every error a user can meet is a ``HubkitError``; the ones that replace a builtin exception
still derive from it, so ``except KeyError`` / ``ValueError`` / ``TimeoutError`` keep working."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import hubkit
from hubkit.bridge import get_bridge
from hubkit.catalog import Catalog, Dataset, SyncRequest
from hubkit.store import store_inventory
from hubkit.writes import WriteResult


@dataclass
class Reading:
    id: int
    value: float


async def _sync(request: SyncRequest) -> None:
    await request.upsert([Reading(1, 1.0)])


def _positive(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if int(params.get("above", 0)) < 0:
        raise ValueError(f"above must not be negative, not {params['above']!r}")
    return params


def _catalog() -> Catalog:
    return Catalog([Dataset("readings", Reading, "id", _sync, prepare=_positive)])


def test_an_unknown_dataset_is_a_not_found_error_and_a_key_error(tmp_path: Path) -> None:
    with pytest.raises(hubkit.NotFoundError) as info:
        hubkit.load("nope", catalog=_catalog(), store=tmp_path / "s.db")
    assert isinstance(info.value, KeyError) and isinstance(info.value, hubkit.HubkitError)
    assert str(info.value) == "no dataset 'nope' in this catalog (known: readings)"  # unquoted


def test_a_parameter_a_catalogue_refuses_is_a_parameter_error(tmp_path: Path) -> None:
    with pytest.raises(hubkit.ParameterError, match="dataset 'readings': above must not") as info:
        hubkit.load("readings", catalog=_catalog(), store=tmp_path / "s.db", above=-1)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, ValueError)
    assert not (tmp_path / "s.db").exists()  # refused before anything is opened


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("trades", {}, "needs the parameter symbol"),
        ("instruments", {"colour": "red"}, "no parameter colour"),
        ("instruments", {"category": "bonds"}, "category must be one of"),
        ("trades", {"symbol": "BTCUSDT", "limit": "many"}, "limit='many' is not a whole number"),
        ("klines", {"symbol": "BTCUSDT", "interval": "7", "start": 0}, "unknown kline interval"),
        ("klines", {"symbol": "BTCUSDT", "interval": "1h", "start": "soon"}, "start='soon'"),
    ],
)
def test_bybit_load_parameter_errors_are_parameter_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    params: dict[str, Any],
    match: str,
) -> None:
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    with pytest.raises(hubkit.ParameterError, match=match) as info:
        hubkit.load(name, **params)
    assert isinstance(info.value, ValueError)


def test_a_duplicate_dataset_is_a_parameter_error() -> None:
    catalog = _catalog()
    with pytest.raises(hubkit.ParameterError, match="already in this catalog"):
        catalog.add(catalog["readings"])


def test_write_result_wait_timeout_is_a_wait_timeout_and_a_timeout_error() -> None:
    pending = WriteResult(pl.DataFrame({"id": [1]}), pushes=1, bridge=None)
    with pytest.raises(hubkit.WaitTimeout, match=r"not acknowledged within 0\.01 s") as info:
        pending.wait(timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    assert not pending.done()  # still pending: a later wait can still succeed
    pending._entry_settled(None)
    pending.wait(timeout=0)
    assert pending.pushed


def test_a_bridge_call_past_its_timeout_is_a_wait_timeout() -> None:
    async def never() -> None:
        import asyncio

        await asyncio.Event().wait()

    with pytest.raises(hubkit.WaitTimeout, match="cancelled") as info:
        get_bridge().run(never(), timeout=0.01)
    assert isinstance(info.value, TimeoutError)


def test_an_unknown_inventory_table_is_a_not_found_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table people (name text)")
    conn.close()
    with pytest.raises(hubkit.NotFoundError, match="no hubkit table 'people'") as info:
        store_inventory(path).table("people")
    assert isinstance(info.value, KeyError)
