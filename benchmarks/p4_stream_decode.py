"""P4 (stream side): ByBit ``publicTrade`` frames through hubkit's WebSocket pipeline.

    python benchmarks/p4_stream_decode.py decode   [--messages 20000] [--repeat 5]
    python benchmarks/p4_stream_decode.py pipeline [--messages 20000] [--repeat 3]
    python benchmarks/p4_stream_decode.py latency  [--tps 10000] [--seconds 20]
    python benchmarks/p4_stream_decode.py all

The trades come from the ByBit simulator (``hubkit.testing.BybitSimulator``): a short run is
recorded once, regrouped into frames of exactly 20 trades and copied with distinct trade ids
until there are ``--messages`` frames (every trade unique, so nothing is deduplicated away).

- ``decode``: microseconds per 20-trade frame for what the connection does to a frame
  (envelope, rows, Polars frame), one frame at a time and in coalesced runs of 256 frames,
  as wall time and as this process's CPU time (steadier on a shared machine);
- ``pipeline``: a replay server in a child process (its own core) sends the frames as fast as
  the client reads them. Measured in this process, in turns: a bare ``websockets`` client that
  only receives the frames (the ceiling of one stream), and a hubkit sink (WebSocket ->
  decode -> SQLite store -> cache -> change event) that has seen every trade in a change
  event. The ratio is hubkit trades/s over (bare frames/s x 20);
- ``latency``: the replay server sends the frames at ``--tps`` trades/s, stamping ``ts`` and
  every trade's ``T`` with the time it sends the frame; for every trade, the time from ``T``
  to the change event that carries it (p50 / p99 / max). (The simulator itself cannot make
  10k trades/s on a loaded 2-core machine: its Python market model needs ~40 us per trade.)

Machines here are noisy: compare the ratios printed by one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

TRADES_PER_FRAME = 20
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


# -- the feed -------------------------------------------------------------------------------------


def record_trades(count: int) -> list[dict[str, Any]]:
    """At least ``count`` ``publicTrade`` items as the simulator sends them (linear)."""
    import websockets.sync.client

    from hubkit.testing import BybitSimulator

    items: list[dict[str, Any]] = []
    sim = BybitSimulator(
        trades_per_second=3000.0, symbols={"linear": list(SYMBOLS)}, history_seconds=1.0
    )
    with sim, websockets.sync.client.connect(sim.ws_endpoint("linear")) as ws:
        topics = [f"publicTrade.{s}" for s in SYMBOLS]
        ws.send(json.dumps({"op": "subscribe", "args": topics, "req_id": "1"}))
        deadline = time.monotonic() + 60
        while len(items) < min(count, 20_000) and time.monotonic() < deadline:
            frame = msgspec.json.decode(ws.recv())
            if str(frame.get("topic", "")).startswith("publicTrade."):
                items += frame["data"]
    return items


def build_frames(items: list[dict[str, Any]], messages: int) -> list[bytes]:
    """``messages`` frames of exactly 20 trades each, per topic, with unique trade ids."""
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_symbol.setdefault(item["s"], []).append(item)
    groups = [
        (symbol, rows[i : i + TRADES_PER_FRAME])
        for symbol, rows in by_symbol.items()
        for i in range(0, len(rows) - TRADES_PER_FRAME + 1, TRADES_PER_FRAME)
    ]
    groups.sort(key=lambda g: g[1][0]["T"])
    encode = msgspec.json.Encoder().encode
    frames: list[bytes] = []
    copy = 0
    while len(frames) < messages:
        for symbol, rows in groups:
            if len(frames) >= messages:
                break
            data = [{**row, "i": f"{row['i']}-{copy}"} for row in rows] if copy else rows
            frame = {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": 0, "data": data}
            frames.append(encode(frame))
        copy += 1
    return frames


# -- the replay server (child process) -------------------------------------------------------------


async def serve(frames: Sequence[bytes], pace: float | None) -> None:
    """Send ``frames`` to each client once it subscribes: as fast as it reads
    them, or (``pace``) at ``pace`` trades/s with ``ts`` and every trade's ``T`` set to the
    time of sending."""
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    encode = msgspec.json.Encoder().encode

    async def blast(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame, text=True)

    async def paced(ws: ServerConnection, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, frame in enumerate(frames):
            due = start + n * TRADES_PER_FRAME / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            message = msgspec.json.decode(frame)
            now = int(time.time() * 1000)
            message["ts"] = now
            for item in message["data"]:
                item["T"] = now
            await ws.send(encode(message), text=True)

    async def handler(ws: ServerConnection) -> None:
        sender: asyncio.Task[None] | None = None
        async for raw in ws:
            request = json.loads(raw)
            op, req_id = request.get("op"), request.get("req_id")
            if op == "ping":
                reply = {"success": True, "ret_msg": "pong", "req_id": req_id, "op": "ping"}
                await ws.send(json.dumps(reply))
            elif op in ("subscribe", "unsubscribe"):
                reply = {"success": True, "ret_msg": "", "req_id": req_id, "op": op}
                await ws.send(json.dumps(reply))
                if op == "subscribe" and sender is None:
                    job = blast(ws) if pace is None else paced(ws, pace)
                    sender = asyncio.create_task(job)
        if sender is not None:
            sender.cancel()

    async with ws_serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ws://127.0.0.1:{port}/v5/public/linear", flush=True)
        await asyncio.Future()


@contextlib.contextmanager
def replay_server(frames: Sequence[bytes], pace: float | None = None) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.ndjson"
        path.write_bytes(b"\n".join(frames))
        cmd = [sys.executable, __file__, "serve", "--frames", str(path)]
        if pace is not None:
            cmd += ["--pace", str(pace)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            yield proc.stdout.readline().strip()
        finally:
            proc.kill()
            proc.wait(10)


# -- decode ---------------------------------------------------------------------------------------


def decode_costs(frames: Sequence[bytes], repeat: int) -> dict[str, tuple[float, float]]:
    """Microseconds per frame, wall and CPU (this process's, every thread): the connection's
    per-frame work, then runs of 1 / 256 frames. CPU time is what to compare on a busy
    machine: waiting for a core does not count."""
    from hubkit.bybit.protocol import BybitWsProtocol
    from hubkit.bybit.streams import ws_trade_spec
    from hubkit.connections.websocket import WebSocketConnection

    conn = WebSocketConnection(
        "ws://127.0.0.1:1/x", {"publicTrade": ws_trade_spec()}, protocol=BybitWsProtocol()
    )
    handle = conn._handle  # what the reader does to each frame on arrival
    from hubkit.connections.wsdecode import decode_run, runs

    def failed(exc: Exception, topic: str | None) -> None:
        raise exc

    best: dict[str, tuple[float, float]] = {}

    def note(label: str, wall: float, cpu: float) -> None:
        old = best.get(label, (1e9, 1e9))
        best[label] = (min(old[0], wall), min(old[1], cpu))

    raw = list(frames)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        handled = [handle(f) for f in raw]
        note("frame arrival (envelope + rows)", time.perf_counter() - t0, time.process_time() - c0)
        for batch in (1, 256):
            n = min(len(handled), 2000 if batch == 1 else len(handled))
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, n, batch):
                for run in runs(handled[i : i + batch]):
                    decode_run(run, failed)
            scale = len(raw) / n
            note(
                f"decode runs of {batch} frames -> Polars",
                (time.perf_counter() - t0) * scale,
                (time.process_time() - c0) * scale,
            )
    return {
        label: (wall / len(raw) * 1e6, cpu / len(raw) * 1e6) for label, (wall, cpu) in best.items()
    }


# -- pipeline -------------------------------------------------------------------------------------


async def raw_rate(url: str, messages: int) -> float:
    """Frames/s a bare ``websockets`` client receives from the replay server."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        topics = [f"publicTrade.{s}" for s in SYMBOLS]
        await ws.send(json.dumps({"op": "subscribe", "args": topics, "req_id": "1"}))
        await ws.recv(decode=False)  # the ack
        t0 = time.perf_counter()
        seen = 0
        while seen < messages:
            frame = await ws.recv(decode=False)
            if frame.startswith(b'{"topic"'):
                seen += 1
        return messages / (time.perf_counter() - t0)


def hubkit_rate(url: str, messages: int, store_dir: Path) -> tuple[float, dict[str, float]]:
    """Trades/s through a hubkit sink, counted in its change events; plus batch statistics."""
    import hubkit
    from hubkit.bybit.entities import PUBLIC_TRADE_KEY, PublicTrade
    from hubkit.bybit.streams import trades_ws_connection
    from hubkit.cache import DEFAULT_WINDOW
    from hubkit.policies import WebSocketSubscription

    total = messages * TRADES_PER_FRAME
    seen = 0
    changes = 0
    done = threading.Event()

    def on_change(change: Any) -> None:
        nonlocal seen, changes
        seen += change.frame.height
        changes += 1
        if seen >= total:
            done.set()

    store = hubkit.Store(store_dir / f"p4-{time.monotonic_ns()}.db")
    conn = trades_ws_connection(url=url, ping_interval=None)
    policy = WebSocketSubscription(
        topics=[f"publicTrade.{s}" for s in SYMBOLS], backfill_on_start=False, stream_fetch=False
    )
    sink = hubkit.open_sink(
        PublicTrade, PUBLIC_TRADE_KEY, store=store, connection=conn, policy=policy
    )
    sub = sink.subscribe(on_change)
    t0 = time.perf_counter()  # subscribed: the server is sending
    try:
        if not done.wait(300):
            raise RuntimeError(f"only {seen} of {total} trades arrived")
        elapsed = time.perf_counter() - t0
        rows = sink.dao.count()
        cached = len(sink.frame())
    finally:
        sub.close()
        sink.close()
        store.close()
    window = min(total, DEFAULT_WINDOW)  # the default cache holds the newest rows only
    if rows != total or cached != window:
        raise RuntimeError(f"stored {rows}, cached {cached}, expected {total} and {window}")
    return total / elapsed, {"changes": changes, "rows/change": total / max(1, changes)}


def cpu_seconds() -> float:
    """CPU time of this process so far (every thread, Polars' and SQLite's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipeline(frames: Sequence[bytes], repeat: int) -> None:
    messages = len(frames)
    trades = messages * TRADES_PER_FRAME
    with replay_server(frames) as url, tempfile.TemporaryDirectory() as tmp:
        raw: list[float] = []
        ours: list[float] = []
        for _ in range(repeat):
            cpu = cpu_seconds()
            raw.append(asyncio.run(raw_rate(url, messages)))
            raw_cpu = (cpu_seconds() - cpu) / trades * 1e6
            cpu = cpu_seconds()
            rate, stats = hubkit_rate(url, messages, Path(tmp))
            our_cpu = (cpu_seconds() - cpu) / trades * 1e6
            ours.append(rate)
            print(
                f"  bare websockets {raw[-1] * TRADES_PER_FRAME:10,.0f} trades/s "
                f"({raw_cpu:4.2f} CPU us/trade) | hubkit {rate:9,.0f} trades/s "
                f"({our_cpu:4.2f} CPU us/trade; {stats['changes']:.0f} changes of "
                f"{stats['rows/change']:,.0f} rows) | ratio {rate / (raw[-1] * 20):.2f}"
            )
        best_raw, best_ours = max(raw), max(ours)
        ratios = [o / (r * TRADES_PER_FRAME) for o, r in zip(ours, raw, strict=True)]
        print(
            f"best: bare {best_raw * TRADES_PER_FRAME:,.0f} trades/s, hubkit {best_ours:,.0f} "
            f"trades/s; ratio per turn median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}); goal >= 0.5"
        )


# -- latency --------------------------------------------------------------------------------------


def latency(frames: Sequence[bytes], tps: float, seconds: float, warmup: float = 2.0) -> None:
    """Change visibility at ``tps`` trades/s: the replay server paces the frames and stamps
    each trade with the time it sends it; the change handler notes when it sees the trade."""
    import hubkit
    from hubkit.bybit.entities import PUBLIC_TRADE_KEY, PublicTrade
    from hubkit.bybit.streams import trades_ws_connection
    from hubkit.policies import WebSocketSubscription

    needed = int((warmup + seconds) * tps / TRADES_PER_FRAME) + 1
    if len(frames) < needed:
        raise SystemExit(f"latency needs --messages >= {needed}")
    lags: list[float] = []
    measuring = threading.Event()
    with replay_server(frames, pace=tps) as url, tempfile.TemporaryDirectory() as tmp:

        def on_change(change: Any) -> None:
            if not measuring.is_set() or change.frame.height == 0:
                return
            now_us = time.time() * 1e6
            times = change.frame.get_column("time").dt.epoch("us").to_list()
            lags.extend((now_us - t) / 1000 for t in times)

        store = hubkit.Store(Path(tmp) / "latency.db")
        conn = trades_ws_connection(url=url)
        policy = WebSocketSubscription(
            topics=[f"publicTrade.{s}" for s in SYMBOLS],
            backfill_on_start=False,
            stream_fetch=False,
        )
        sink = hubkit.open_sink(
            PublicTrade, PUBLIC_TRADE_KEY, store=store, connection=conn, policy=policy
        )
        sub = sink.subscribe(on_change)
        try:
            time.sleep(warmup)
            measuring.set()
            time.sleep(seconds)
            measuring.clear()
        finally:
            sub.close()
            sink.close()
            store.close()
    lags.sort()

    def q(p: float) -> float:
        return lags[min(len(lags) - 1, int(p * len(lags)))]

    print(
        f"{len(lags):,} trades in {seconds:g} s ({len(lags) / seconds:,.0f}/s): change visible "
        f"after p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lags[-1]:.1f} ms "
        "(goal p99 <= 100 ms; trade times have ms resolution)"
    )


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("what", choices=["decode", "pipeline", "latency", "all", "serve"])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tps", type=float, default=10_000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    p.add_argument("--pace", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.what == "serve":
        asyncio.run(serve(Path(args.frames).read_bytes().split(b"\n"), args.pace))
        return 0
    frames = build_frames(record_trades(args.messages * TRADES_PER_FRAME), args.messages)
    print(f"{len(frames):,} frames of {TRADES_PER_FRAME} trades ({len(frames[0])} bytes)")
    if args.what in ("decode", "all"):
        print("decode, microseconds per frame (best of repeats): wall, CPU")
        for label, (wall, cpu) in decode_costs(frames, max(args.repeat, 3)).items():
            print(f"  {label:44} {wall:8.1f} {cpu:8.1f}")
    if args.what in ("pipeline", "all"):
        print("pipeline (turns alternate; each hubkit turn uses a fresh store)")
        pipeline(frames, args.repeat)
    if args.what in ("latency", "all"):
        latency(frames, args.tps, args.seconds)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HUBKIT_HOME", tempfile.mkdtemp(prefix="hubkit-p4-"))
    sys.exit(main())
