"""Run the simulator from the command line: ``python -m hubkit.testing.bybit --port 9000``.

Prints the REST and WebSocket URLs, then serves until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence

from hubkit.testing.bybit.simulator import BybitSimulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m hubkit.testing.bybit", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trades-per-second", type=float, default=10.0)
    p.add_argument(
        "--symbols",
        default=None,
        help='JSON mapping category -> symbols, e.g. \'{"linear": ["BTCUSDT"]}\'',
    )
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--tick", type=float, default=0.02, help="seconds between publishing rounds")
    p.add_argument("--history-seconds", type=float, default=60.0)
    p.add_argument("--no-ip-limit", action="store_true", help="disable the HTTP 403 IP rule")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM (also while the back history is still being made)."""
    symbols = json.loads(args.symbols) if args.symbols else None
    sim = BybitSimulator(
        seed=args.seed,
        port=args.port,
        trades_per_second=args.trades_per_second,
        symbols=symbols,
        time_scale=args.time_scale,
        tick=args.tick,
        history_seconds=args.history_seconds,
        ip_limit=None if args.no_ip_limit else (600, 5.0, 600.0),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(sim.astart())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped before it listened: nothing to close
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return
    starting.result()  # a failed start raises here
    try:
        print(f"rest_url={sim.rest_url}", flush=True)
        print(f"ws_url={sim.ws_url}", flush=True)
        await stopping
    finally:
        stopping.cancel()
        await sim.astop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
