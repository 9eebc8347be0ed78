"""Regenerate the instrument lists in this folder (run: ``python datasets/generate.py``).

The real sample items come from ``<repo>/../shared/bybit/samples``; everything else is generated
from a fixed seed, so running this twice writes identical files. See README.md for what is real.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent.parent / "shared" / "bybit" / "samples"
SEED = 20240101

# Reference prices (USD) per base coin; generated coins get a random price.
BASE_PRICES: dict[str, float] = {
    "BTC": 97000.0,
    "ETH": 3400.0,
    "SOL": 190.0,
    "XRP": 2.3,
    "DOGE": 0.32,
    "ADA": 0.95,
    "AVAX": 38.0,
    "LINK": 22.0,
    "DOT": 7.1,
    "LTC": 105.0,
    "BCH": 450.0,
    "TRX": 0.25,
    "MATIC": 0.48,
    "ATOM": 6.8,
    "NEAR": 5.2,
    "APT": 9.1,
    "ARB": 0.78,
    "OP": 1.9,
    "SUI": 4.1,
    "TON": 5.5,
    "FIL": 5.0,
    "ETC": 27.0,
    "XLM": 0.42,
    "UNI": 13.0,
    "AAVE": 340.0,
    "INJ": 24.0,
    "BIO": 0.6,
    "PEPE": 0.000019,
    "SHIB1000": 0.022,
    "WIF": 2.1,
    "BNB": 690.0,
    "EOS": 0.8,
    "MANA": 0.55,
    "SAND": 0.6,
    "AXS": 6.5,
    "GALA": 0.04,
    "APE": 1.3,
    "CRV": 0.9,
    "MKR": 1600.0,
    "COMP": 80.0,
    "SNX": 2.6,
    "RUNE": 4.5,
    "KAS": 0.12,
    "SEI": 0.45,
    "TIA": 5.8,
    "JUP": 0.9,
    "WLD": 2.4,
    "ORDI": 30.0,
    "STX": 1.7,
    "IMX": 1.4,
    "HBAR": 0.28,
    "ALGO": 0.38,
    "VET": 0.045,
    "ICP": 10.0,
    "GRT": 0.22,
    "FTM": 0.7,
    "EGLD": 35.0,
    "THETA": 2.0,
    "XTZ": 1.2,
    "ZEC": 55.0,
    "DASH": 38.0,
    "NEO": 13.0,
    "KSM": 30.0,
    "ENS": 35.0,
    "LDO": 1.8,
    "DYDX": 1.5,
    "GMX": 25.0,
}


def _load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def _tick_for(price: float) -> str:
    """A tick size of about 1e-5 of the price, as ByBit uses (a power of ten, as a string)."""
    exp = 0
    step = 1.0
    while step > price * 1e-5:
        step /= 10
        exp += 1
    while step * 10 <= price * 1e-5:
        step *= 10
        exp -= 1
    return f"{step:.{max(exp, 0)}f}"


def _decimals(tick: str) -> int:
    return len(tick.split(".")[1]) if "." in tick else 0


def _fmt(value: float, tick: str) -> str:
    return f"{value:.{_decimals(tick)}f}"


def _coins(rng: random.Random, n: int) -> list[str]:
    coins = list(BASE_PRICES)
    seen = set(coins)
    letters = "ABCDEFGHIJKLMNOPRSTUVWXYZ"
    while len(coins) < n:
        name = "".join(rng.choice(letters) for _ in range(rng.randint(3, 5)))
        if name not in seen:
            seen.add(name)
            coins.append(name)
    return coins


def _price(rng: random.Random, coin: str, prices: dict[str, float]) -> float:
    """The reference price of a coin; generated coins get a random one, remembered in prices."""
    if coin not in prices:
        prices[coin] = float(f"{10 ** rng.uniform(-3, 3):.6g}")
    return prices[coin]


def _derivative(
    rng: random.Random,
    prices: dict[str, float],
    *,
    symbol: str,
    symbol_id: int,
    base: str,
    quote: str,
    settle: str,
    contract_type: str,
    status: str = "Trading",
    delivery: int = 0,
    inverse: bool = False,
) -> dict[str, Any]:
    price = _price(rng, base, prices)
    tick = _tick_for(price)
    lev = rng.choice(["25.00", "50.00", "75.00", "100.00"])
    qty_step = "1" if inverse else _tick_for(100_000 / max(price, 1e-9) * 10)
    if not inverse and float(qty_step) >= 1:
        qty_step = str(int(float(qty_step)))
    max_qty = (
        str(rng.choice([25_000_000, 5_000_000, 400_000]))
        if inverse
        else _fmt(5_000_000 / price, qty_step)
    )
    funding = rng.choice([60, 240, 480, 480, 480])
    rate = rng.choice(["0.005", "0.0075", "0.01", "0.02", "0.03"])
    launch = 1_600_000_000_000 + rng.randint(0, 150_000_000) * 1000
    return {
        "symbol": symbol,
        "symbolId": symbol_id,
        "contractType": contract_type,
        "status": status,
        "baseCoin": base,
        "quoteCoin": quote,
        "symbolType": "",
        "launchTime": str(launch),
        "deliveryTime": str(delivery),
        "deliveryFeeRate": "0.0005" if delivery else "",
        "priceScale": str(_decimals(tick)),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": lev, "leverageStep": "0.01"},
        "priceFilter": {
            "minPrice": tick,
            "maxPrice": _fmt(float(tick) * 19_999_998, tick),
            "tickSize": tick,
        },
        "lotSizeFilter": {
            "maxOrderQty": max_qty,
            "minOrderQty": qty_step,
            "qtyStep": qty_step,
            "postOnlyMaxOrderQty": max_qty,
            "maxMktOrderQty": max_qty if inverse else _fmt(float(max_qty) / 5, qty_step),
            "minNotionalValue": "" if inverse else "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 0 if delivery else funding,
        "settleCoin": settle,
        "copyTrading": "none" if inverse or delivery else rng.choice(["both", "utaOnly", "none"]),
        "upperFundingRate": "" if delivery else rate,
        "lowerFundingRate": "" if delivery else f"-{rate}",
        "displayName": "",
        "forbidUplWithdrawal": False,
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
        "isPreListing": False,
        "preListingInfo": None,
    }


# Expiries (UTC 08:00) used for generated futures and options: all after 2026-11.
EXPIRIES = [
    ("04DEC26", 1796371200000),
    ("25DEC26", 1798185600000),
    ("26MAR27", 1806048000000),
    ("25JUN27", 1813910400000),
]

# Fields present in today's items but missing from older real samples, with the value a
# real instrument of that kind carries.
LINEAR_DEFAULTS: dict[str, Any] = {
    "symbolId": 0,
    "symbolType": "",
    "displayName": "",
    "forbidUplWithdrawal": False,
    "isPreListing": False,
    "preListingInfo": None,
}


def _complete(item: dict[str, Any], defaults: dict[str, Any], symbol_id: int) -> dict[str, Any]:
    out = dict(item)
    for key, value in defaults.items():
        out.setdefault(key, value)
    if out.get("symbolId") == 0:
        out["symbolId"] = symbol_id
    if isinstance(out.get("fundingInterval"), str):  # ccxt stringifies it (SOURCES.md caveat 1)
        out["fundingInterval"] = int(out["fundingInterval"])
    return out


def _prelisting(rng: random.Random) -> dict[str, Any]:
    """Pre-market auction phases (as in the real BIOUSDT sample), starting after 2026-12."""
    start = 1_796_000_000_000 + rng.randint(0, 30) * 86_400_000
    steps = [("CallAuction", 3_000_000), ("CallAuctionNoCancel", 300_000),
             ("CrossMatching", 300_000)]  # fmt: skip
    phases = []
    t = start
    for phase, length in steps:
        phases.append({"phase": phase, "startTime": str(t), "endTime": str(t + length)})
        t += length
    phases.append({"phase": "ContinuousTrading", "startTime": str(t), "endTime": ""})
    return {
        "curAuctionPhase": "NotStarted",
        "phases": phases,
        "auctionFeeInfo": {
            "auctionFeeRate": "0",
            "takerFeeRate": "0.001",
            "makerFeeRate": "0.0004",
        },
        "skipCallAuction": False,
    }


def linear(rng: random.Random, prices: dict[str, float]) -> tuple[list[dict[str, Any]], list[str]]:
    real = [
        _load("rest_instruments_linear.json")["result"]["list"][0],
        _load("rest_instruments_linear_prelisting.json")["result"]["list"][0],
    ]
    items = [_complete(it, LINEAR_DEFAULTS, 1000 + i) for i, it in enumerate(real)]
    symbols = {it["symbol"] for it in items}
    sid = 2000
    for coin in _coins(rng, 560):
        symbol = f"{coin}USDT"
        if symbol in symbols:
            continue
        sid += 1
        status = "Trading"
        roll = rng.random()
        if roll < 0.01:
            status = "Closed"
        elif roll < 0.02:
            status = "PreLaunch"
        item = _derivative(
            rng,
            prices,
            symbol=symbol,
            symbol_id=sid,
            base=coin,
            quote="USDT",
            settle="USDT",
            contract_type="LinearPerpetual",
            status=status,
        )
        if status == "PreLaunch":
            item["isPreListing"] = True
            item["preListingInfo"] = _prelisting(rng)
        items.append(item)
        symbols.add(symbol)
    for coin in ["BTC", "ETH", "SOL", "XRP", "DOGE"]:  # USDC perpetuals
        sid += 1
        items.append(
            _derivative(
                rng,
                prices,
                symbol=f"{coin}PERP",
                symbol_id=sid,
                base=coin,
                quote="USDC",
                settle="USDC",
                contract_type="LinearPerpetual",
            )
        )
    for code, delivery in EXPIRIES:  # USDC and USDT futures
        for coin in ["BTC", "ETH"]:
            for symbol, quote in ((f"{coin}-{code}", "USDC"), (f"{coin}USDT-{code}", "USDT")):
                sid += 1
                items.append(
                    _derivative(
                        rng,
                        prices,
                        symbol=symbol,
                        symbol_id=sid,
                        base=coin,
                        quote=quote,
                        settle=quote,
                        contract_type="LinearFutures",
                        delivery=delivery,
                    )
                )
    items.sort(key=lambda it: it["symbol"])
    return items, [it["symbol"] for it in real]


def inverse(rng: random.Random, prices: dict[str, float]) -> tuple[list[dict[str, Any]], list[str]]:
    markets = _load("rest_instruments_items_ccxt_markets.json")
    real = [markets["BTC/USD:BTC"], markets["LTC/USD:LTC"]]
    items = [_complete(it, LINEAR_DEFAULTS, 3000 + i) for i, it in enumerate(real)]
    sid = 3100
    for coin in ["ETH", "XRP", "EOS", "DOT", "ADA", "MANA", "SOL", "DOGE"]:
        sid += 1
        items.append(
            _derivative(
                rng,
                prices,
                symbol=f"{coin}USD",
                symbol_id=sid,
                base=coin,
                quote="USD",
                settle=coin,
                contract_type="InversePerpetual",
                inverse=True,
            )
        )
    for code, delivery in EXPIRIES[1:3]:
        month = {"DEC26": "Z26", "MAR27": "H27"}[code[2:]]
        for coin in ["BTC", "ETH"]:
            sid += 1
            items.append(
                _derivative(
                    rng,
                    prices,
                    symbol=f"{coin}USD{month}",
                    symbol_id=sid,
                    base=coin,
                    quote="USD",
                    settle=coin,
                    contract_type="InverseFutures",
                    delivery=delivery,
                    inverse=True,
                )
            )
    items.sort(key=lambda it: it["symbol"])
    return items, [it["symbol"] for it in real]


def spot(rng: random.Random, prices: dict[str, float]) -> tuple[list[dict[str, Any]], list[str]]:
    real = [_load("rest_instruments_spot.json")["result"]["list"][0]]
    defaults = {"symbolId": 0, "symbolType": "", "xstockMultiplier": "", "innovation": "0"}
    items = [_complete(real[0], defaults, 9)]
    sid = 100
    for coin in list(BASE_PRICES)[:60]:
        for quote in ("USDT", "USDC") if coin in ("BTC", "ETH", "SOL") else ("USDT",):
            symbol = f"{coin}{quote}"
            if symbol == "BTCUSDT":
                continue
            price = _price(rng, coin, prices)
            tick = _tick_for(price)
            base_precision = _tick_for(100_000 / max(price, 1e-9))
            sid += 1
            max_qty = _fmt(1_000_000 / price, base_precision)
            items.append(
                {
                    "symbolId": sid,
                    "symbol": symbol,
                    "baseCoin": coin,
                    "quoteCoin": quote,
                    "innovation": "0",
                    "symbolType": "",
                    "xstockMultiplier": "",
                    "status": "Trading",
                    "marginTrading": rng.choice(["utaOnly", "both", "none"]),
                    "stTag": "0",
                    "lotSizeFilter": {
                        "basePrecision": base_precision,
                        "quotePrecision": "0.0000001",
                        "minOrderQty": base_precision,
                        "maxOrderQty": max_qty,
                        "minOrderAmt": "5",
                        "maxOrderAmt": "8000000",
                        "maxLimitOrderQty": max_qty,
                        "maxMarketOrderQty": _fmt(float(max_qty) / 2, base_precision),
                        "postOnlyMaxLimitOrderSize": "60000",
                    },
                    "priceFilter": {"tickSize": tick},
                    "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
                }
            )
    items.sort(key=lambda it: it["symbol"])
    return items, [it["symbol"] for it in real]


def option(rng: random.Random, prices: dict[str, float]) -> tuple[list[dict[str, Any]], list[str]]:
    markets = _load("rest_instruments_items_ccxt_markets.json")
    real = [
        _load("rest_instruments_option.json")["result"]["list"][0],
        markets["SOL/USDT:USDT-250530-90-P"],
    ]
    items = [_complete(it, {"symbolId": 0}, 5000 + i) for i, it in enumerate(real)]
    sid = 5100
    strikes = {"BTC": (80_000, 5_000, "5"), "ETH": (2_800, 100, "0.1"), "SOL": (150, 10, "0.01")}
    for coin, (low, step, tick) in strikes.items():
        for code, delivery in EXPIRIES:
            for k in range(12):
                strike = low + k * step
                for kind, letter in (("Call", "C"), ("Put", "P")):
                    sid += 1
                    items.append(
                        {
                            "symbol": f"{coin}-{code}-{strike}-{letter}-USDT",
                            "symbolId": sid,
                            "optionsType": kind,
                            "status": "Trading",
                            "baseCoin": coin,
                            "quoteCoin": "USDT",
                            "settleCoin": "USDT",
                            "launchTime": str(delivery - 60 * 86_400_000),
                            "deliveryTime": str(delivery),
                            "deliveryFeeRate": "0.00015",
                            "priceFilter": {
                                "minPrice": tick,
                                "maxPrice": _fmt(strike * 15, tick),
                                "tickSize": tick,
                            },
                            "lotSizeFilter": {
                                "maxOrderQty": "500",
                                "minOrderQty": "0.01",
                                "qtyStep": "0.01",
                            },
                            "displayName": f"{coin}USDT-{code}-{strike}-{letter}",
                        }
                    )
    items.sort(key=lambda it: it["symbol"])
    return items, [it["symbol"] for it in real]


def main() -> None:
    rng = random.Random(SEED)
    prices = dict(BASE_PRICES)
    for name, build in (
        ("linear", linear),
        ("inverse", inverse),
        ("spot", spot),
        ("option", option),
    ):
        items, real = build(rng, prices)
        doc = {"category": name, "realSymbols": real, "list": items}
        path = HERE / f"instruments_{name}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{path.name}: {len(items)} instruments ({len(real)} real)")
    ordered = {coin: prices[coin] for coin in sorted(prices)}
    (HERE / "prices.json").write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"prices.json: {len(ordered)} base coins")


if __name__ == "__main__":
    main()
