"""The instruments the simulator serves, read from the ``datasets/`` folder.

``load_catalog()`` finds the folder (see ``locate_datasets``) and returns a ``Catalog``: per
category the instrument items exactly as they are served, sorted by symbol, plus a reference
price per base coin. After loading it changes only through ``Catalog.put``/``remove`` (the
simulator's listing switches); readers see read-only views.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "CATEGORIES",
    "Catalog",
    "Instrument",
    "listed_like",
    "load_catalog",
    "locate_datasets",
    "with_status",
]

CATEGORIES = ("spot", "linear", "inverse", "option")


def locate_datasets() -> Path:
    """Return the folder holding ``instruments_<category>.json`` and ``prices.json``.

    Looked up in this order: ``$HUBKIT_BYBIT_DATASETS``; ``data/`` inside this package (where a
    built wheel ships it); ``datasets/`` at the root of the source tree this package lives in
    (an editable install or a checkout). Raises ``FileNotFoundError`` naming the places tried.
    """
    candidates: list[Path] = []
    env = os.environ.get("HUBKIT_BYBIT_DATASETS")
    if env:
        candidates.append(Path(env))
    here = Path(__file__).resolve().parent
    candidates.append(here / "data")
    candidates.append(here.parents[2] / "datasets")
    for path in candidates:
        if (path / "instruments_linear.json").is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"ByBit simulator datasets not found (tried {tried})")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One instrument: its served JSON item plus the numbers the generators need."""

    category: str
    symbol: str
    item: Mapping[str, Any]
    base_coin: str
    status: str
    tick_units: int  # tick size in units of 10**-decimals
    decimals: int  # decimals of prices
    qty_units: int  # quantity step in units of 10**-qty_decimals
    qty_decimals: int
    base_price: float  # reference price at the simulator's epoch
    symbol_id: int
    launch_time: int  # ms
    delivery_time: int  # ms, 0 for perpetuals and spot
    is_inverse: bool
    option_type: str  # "Call" / "Put" for options, "" otherwise
    strike: float  # options only


def _units(step: str) -> tuple[int, int]:
    """``"0.10"`` -> (10, 2): the step as an integer count of ``10**-decimals``."""
    if "." in step:
        whole, frac = step.split(".")
        return int(whole + frac), len(frac)
    return int(step), 0


def _instrument(category: str, item: Mapping[str, Any], prices: Mapping[str, float]) -> Instrument:
    symbol = str(item["symbol"])
    base = str(item["baseCoin"])
    tick_units, decimals = _units(str(item["priceFilter"]["tickSize"]))
    lot = item["lotSizeFilter"]
    step = str(lot.get("qtyStep") or lot.get("basePrecision") or "1")
    qty_units, qty_decimals = _units(step)
    option_type = str(item.get("optionsType", ""))
    strike = 0.0
    price = float(prices.get(base, 1.0))
    if category == "option":
        strike = float(symbol.split("-")[2])
        intrinsic = max(price - strike, 0.0) if option_type == "Call" else max(strike - price, 0.0)
        price = intrinsic + price * 0.03
    return Instrument(
        category=category,
        symbol=symbol,
        item=item,
        base_coin=base,
        status=str(item["status"]),
        tick_units=tick_units,
        decimals=decimals,
        qty_units=qty_units,
        qty_decimals=qty_decimals,
        base_price=price,
        symbol_id=int(item.get("symbolId", 0)),
        launch_time=int(item.get("launchTime", 0) or 0),
        delivery_time=int(item.get("deliveryTime", 0) or 0),
        is_inverse=category == "inverse",
        option_type=option_type,
        strike=strike,
    )


class Catalog:
    """Instruments per category (sorted by symbol) and lookup by symbol.

    ``lists`` and ``by_symbol`` are read-only views. The simulator changes them only through
    ``put`` and ``remove`` (a listing, a status change, a delisting at run time), on its own
    event loop, so every reader sees one consistent catalogue between two events.
    """

    def __init__(
        self,
        lists: Mapping[str, Sequence[Instrument]],
        real_symbols: Mapping[str, frozenset[str]],
    ) -> None:
        self._lists: dict[str, tuple[Instrument, ...]] = {c: tuple(v) for c, v in lists.items()}
        self._by_symbol: dict[str, dict[str, Instrument]] = {
            c: {i.symbol: i for i in v} for c, v in self._lists.items()
        }
        self.lists: Mapping[str, Sequence[Instrument]] = MappingProxyType(self._lists)
        self.by_symbol: Mapping[str, Mapping[str, Instrument]] = MappingProxyType(
            {c: MappingProxyType(v) for c, v in self._by_symbol.items()}
        )
        self.real_symbols: Mapping[str, frozenset[str]] = MappingProxyType(dict(real_symbols))

    def get(self, category: str, symbol: str) -> Instrument | None:
        """The instrument, or None when the category has no such symbol."""
        return self.by_symbol.get(category, {}).get(symbol)

    def base_coins(self, category: str) -> frozenset[str]:
        """Base coins listed in a category (option topics subscribe by base coin)."""
        return frozenset(i.base_coin for i in self.lists.get(category, ()))

    def put(self, inst: Instrument) -> None:
        """List ``inst``, or replace the instrument of the same category and symbol."""
        symbols = self._by_symbol[inst.category]
        symbols[inst.symbol] = inst
        self._lists[inst.category] = tuple(symbols[name] for name in sorted(symbols))

    def remove(self, category: str, symbol: str) -> Instrument | None:
        """Take a symbol off the list (a delisting); returns what was listed, if anything."""
        symbols = self._by_symbol[category]
        gone = symbols.pop(symbol, None)
        if gone is not None:
            self._lists[category] = tuple(symbols[name] for name in sorted(symbols))
        return gone


def with_status(inst: Instrument, status: str) -> Instrument:
    """``inst`` with another ``status`` (in the served item too)."""
    return dataclasses.replace(inst, status=status, item={**inst.item, "status": status})


def listed_like(inst: Instrument, symbol: str, status: str, launch_ms: int) -> Instrument:
    """A new instrument ``symbol`` shaped like ``inst`` (same filters and coins), launched at
    ``launch_ms``."""
    item = {**inst.item, "symbol": symbol, "status": status, "launchTime": str(launch_ms)}
    return dataclasses.replace(inst, symbol=symbol, status=status, item=item, launch_time=launch_ms)


def load_catalog(folder: Path | None = None) -> Catalog:
    """Read the datasets folder (default: ``locate_datasets()``) into a ``Catalog``."""
    root = folder if folder is not None else locate_datasets()
    prices = json.loads((root / "prices.json").read_text())
    lists: dict[str, tuple[Instrument, ...]] = {}
    real: dict[str, frozenset[str]] = {}
    for category in CATEGORIES:
        doc = json.loads((root / f"instruments_{category}.json").read_text())
        items = sorted(doc["list"], key=lambda it: it["symbol"])
        lists[category] = tuple(_instrument(category, it, prices) for it in items)
        real[category] = frozenset(doc.get("realSymbols", ()))
    return Catalog(lists, real)
