"""Decoding ByBit ``publicTrade`` WebSocket frames: msgspec vs orjson vs stdlib json.

    python benchmarks/ws_decode.py [--messages 100000] [--repeat 5]

Prints messages/s and trades/s per decoder at 1 and 20 trades per message, as ratios to the
stdlib ``json`` baseline measured in the same process (machines here are noisy: compare the
ratios, not the absolute figures). Decoders:

- ``hubkit parse``: ``BybitWsProtocol.parse`` as the WebSocket connection uses it: a typed
  msgspec envelope (topic/type/ts/control fields checked), ``data`` as plain dicts, wrapped in
  a ``WsData`` event;
- ``msgspec envelope``: the same ``msgspec.json.Decoder`` without the event wrapper;
- ``msgspec typed trades``: envelope and trades as Structs (the BASELINES.md reference; not
  usable with ``EntitySpec.from_wire``, which takes mappings);
- ``orjson`` / ``json``: ``loads`` to dicts, then the same topic check.

A second table measures turning decoded rows into Polars frames one message at a time versus
coalesced runs of 256 messages (what ``WebSocketConnection.messages()`` does under load):
``pl.from_dicts`` (untyped, the reference), and hubkit's one wire conversion of the
``PublicTrade`` columns both ways in: JSON text through the typed decoder
(``EntitySpec.wire_decoder()``, as the WebSocket connection does) and decoded objects through
``EntitySpec.from_wire`` (as REST does), timed as this process's CPU time (steadier than
wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import polars as pl

from hubkit.bybit.protocol import BybitWsProtocol, _BybitFrame


class _Trade(msgspec.Struct):
    T: int
    s: str
    S: str
    v: str
    p: str
    L: str
    i: str
    BT: bool
    seq: int


class _TradeFrame(msgspec.Struct):
    topic: str
    type: str
    ts: int
    data: list[_Trade]


def make_messages(count: int, trades_per_message: int) -> list[bytes]:
    out = []
    for n in range(count):
        base = n * trades_per_message
        data = [
            {
                "T": 1672304486865 + base + k,
                "s": "BTCUSDT",
                "S": "Buy" if (base + k) % 2 else "Sell",
                "v": f"{0.001 * (1 + (base + k) % 7):.3f}",
                "p": f"{16578.5 + (base + k) % 100 * 0.5:.2f}",
                "L": "PlusTick",
                "i": f"20f43950-d8dd-5b31-9112-{base + k:012d}",
                "BT": False,
                "seq": 1783284617 + base + k,
            }
            for k in range(trades_per_message)
        ]
        frame = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1672304486868 + n}
        out.append(json.dumps({**frame, "data": data}, separators=(",", ":")).encode())
    return out


def decoders() -> dict[str, Callable[[bytes], Any]]:
    proto = BybitWsProtocol()
    envelope = msgspec.json.Decoder(_BybitFrame)
    typed = msgspec.json.Decoder(_TradeFrame)

    def with_json(raw: bytes) -> Any:
        doc = json.loads(raw)
        if not isinstance(doc.get("topic"), str):
            raise ValueError("topic")
        return doc["data"]

    def with_orjson(raw: bytes) -> Any:
        doc = orjson.loads(raw)
        if not isinstance(doc.get("topic"), str):
            raise ValueError("topic")
        return doc["data"]

    return {
        "hubkit parse (msgspec envelope)": proto.parse,
        "msgspec envelope, data as dicts": envelope.decode,
        "msgspec typed trades (reference)": typed.decode,
        "orjson": with_orjson,
        "json (stdlib)": with_json,
    }


def rates(
    fns: dict[str, Callable[[bytes], Any]], messages: list[bytes], repeat: int
) -> dict[str, float]:
    """Messages/s per decoder: best of ``repeat`` passes, the decoders taking turns in each
    round so that noise from other processes falls on all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for raw in messages:
                fn(raw)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(messages) / seconds for name, seconds in best.items()}


def frames_rate(rows: list[list[dict[str, Any]]], batch: int, repeat: int) -> float:
    """Messages/s turned into Polars frames, ``batch`` messages per frame."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for at in range(0, len(rows), batch):
            items = [item for chunk in rows[at : at + batch] for item in chunk]
            pl.from_dicts(items)
        best = min(best, time.perf_counter() - start)
    return len(rows) / best


def conversion_rates(repeat: int) -> dict[str, float]:
    """Messages per CPU second (20 trades each) through hubkit's wire conversion into
    ``PublicTrade`` frames, per message and per run of 256 messages; best of ``repeat``,
    taking turns."""
    from hubkit.bybit.presets import ws_trade_spec

    spec = ws_trade_spec()
    decoder = spec.wire_decoder()
    texts = [
        msgspec.json.encode(msgspec.json.decode(raw)["data"]) for raw in make_messages(20_000, 20)
    ]
    objects = [msgspec.json.decode(text) for text in texts]

    def typed(batch: int) -> None:
        for at in range(0, len(texts), batch):
            rows = [row for text in texts[at : at + batch] for row in decoder.decode(text)]
            decoder.frame(rows)

    def from_wire(batch: int) -> None:
        for at in range(0, len(objects), batch):
            spec.from_wire([item for chunk in objects[at : at + batch] for item in chunk])

    runs = {
        f"{name}, {label}": (fn, batch)
        for name, fn in (("typed decoder (JSON text)", typed), ("from_wire (objects)", from_wire))
        for label, batch in (("one frame per message", 1), ("one frame per 256", 256))
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for label, (fn, batch) in runs.items():
            start = time.process_time()
            fn(batch)
            best[label] = min(best[label], time.process_time() - start)
    return {label: len(texts) / seconds for label, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    print(f"{args.messages:,} messages per run, best of {args.repeat}")
    for per in (1, 20):
        count = args.messages if per == 1 else max(1, args.messages // 4)
        messages = make_messages(count, per)
        print(f"\n{per} trade(s)/message ({len(messages[0])} bytes each)")
        print(f"{'decoder':36} {'msg/s':>12} {'trades/s':>12} {'vs json':>8} {'vs orjson':>9}")
        measured = rates(decoders(), messages, args.repeat)
        base, fast = measured["json (stdlib)"], measured["orjson"]
        for name, value in measured.items():
            print(
                f"{name:36} {value:12,.0f} {value * per:12,.0f} "
                f"{value / base:8.2f} {value / fast:9.2f}"
            )

    print("\nrows -> Polars frame (20 trades/message, after decoding)")
    rows = [msgspec.json.decode(raw)["data"] for raw in make_messages(20_000, 20)]
    single = coalesced = 0.0
    for _ in range(args.repeat):  # alternate, for the same reason as above
        single = max(single, frames_rate(rows, 1, 1))
        coalesced = max(coalesced, frames_rate(rows, 256, 1))
    print(f"{'one frame per message':36} {single:12,.0f} msg/s")
    print(
        f"{'one frame per 256 messages':36} {coalesced:12,.0f} msg/s  ({coalesced / single:.1f}x)"
    )
    print("\nhubkit wire conversion -> PublicTrade frames (20 trades/message, CPU time)")
    for label, value in conversion_rates(args.repeat).items():
        print(f"{label:52} {value:10,.0f} msg/CPU-s  ({1e6 / value:6.1f} CPU us/msg)")


if __name__ == "__main__":
    main()
