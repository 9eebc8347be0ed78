"""``hubkit simulate``: a ByBit v5 simulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import math
import signal
from typing import TextIO

from hubkit.cli.params import EXIT_INTERRUPTED, EXIT_OK, param_value, positive_float, symbols_of
from hubkit.cli.running import Interrupted, wait

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hubkit simulate``."""
    parser.add_argument("--port", type=int, default=9000, help="TCP port (0: any free; 9000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trades-per-second", type=positive_float, default=10.0, help="per symbol; default 10"
    )
    parser.add_argument(
        "--symbols",
        default=None,
        help="linear symbols trading from the start (default: "
        "BTCUSDT,ETHUSDT; others start when first asked for)",
    )
    parser.add_argument(
        "--time-scale", type=positive_float, default=1.0, help="simulated ms per wall ms"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve until stopped; either way the simulator stops cleanly and prints ``stopping``.
    Ctrl-C returns 130, the status of every interrupted command; SIGTERM, how a service
    manager or a test harness asks it to stop, returns 0."""
    from hubkit.testing import BybitSimulator

    symbols = symbols_of({"symbols": param_value(args.symbols)}) if args.symbols else None
    sim = BybitSimulator(
        seed=args.seed,
        port=args.port,
        trades_per_second=args.trades_per_second,
        symbols={"linear": symbols} if symbols else None,
        time_scale=args.time_scale,
    )
    with sim:
        print(f"ByBit v5 simulator (seed {args.seed}) serving on 127.0.0.1", file=out)
        print(f"rest_url={sim.rest_url}", file=out)
        print(f"ws_url={sim.ws_url}", file=out)
        print("point hubkit at it (in another shell):", file=out)
        print(f"  export HUBKIT_BYBIT_REST_URL={sim.rest_url}", file=out)
        print(f"  export HUBKIT_BYBIT_WS_URL={sim.ws_url}", file=out)
        print("press Ctrl-C to stop", file=out, flush=True)
        asked = False
        try:
            wait(math.inf)
        except KeyboardInterrupt as stop:
            print("stopping", file=out, flush=True)
            asked = isinstance(stop, Interrupted) and stop.signum == signal.SIGTERM
    return EXIT_OK if asked else EXIT_INTERRUPTED
