"""Data frames decoded straight into typed rows: ``parse_lazy``, ``TopicDecoder.rows`` and
``decode_run`` over typed rows. No socket."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import polars as pl
import pytest

from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections.wsdecode import RawFrame, TopicDecoder, TypedRows, decode_run, renamed
from hubkit.connections.wsproto import WsAck, WsData, WsPong
from hubkit.errors import DecodeError
from hubkit.gapfill import RecentRows

from ._spec import PRICE_SYMBOL, TRADE
from .servers import trade

DECODER = TopicDecoder(TRADE)


def frame_text(*items: dict[str, Any], topic: str = "publicTrade.BTCUSDT") -> bytes:
    message = {"topic": topic, "type": "snapshot", "ts": 1, "data": list(items)}
    return json.dumps(message).encode()


def arrive(text: bytes, decoder: TopicDecoder = DECODER) -> RawFrame:
    event = BybitWsProtocol().parse_lazy(text)
    assert isinstance(event, WsData)
    return RawFrame(event.topic, event.kind, decoder.rows(event.data), decoder, 0.0)


def test_parse_lazy_leaves_data_as_json_text() -> None:
    proto = BybitWsProtocol()
    event = proto.parse_lazy(frame_text(trade(1)))
    assert isinstance(event, WsData) and isinstance(event.data, msgspec.Raw)
    assert msgspec.json.decode(event.data) == [trade(1)]
    assert (event.topic, event.kind, event.ts) == ("publicTrade.BTCUSDT", "snapshot", 1)
    # control frames come out as from parse
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"8","op":"ping"}'
    assert isinstance(proto.parse_lazy(pong), WsPong)
    ack = b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"7","op":"subscribe"}'
    assert proto.parse_lazy(ack) == proto.parse(ack) and isinstance(proto.parse(ack), WsAck)
    for broken, field in [
        (b'{"topic":"publicTrade.X","type":"snapshot"}', "data"),
        (b'{"topic":"publicTrade.X","data":null}', "data"),
        (b'{"topic":5,"data":[]}', "topic"),
    ]:
        with pytest.raises(DecodeError) as caught:
            proto.parse_lazy(broken)
        assert caught.value.field == field
    with pytest.raises(DecodeError):
        proto.parse_lazy(b"{not json")


def test_typed_rows_make_the_same_frame_as_from_wire() -> None:
    items = [trade(i) for i in range(3)]
    raw = arrive(frame_text(*items))
    assert isinstance(raw.items, TypedRows)
    message = decode_run([raw], lambda error, topic: pytest.fail(str(error)))
    assert message is not None
    assert message.frame.equals(TRADE.from_wire(items))


def test_a_malformed_price_is_a_decode_error_naming_it() -> None:
    with pytest.raises(DecodeError) as caught:
        arrive(frame_text(trade(1), trade(2, price="12,5")))
    assert caught.value.field == "p" and "'12,5'" in str(caught.value)
    missing = trade(3)
    del missing["p"]
    with pytest.raises(DecodeError) as caught:
        arrive(frame_text(missing))
    assert caught.value.field == "p"
    with pytest.raises(DecodeError) as caught:
        DECODER.rows(msgspec.Raw(b'"text"'))
    assert caught.value.field == "data"


def test_values_only_the_general_path_reads_are_decoded_on_arrival() -> None:
    numeric_id = {**trade(1), "i": 12345}  # a number for a text column
    raw = arrive(frame_text(numeric_id))
    assert isinstance(raw.items, pl.DataFrame)
    assert raw.items["trade_id"].to_list() == ["12345"]
    run = [arrive(frame_text(trade(0))), raw, arrive(frame_text(trade(2)))]
    message = decode_run(run, lambda error, topic: pytest.fail(str(error)))
    assert message is not None
    assert message.frame["trade_id"].to_list() == ["t-0", "12345", "t-2"]


def test_a_run_skips_a_frame_whose_typed_rows_a_column_refuses_whole() -> None:
    huge = {**trade(5), "T": 2**64 - 1}  # msgspec reads it; the Int64 column does not
    run = [
        arrive(frame_text(trade(1))),
        arrive(frame_text(trade(2), huge)),
        arrive(frame_text(trade(3))),
    ]
    errors: list[tuple[DecodeError, str | None]] = []
    message = decode_run(run, lambda error, topic: errors.append((error, topic)))
    assert message is not None
    assert message.frame["trade_id"].to_list() == ["t-1", "t-3"]
    assert [(e.field, t) for e, t in errors] == [("T", "publicTrade.BTCUSDT")]


def test_custom_extractors_get_plain_json_values() -> None:
    decoder = TopicDecoder(PRICE_SYMBOL, renamed({"p": "price", "s": "symbol"}))
    raw = arrive(frame_text(trade(1)), decoder)
    assert not isinstance(raw.items, TypedRows | pl.DataFrame)
    assert list(raw.items) == renamed({"p": "price", "s": "symbol"})([trade(1)])
    message = decode_run([raw], lambda error, topic: pytest.fail(str(error)))
    assert message is not None and message.frame.row(0) == (16578.5, "BTCUSDT")


def test_recent_rows_all_new_batches_keep_the_window_order() -> None:
    frame = TRADE.from_wire([trade(i) for i in range(6)])
    recent = RecentRows(("trade_id",), maxlen=4)
    assert recent.fresh(frame[:3]).height == 3
    assert recent.fresh(frame[3:6], remember=False).height == 3
    recent.remember(frame[3:6])
    assert len(recent) == 4 and ("t-1",) not in recent and ("t-2",) in recent
    again = recent.fresh(frame)  # t-0, t-1 were forgotten; t-2..t-5 are duplicates
    assert again["trade_id"].to_list() == ["t-0", "t-1"]
    assert len(recent) == 4 and ("t-2",) not in recent and ("t-0",) in recent
