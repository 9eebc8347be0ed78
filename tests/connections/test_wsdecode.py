"""Topic decoders, runs and run decoding: pure logic, no socket."""

from __future__ import annotations

from typing import Any

import pytest

from hubkit.connections.wsdecode import (
    RawFrame,
    TopicDecoder,
    TopicDecoders,
    decode_run,
    default_extract,
    renamed,
    runs,
)
from hubkit.errors import DecodeError

from ._spec import SYMBOL_ONLY, TRADE
from .servers import trade

DECODER = TopicDecoder(TRADE)


def raw(topic: str, kind: str, *items: dict[str, Any]) -> RawFrame:
    return RawFrame(topic, kind, list(items), DECODER, 0.0)


def test_longest_prefix_wins() -> None:
    table = TopicDecoders({"kline": TRADE, "kline.5": (SYMBOL_ONLY, default_extract)})
    assert table.resolve("kline.5.BTCUSDT") == TopicDecoder(SYMBOL_ONLY)
    assert table.resolve("kline.60.BTCUSDT") == TopicDecoder(TRADE)
    assert table.resolve("kline") == TopicDecoder(TRADE)
    assert table.resolve("klines.5") is None
    assert table.resolve("tickers.BTCUSDT") is None


def test_runs_keep_order_per_topic() -> None:
    frames = [
        raw("a", "snapshot"),
        raw("b", "snapshot"),
        raw("a", "delta"),
        raw("a", "delta"),
        raw("b", "snapshot"),
        raw("a", "snapshot"),
    ]
    grouped = runs(frames)
    assert [(r[0].topic, r[0].kind, len(r)) for r in grouped] == [
        ("a", "snapshot", 1),
        ("b", "snapshot", 2),
        ("a", "delta", 2),
        ("a", "snapshot", 1),
    ]


def test_decode_run_skips_bad_frames_whole() -> None:
    errors: list[tuple[DecodeError, str | None]] = []
    bad = {**trade(2)}
    del bad["p"]
    run = [
        raw("publicTrade.X", "snapshot", trade(1)),
        raw("publicTrade.X", "snapshot", trade(3), bad),
        raw("publicTrade.X", "snapshot", trade(4)),
    ]
    message = decode_run(run, lambda error, topic: errors.append((error, topic)))
    assert message is not None
    assert message.frame["trade_id"].to_list() == ["t-1", "t-4"]
    assert [(e.field, t) for e, t in errors] == [("p", "publicTrade.X")]
    assert decode_run([run[1]], lambda error, topic: None) is None


def test_extractors() -> None:
    assert default_extract({"a": 1}) == [{"a": 1}]
    assert default_extract([{"a": 1}]) == [{"a": 1}]
    with pytest.raises(DecodeError) as caught:
        default_extract("x")
    assert caught.value.field == "data"
    assert renamed({"p": "price"})([{"p": "1", "s": "X"}]) == [{"price": "1", "s": "X"}]
    with pytest.raises(DecodeError):
        renamed({})([1])
