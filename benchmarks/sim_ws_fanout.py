"""WebSocket fan-out benchmark of the ByBit simulator.

Starts the simulator in a child process (``python -m hubkit.testing.bybit``), connects N clients
(default 200) to ``/v5/public/linear``, subscribes each to the public trades of S symbols and
counts the data messages received for a fixed measuring window. Prints messages/s out of the
simulator and per client, the trade rate one client receives per symbol against the configured
rate, and how responsive the simulator stays meanwhile: a new connection's handshake, and the
round trip of a JSON ``ping`` and of a protocol ping, probed every ``--probe-every`` seconds.
Also the child's CPU use and memory at the end. Bounded runtime (about ``--seconds`` plus
start-up).

    python benchmarks/sim_ws_fanout.py [--clients 200] [--symbols 3] [--seconds 10]
    python benchmarks/sim_ws_fanout.py --clients 3 --tps 3333 --target 0   # 10k trades/s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
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


async def meter(url: str, topics: list[str], trades: dict[str, int], go: asyncio.Event) -> None:
    """One more subscriber that decodes its messages and counts trades per topic."""
    async with websockets.connect(url, max_queue=None, compression=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": topics}))
        async for frame in ws:
            if go.is_set() and isinstance(frame, str) and frame[:9] == '{"topic":':
                message = json.loads(frame)
                trades[message["topic"]] = trades.get(message["topic"], 0) + len(message["data"])


async def probe(url: str, every: float, stop: asyncio.Event, out: dict[str, list[float]]) -> None:
    """Every ``every`` s: open a new connection (handshake time), then time a JSON ping/pong
    and a protocol ping/pong on it, and close it."""
    while not stop.is_set():
        started = time.perf_counter()
        async with websockets.connect(url, compression=None, open_timeout=30) as ws:
            out["handshake"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await ws.send(json.dumps({"op": "ping", "req_id": "probe"}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("op") == "ping" and reply.get("ret_msg") == "pong":
                    break
            out["json_ping"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.wait_for(await ws.ping(), 30)
            out["ws_ping"].append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    values = sorted(values)
    p50 = statistics.median(values) * 1000
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))] * 1000
    top = values[-1] * 1000
    return f"median {p50:.1f} ms, p90 {p90:.1f} ms, max {top:.1f} ms (n={len(values)})"


async def run(args: argparse.Namespace) -> int:
    symbols = SYMBOLS[: args.symbols]
    cmd = [
        sys.executable, "-m", "hubkit.testing.bybit", "--port", "0", "--no-ip-limit",
        "--trades-per-second", str(args.tps), "--tick", str(args.tick),
        "--history-seconds", str(args.history), "--symbols", json.dumps({"linear": symbols}),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        # the child prints rest_url=... then ws_url=... once it listens
        lines = await asyncio.to_thread(lambda: [proc.stdout.readline() for _ in range(2)])  # type: ignore[union-attr]
        ws_base = lines[1].strip().split("=", 1)[1]
        url = f"{ws_base}/linear"
        counts = [0] * args.clients
        trades: dict[str, int] = {}
        latency: dict[str, list[float]] = {"handshake": [], "json_ping": [], "ws_ping": []}
        go, stop = asyncio.Event(), asyncio.Event()
        topics = [f"publicTrade.{s}" for s in symbols]
        tasks = [
            asyncio.create_task(client(url, topics, counts, i, go)) for i in range(args.clients)
        ]
        tasks.append(asyncio.create_task(meter(url, topics, trades, go)))
        await asyncio.sleep(2.0)  # connect and subscribe everyone, let the rate settle
        probing = asyncio.create_task(probe(url, args.probe_every, stop, latency))
        cpu0 = cpu_seconds(proc.pid)
        go.set()
        started = time.perf_counter()
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        total = sum(counts)
        got = dict(trades)
        stop.set()
        await asyncio.wait_for(probing, 60)
        rss = rss_mb(proc.pid)
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
    delivered = [got.get(t, 0) / elapsed for t in topics]
    print(
        f"trades/s per symbol: configured {args.tps:,.0f}, delivered "
        + ", ".join(f"{d:,.0f}" for d in delivered)
        + f" (total {sum(delivered):,.0f} of {args.tps * len(symbols):,.0f} configured)"
    )
    print(f"new connection handshake: {ms(latency['handshake'])}")
    print(f"JSON ping -> pong:        {ms(latency['json_ping'])}")
    print(f"protocol ping -> pong:    {ms(latency['ws_ping'])}")
    print(f"simulator process: {cpu / elapsed:.0%} of a core, {rss:.0f} MB resident at the end")
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
    p.add_argument("--history", type=float, default=1.0, help="seconds of back history")
    p.add_argument("--probe-every", type=float, default=0.5, help="seconds between probes")
    p.add_argument("--target", type=float, default=20_000.0)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
