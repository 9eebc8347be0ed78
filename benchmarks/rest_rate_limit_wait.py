"""How close a REST rate-limit wait comes to the reset time the server names.

ByBit answers retCode 10006 with ``X-Bapi-Limit-Reset-Timestamp``; the connection waits until
then. The test (tests/connections/test_against_simulator.py) checks with a still clock that
the wait is computed from that header; this measures it with real clocks against the
simulator: ``--runs`` times, a fault with the reset ``--reset-ms`` ahead, the wait taken and
the real time from the request to the successful retry. Prints the waits; exits 1 when a wait
falls outside (reset - 0.5 s, reset].

    python benchmarks/rest_rate_limit_wait.py [--runs 5] [--reset-ms 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

from hubkit.bybit.envelope import BYBIT_RATE_LIMIT_HEADERS, bybit_route
from hubkit.connections import HttpConnection, RetryPolicy
from hubkit.entity import reflect
from hubkit.testing.bybit import BybitSimulator


@dataclass
class Instrument:
    symbol: str
    status: str


async def one(sim: BybitSimulator, reset_ms: int) -> tuple[float, float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    route = bybit_route("/v5/market/instruments-info", {"category": "linear", "limit": 1000})
    conn = HttpConnection(
        sim.rest_url,
        {Instrument: route},
        retries=RetryPolicy(retries=2, sleep=sleep),
        rate_limit_headers=BYBIT_RATE_LIMIT_HEADERS,
    )
    sim.faults.rate_limit_next = 1
    sim.faults.rate_limit_reset_ms = reset_ms
    started = time.perf_counter()
    async with conn:
        await conn.fetch(reflect(Instrument, "symbol"))
    return waits[0], time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reset-ms", type=int, default=1500)
    args = parser.parse_args()
    reset = args.reset_ms / 1000
    ok = True
    with BybitSimulator() as sim:
        sim.faults.http_path = "instruments-info"
        for run in range(args.runs):
            wait, total = asyncio.run(one(sim, args.reset_ms))
            inside = reset - 0.5 < wait <= reset
            ok &= inside
            print(f"run {run + 1}: waited {wait:.3f} s of {reset:.3f} s; rows after {total:.3f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
