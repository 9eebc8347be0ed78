"""WebSocket fan-out benchmark of the ByBit simulator.

Starts the simulator in a child process (``python -m hubkit.testing.bybit``), connects N clients
(default 200) to ``/v5/public/linear``, subscribes each to the public trades of S symbols and
counts the data messages received for a fixed measuring window. Prints messages/s out of the
simulator and per client. Bounded runtime (about ``--seconds`` plus start-up).

    python benchmarks/sim_ws_fanout.py [--clients 200] [--symbols 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import websockets

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]


async def client(url: str, topics: list[str], counts: list[int], i: int, go: asyncio.Event) -> None:
    async with websockets.connect(url, max_queue=None, compression=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": topics}))
        async for frame in ws:
            if go.is_set() and frame[:9] == '{"topic":':
                counts[i] += 1


async def run(args: argparse.Namespace) -> int:
    symbols = SYMBOLS[: args.symbols]
    cmd = [
        sys.executable, "-m", "hubkit.testing.bybit", "--port", "0", "--no-ip-limit",
        "--trades-per-second", str(args.tps), "--tick", str(args.tick),
        "--history-seconds", "1", "--symbols", json.dumps({"linear": symbols}),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        # the child prints rest_url=... then ws_url=... once it listens
        lines = await asyncio.to_thread(lambda: [proc.stdout.readline() for _ in range(2)])  # type: ignore[union-attr]
        ws_base = lines[1].strip().split("=", 1)[1]
        url = f"{ws_base}/linear"
        counts = [0] * args.clients
        go = asyncio.Event()
        topics = [f"publicTrade.{s}" for s in symbols]
        tasks = [
            asyncio.create_task(client(url, topics, counts, i, go)) for i in range(args.clients)
        ]
        await asyncio.sleep(2.0)  # connect and subscribe everyone, let the rate settle
        go.set()
        started = time.perf_counter()
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - started
        total = sum(counts)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
    rate = total / elapsed
    quiet = sum(1 for c in counts if c == 0)
    print(f"clients={args.clients} topics/client={len(symbols)} tick={args.tick}s "
          f"trades/s/symbol={args.tps:g} window={elapsed:.1f}s")  # fmt: skip
    print(f"messages received: {total}  ->  {rate:,.0f} msg/s out of the simulator")
    print(f"per client: {rate / args.clients:,.1f} msg/s; clients that got nothing: {quiet}")
    ok = rate >= args.target
    print(f"target {args.target:,.0f} msg/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tick", type=float, default=0.02)
    p.add_argument("--tps", type=float, default=200.0)
    p.add_argument("--target", type=float, default=20_000.0)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
