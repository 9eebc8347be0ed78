"""``hubkit demo``: a simulator on loopback, an instruments sink and a live trades sink, then a
summary of what arrived and where it is stored."""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

from hubkit.cli.output import inventory_text, location, text_table
from hubkit.cli.params import EXIT_OK, CommandError, param_value, positive_float, symbols_of
from hubkit.cli.running import ErrorLog, RowCounter, wait

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hubkit demo``."""
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="default: 5")
    parser.add_argument(
        "--store",
        default=None,
        help="store file or URL (default: a new folder hubkit-demo-<time> under $HUBKIT_HOME, "
        "or the current directory when HUBKIT_HOME is not set)",
    )
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="default: BTCUSDT,ETHUSDT")
    parser.add_argument(
        "--trades-per-second", type=positive_float, default=20.0, help="per symbol; default 20"
    )
    parser.add_argument("--seed", type=int, default=0)


def _demo_store(explicit: str | None) -> tuple[str, Path | None]:
    """The store to use and, when the demo made a fresh folder for it, that folder."""
    if explicit is not None:
        return explicit, None
    # The demo's data goes where the user is looking (not into a cache folder) unless
    # HUBKIT_HOME says otherwise: the summary ends by telling where it is.
    base = Path(os.environ.get("HUBKIT_HOME") or Path.cwd()).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = base / f"hubkit-demo-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = base / f"hubkit-demo-{stamp}-{n}"
    folder.mkdir(parents=True)
    return str(folder / "hubkit.db"), folder


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Simulator on loopback -> instruments sink + live trades sink -> summary."""
    from hubkit import bybit
    from hubkit.store.inventory import store_inventory
    from hubkit.testing import BybitSimulator

    symbols = symbols_of({"symbols": param_value(args.symbols)}) or ["BTCUSDT", "ETHUSDT"]
    store, folder = _demo_store(args.store)
    counter = RowCounter()
    errors = ErrorLog()
    sim = BybitSimulator(
        seed=args.seed,
        trades_per_second=args.trades_per_second,
        symbols={"linear": symbols},
        history_seconds=5.0,
    )
    with sim:
        print(f"ByBit simulator on {sim.rest_url} (WebSocket {sim.ws_url})", file=out, flush=True)
        print(f"store: {store}", file=out, flush=True)
        with bybit.InstrumentProvider(store=store, rest_url=sim.rest_url) as provider:
            provider.sink.set_error_handler(errors)
            with bybit.open_trades(
                symbols, "linear", store=store, rest_url=sim.rest_url, ws_url=sim.ws_url
            ) as trades:
                trades.set_error_handler(errors)
                started = time.monotonic()
                with trades.subscribe(counter):
                    print(
                        f"receiving live trades of {', '.join(symbols)} for {args.seconds:g} s ...",
                        file=out,
                        flush=True,
                    )
                    wait(args.seconds)
                elapsed = time.monotonic() - started
                trade_status = trades.status()
            instruments = provider.instruments()
    found = store_inventory(store)
    print("", file=out)
    print(inventory_text(found.tables), file=out)
    print("", file=out)
    per_category = instruments.group_by("category").len().sort("category")
    print(
        text_table(
            ("category", "instruments"),
            [(str(c), int(n)) for c, n in per_category.iter_rows()],
        ),
        file=out,
    )
    print("", file=out)
    rate = counter.rows / elapsed if elapsed > 0 else 0.0
    rows = [
        (s, counter.by_symbol.get(s, 0), round(counter.by_symbol.get(s, 0) / elapsed, 1))
        for s in symbols
    ]
    print(text_table(("symbol", "trades received", "trades/s"), rows), file=out)
    print("", file=out)
    print(
        f"{counter.rows} live trades in {elapsed:.1f} s ({rate:.1f} trades/s), "
        f"{trade_status.reconnects} reconnects, {len(errors.items)} errors",
        file=out,
    )
    where = folder if folder is not None else location(found.url)
    print(f"data: {where}", file=out)
    print(f"next: hubkit status --store {store}", file=out)
    if counter.rows == 0:
        raise CommandError("no live trades arrived" + (f" ({errors.last})" if errors.last else ""))
    return EXIT_OK
