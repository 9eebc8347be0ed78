"""P4: ByBit public trades through hubkit: WebSocket -> decode -> store -> cache -> change event.

Usage: ``python benchmarks/p4_trades_pipeline.py [--trades 300000] [--latency-seconds 10]``

Four measurements, each on loopback, each with a bounded runtime:

1. **raw**: the ``websockets`` loopback message rate at 20 trades per message: a plain
   ``websockets`` client receives the feed and counts frames (no decoding, nothing stored).
2. **hubkit**: ``hubkit.bybit.open_trades`` on the same feed; trades/s counted in the sink's
   change events (each event comes after the rows are decoded, committed to SQLite and put in
   the Polars cache).
3. **peer**: what a user would otherwise write: pybit's ``WebSocket`` client with a callback
   that appends each message's trades with ``pandas.DataFrame.to_sql`` into SQLite.
4. **latency**: the same feed paced at 10,000 trades/s (100 trades every 10 ms) into
   ``open_trades``, each trade's ``T`` set to the moment the server sends it; for each
   trade, the wall time its change event is handled minus ``T`` (ms resolution).

The feed is the simulator's trades (its market model, 3 linear symbols, 20 trades per
``publicTrade`` frame, ByBit's JSON), replayed by a small ByBit-speaking server in a child
process (subscribe acks, JSON pongs), so each reader gets the same frames and the
simulator's own generation speed (a few thousand trades/s) does not cap the figures. 1-3
replay as fast as the reader takes them; throughput is counted from the first to the last
trade a reader handles.

Goals: hubkit/raw >= 0.5, hubkit/peer >= 3, latency p99 <= 100 ms. The machine is noisy
(±25% between runs); the ratios come from one process run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PER_MESSAGE = 20


# -- the feed -----------------------------------------------------------------------------------


def make_frames(trades: int, path: Path) -> int:
    """Write ``trades`` of the simulator's trades as ByBit ``publicTrade`` frames (one JSON
    text per line, 20 trades each, symbols interleaved); returns the number of trades."""
    from hubkit.testing.bybit import BybitSimulator

    rate = 2000.0
    seconds = trades / (rate * len(SYMBOLS)) + 1
    with BybitSimulator(
        symbols={"linear": SYMBOLS}, trades_per_second=rate, history_seconds=seconds
    ) as sim:
        made = sim._call(lambda: list(sim.hub.market.all_trades()))
    by_symbol: dict[str, list[dict[str, Any]]] = {s: [] for s in SYMBOLS}
    for trade in made:
        if trade.category == "linear" and trade.symbol in by_symbol:
            by_symbol[trade.symbol].append(trade.ws_item())
    per_symbol = trades // len(SYMBOLS) // PER_MESSAGE
    written = 0
    with path.open("w") as out:
        for i in range(per_symbol):
            for symbol in SYMBOLS:
                items = by_symbol[symbol][i * PER_MESSAGE : (i + 1) * PER_MESSAGE]
                if len(items) < PER_MESSAGE:
                    continue
                frame = {
                    "topic": f"publicTrade.{symbol}",
                    "type": "snapshot",
                    "ts": items[-1]["T"],
                    "data": items,
                }
                out.write(json.dumps(frame, separators=(",", ":")) + "\n")
                written += PER_MESSAGE
    return written


async def serve_replay(path: Path, pace: float | None) -> None:
    """A ByBit-speaking WebSocket server that streams the frames of ``path`` to each client,
    for the topics it subscribes: as fast as the client reads them, or ``pace`` trades/s
    with each trade's ``T`` (and the frame's ``ts``) set to the moment it is sent. Prints
    its port; serves until its standard input closes."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    frames = [(line.split('"', 4)[3], line.rstrip("\n")) for line in path.open()]

    async def stream(ws: ServerConnection, topics: set[str]) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reader may leave before the end
            await send_frames(ws, topics)

    async def send_frames(ws: ServerConnection, topics: set[str]) -> None:
        if pace is None:
            for topic, text in frames:
                if topic in topics:
                    await ws.send(text)
            return
        loop = asyncio.get_running_loop()
        burst = 5  # frames per round: 100 trades every 10 ms at 10,000 trades/s
        period = burst * PER_MESSAGE / pace
        due = loop.time()
        chosen = [text for topic, text in frames if topic in topics]
        for start in range(0, len(chosen), burst):
            due += period
            for text in chosen[start : start + burst]:
                frame = json.loads(text)
                now_ms = int(time.time() * 1000)
                for item in frame["data"]:
                    item["T"] = now_ms
                frame["ts"] = now_ms
                await ws.send(json.dumps(frame, separators=(",", ":")))
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def handler(ws: ServerConnection) -> None:
        topics: set[str] = set()
        streamer: asyncio.Task[None] | None = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                op, req_id = msg.get("op"), msg.get("req_id", "")
                if op in ("subscribe", "unsubscribe"):
                    # answer after a network round trip's worth: pybit records a subscription
                    # only after sending it, so an instant answer races its bookkeeping
                    await asyncio.sleep(0.05)
                    ack = {"success": True, "ret_msg": "", "conn_id": "replay", "op": op}
                    await ws.send(json.dumps({**ack, "req_id": req_id}))
                    if op == "subscribe":
                        topics.update(msg.get("args", []))
                        if streamer is None:
                            streamer = asyncio.create_task(stream(ws, topics))
                elif op == "ping":
                    pong = {"success": True, "ret_msg": "pong", "conn_id": "replay", "op": "ping"}
                    await ws.send(json.dumps({**pong, "req_id": req_id}))
        finally:
            if streamer is not None:
                streamer.cancel()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"port={port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


@contextlib.contextmanager
def replay_server(path: Path, pace: float | None = None) -> Iterator[str]:
    """Run ``serve_replay`` in a child process; yields its WebSocket base URL."""
    paced = [] if pace is None else ["--pace", str(pace)]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path), *paced],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = child.stdout.readline().strip().split("=", 1)[1]
        yield f"ws://127.0.0.1:{port}/v5/public"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class Meter:
    """Counts trades; notes the time of the first and of the last; wakes a waiter at ``goal``."""

    def __init__(self, goal: int) -> None:
        self.goal = goal
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.first_batch = 0
        self.done = threading.Event()

    def add(self, n: int) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first, self.first_batch = now, n
        self.count += n
        self.last = now
        if self.count >= self.goal:
            self.done.set()

    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - self.first_batch) / span if span > 0 else float("nan")


# -- 1. raw websockets --------------------------------------------------------------------------


def run_raw(ws_base: str, total: int) -> float:
    """Trades/s of a bare ``websockets`` client counting frames (20 trades each)."""
    from websockets.asyncio.client import connect

    meter = Meter(total)

    async def main() -> None:
        async with connect(f"{ws_base}/linear", compression=None, max_size=None) as ws:
            topics = [f"publicTrade.{s}" for s in SYMBOLS]
            await ws.send(json.dumps({"op": "subscribe", "args": topics}))
            async for frame in ws:
                if frame.startswith('{"topic"'):
                    meter.add(PER_MESSAGE)
                    if meter.count >= total:
                        return

    asyncio.run(asyncio.wait_for(main(), timeout=300))
    return meter.rate()


# -- 2. hubkit ----------------------------------------------------------------------------------


def run_hubkit(ws_base: str, total: int, folder: Path) -> tuple[float, int]:
    """Trades/s through ``open_trades`` (decode, SQLite, cache, change event); stored rows."""
    from hubkit.bybit import open_trades
    from hubkit.types import Change, Source

    meter = Meter(total)

    def on_change(change: Change) -> None:
        if change.source is Source.REMOTE:
            meter.add(change.frame.height)

    with open_trades(
        SYMBOLS,
        store=folder / "hubkit.db",
        rest_url="http://127.0.0.1:9",  # never asked: no reconnect happens here
        ws_url=ws_base,
    ) as sink:
        sink.subscribe(on_change)
        if not meter.done.wait(300):
            raise RuntimeError(f"hubkit got {meter.count} of {total} trades")
        rows = sink.dao.count()
    return meter.rate(), rows


# -- 3. peer: pybit + pandas.to_sql -------------------------------------------------------------


def run_peer(ws_base: str, total: int, folder: Path) -> tuple[float, int]:
    """Trades/s of pybit's WebSocket client appending each message with ``to_sql``."""
    import pandas as pd
    import pybit.unified_trading as unified

    db = sqlite3.connect(folder / "peer.db", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    meter = Meter(total)

    # SQLite column names ignore case, so ByBit's "s" (symbol) and "S" (side) must be renamed
    names = {"i": "exec_id", "s": "symbol", "p": "price", "v": "size", "S": "side", "T": "time"}
    names |= {"BT": "is_block_trade", "L": "tick_direction", "RPI": "is_rpi_trade"}

    def on_message(message: dict[str, Any]) -> None:
        frame = pd.DataFrame(message["data"]).rename(columns=names)
        frame = frame.astype({"price": float, "size": float})
        frame.to_sql("trades", db, if_exists="append", index=False)
        meter.add(len(frame))

    # pybit connects to a fixed URL template; pointing it at another host is one assignment
    unified.PUBLIC_WSS = ws_base + "/{CHANNEL_TYPE}"  # type: ignore[attr-defined]
    ws = unified.WebSocket(channel_type="linear", testnet=False)
    try:
        ws.trade_stream(symbol=SYMBOLS, callback=on_message)
        if not meter.done.wait(600):
            raise RuntimeError(f"the peer got {meter.count} of {total} trades")
    finally:
        ws.exit()
    rows = db.execute("SELECT count(*) FROM trades").fetchone()[0]
    db.close()
    return meter.rate(), int(rows)


# -- 4. latency ---------------------------------------------------------------------------------


def run_latency(ws_base: str, seconds: float, folder: Path) -> tuple[float, float, int, float]:
    """p50/p99 ms of (change event handled - trade sent) on a feed paced at 10,000 trades/s;
    trades seen; their rate."""
    from hubkit.bybit import open_trades
    from hubkit.types import Change, Source

    latencies: list[float] = []
    recording = threading.Event()
    lock = threading.Lock()

    def on_change(change: Change) -> None:
        if change.source is not Source.REMOTE or not recording.is_set():
            return
        now = datetime.now(UTC)
        lag = [(now - t).total_seconds() * 1000 for t in change.frame.get_column("time")]
        with lock:
            latencies.extend(lag)

    with open_trades(
        SYMBOLS, store=folder / "latency.db", rest_url="http://127.0.0.1:9", ws_url=ws_base
    ) as sink:
        sink.subscribe(on_change)
        threading.Event().wait(2.0)  # warm-up: let the stream settle before recording
        recording.set()
        started = time.perf_counter()
        threading.Event().wait(seconds)  # the measuring window
        recording.clear()
        elapsed = time.perf_counter() - started
    with lock:
        values = sorted(latencies)
    if not values:
        raise RuntimeError("no trades arrived")
    p50 = statistics.median(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return p50, p99, len(values), len(values) / elapsed


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trades", type=int, default=300_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve_replay(args.serve, args.pace))
        return 0
    with tempfile.TemporaryDirectory(prefix="hubkit-p4-") as tmp:
        folder = Path(tmp)
        feed = folder / "frames.ndjson"
        total = make_frames(args.trades, feed)
        print(f"feed: {total:,} simulator trades in {total // PER_MESSAGE:,} frames of 20")
        with replay_server(feed) as ws_base:
            raw = run_raw(ws_base, total)
            msgs = raw / PER_MESSAGE
            print(f"raw websockets loopback : {msgs:>10,.0f} msg/s = {raw:>10,.0f} trades/s")
            hub, hub_rows = run_hubkit(ws_base, total, folder)
            print(f"hubkit open_trades      : {hub:>10,.0f} trades/s ({hub_rows:,} rows stored)")
            peer, peer_rows = run_peer(ws_base, total, folder)
            print(f"pybit + pandas.to_sql   : {peer:>10,.0f} trades/s ({peer_rows:,} rows stored)")
        with replay_server(feed, pace=10_000) as ws_base:
            p50, p99, seen, rate = run_latency(ws_base, args.latency_seconds, folder)
        print(
            f"change latency at {rate:,.0f} trades/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"({seen:,} trades; goal p99 <= 100 ms)"
        )
        print(f"ratio hubkit/raw  : {hub / raw:.2f} (goal >= 0.5)")
        print(f"ratio hubkit/peer : {hub / peer:.2f} (goal >= 3)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HUBKIT_PROGRESS", "quiet")
    sys.exit(main())
