"""ByBit v5 public market data: entities, connection presets, providers and datasets.

::

    from hubkit import bybit

    with bybit.InstrumentProvider(store="data.db") as provider:
        provider.active_instruments("linear")           # pl.DataFrame, status == "Trading"

    with bybit.open_trades(["BTCUSDT", "ETHUSDT"], store="data.db") as trades:
        trades.frame()              # the newest 100,000, live, gap-filled after reconnects

    bybit.backfill_klines("BTCUSDT", "60", start="2024-01-01", store="data.db")

URLs come from arguments, then ``HUBKIT_BYBIT_REST_URL`` / ``HUBKIT_BYBIT_WS_URL``, then
mainnet (see ``hubkit.bybit.presets``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubkit.bybit.entities import (
    Instrument,
    Kline,
    PublicTrade,
    Ticker,
)
from hubkit.bybit.presets import CATEGORIES, rest_url, ws_url

if TYPE_CHECKING:
    from hubkit.bybit.backfill import BackfillResult, abackfill_klines, backfill_klines
    from hubkit.bybit.datasets import bybit_datasets, default_catalog
    from hubkit.bybit.protocol import BybitWsProtocol
    from hubkit.bybit.provider import (
        InstrumentChange,
        InstrumentProvider,
        aopen_trades,
        open_trades,
    )
    from hubkit.bybit.signer import BybitSigner

__all__ = [
    "CATEGORIES",
    "BackfillResult",
    "BybitSigner",
    "BybitWsProtocol",
    "Instrument",
    "InstrumentChange",
    "InstrumentProvider",
    "Kline",
    "PublicTrade",
    "Ticker",
    "abackfill_klines",
    "aopen_trades",
    "backfill_klines",
    "bybit_datasets",
    "default_catalog",
    "open_trades",
    "rest_url",
    "ws_url",
]

# The providers pull in the connections and the sink machinery: import them on first use,
# with plain imports so that what is imported stays visible.
_PROVIDERS = frozenset({"InstrumentChange", "InstrumentProvider", "aopen_trades", "open_trades"})
_BACKFILL = frozenset({"BackfillResult", "abackfill_klines", "backfill_klines"})
_DATASETS = frozenset({"bybit_datasets", "default_catalog"})


def __getattr__(name: str) -> Any:
    if name in _PROVIDERS:
        from hubkit.bybit import provider

        return getattr(provider, name)
    if name in _BACKFILL:
        from hubkit.bybit import backfill

        return getattr(backfill, name)
    if name in _DATASETS:
        from hubkit.bybit import datasets

        return getattr(datasets, name)
    if name == "BybitSigner":
        from hubkit.bybit.signer import BybitSigner

        return BybitSigner
    if name == "BybitWsProtocol":
        from hubkit.bybit.protocol import BybitWsProtocol

        return BybitWsProtocol
    raise AttributeError(f"module 'hubkit.bybit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
