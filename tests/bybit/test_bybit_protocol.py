"""ByBit WebSocket shapes, decided without a socket (real samples from tests/samples/bybit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubkit.bybit.protocol import BybitWsProtocol
from hubkit.connections.wsproto import (
    WsAck,
    WsData,
    WsIgnored,
    WsPong,
    chunked,
)
from hubkit.errors import DecodeError

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "bybit"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def proto() -> BybitWsProtocol:
    return BybitWsProtocol()


@pytest.mark.parametrize(
    "name",
    [
        "ws_pong_linear.json",
        "ws_pong_linear_capture.json",
        "ws_pong_spot.json",
        "ws_pong_option.json",
        "ws_pong_private.json",
    ],
)
def test_every_pong_shape(proto: BybitWsProtocol, name: str) -> None:
    assert proto.parse(sample(name)) == WsPong()


def test_linear_ack(proto: BybitWsProtocol) -> None:
    ack = proto.parse(sample("ws_subscribe_ack_linear.json"))
    assert ack == WsAck(success=True, req_id=None, op="subscribe", message="")


def test_spot_ack_says_subscribe_in_ret_msg(proto: BybitWsProtocol) -> None:
    ack = proto.parse(sample("ws_subscribe_ack_spot.json"))
    assert isinstance(ack, WsAck) and ack.success and ack.req_id == "10001"


def test_option_command_resp_names_topics(proto: BybitWsProtocol) -> None:
    ack = proto.parse(sample("ws_subscribe_ack_option.json"))
    assert isinstance(ack, WsAck) and ack.success and ack.req_id is None
    assert ack.succeeded == ("orderbook.100.BTC-6JAN23-18000-C",)
    failed = proto.parse(
        json.dumps(
            {
                "success": True,
                "type": "COMMAND_RESP",
                "data": {"failTopics": ["x.bad"], "successTopics": []},
            }
        )
    )
    assert isinstance(failed, WsAck) and not failed.success and failed.failed == ("x.bad",)


def test_refusal_names_the_topic(proto: BybitWsProtocol) -> None:
    ack = proto.parse(sample("ws_subscribe_error_bad_topic_capture.json"))
    assert isinstance(ack, WsAck) and not ack.success
    assert ack.failed == ("getOrderBook.1.BTCUSDT",)


def test_unsubscribe_ack(proto: BybitWsProtocol) -> None:
    ack = proto.parse(sample("ws_unsubscribe_ack_ccxt.json"))
    assert ack == WsAck(success=True, req_id="3", op="unsubscribe", message="")


def test_data_frames(proto: BybitWsProtocol) -> None:
    event = proto.parse(sample("ws_publicTrade.json"))
    assert isinstance(event, WsData)
    assert event.topic == "publicTrade.BTCUSDT" and event.kind == "snapshot"
    assert event.data[0]["p"] == "16578.50" and event.ts == 1672304486868
    delta = proto.parse(sample("ws_orderbook_50_delta.json"))
    assert isinstance(delta, WsData) and delta.kind == "delta"


def test_requests_and_auth_replies_are_ignored(proto: BybitWsProtocol) -> None:
    assert isinstance(proto.parse(sample("ws_subscribe_request.json")), WsIgnored)
    assert isinstance(proto.parse(sample("ws_auth_success.json")), WsIgnored)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"topic": 5, "data": []}', "topic"),
        (b'{"topic": "publicTrade.X", "type": 1, "data": []}', "type"),
        (b'{"topic": "publicTrade.X", "ts": "soon", "data": []}', "ts"),
        (b'{"topic": "publicTrade.X", "type": "snapshot"}', "data"),
        (b"{}", "topic"),
        (b"[1, 2]", "frame"),
        (
            b'{"type": "COMMAND_RESP", "success": true, "data": {"failTopics": 3}}',
            "data.failTopics",
        ),
    ],
)
def test_malformed_frames_name_the_field(proto: BybitWsProtocol, raw: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        proto.parse(raw)
    assert caught.value.field == field
    assert caught.value.raw is not None


def test_invalid_json(proto: BybitWsProtocol) -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        proto.parse(b'{"topic": "publicTrade.X", "data": [')


def test_requests(proto: BybitWsProtocol) -> None:
    assert json.loads(proto.subscribe(["a", "b"], "7")) == {
        "op": "subscribe",
        "args": ["a", "b"],
        "req_id": "7",
    }
    assert json.loads(proto.unsubscribe(["a"], "8"))["op"] == "unsubscribe"
    assert json.loads(proto.ping("9")) == {"op": "ping", "req_id": "9"}


def test_chunked() -> None:
    topics = [f"t{i}" for i in range(23)]
    assert [len(c) for c in chunked(topics, 10)] == [10, 10, 3]
    assert list(chunked([], 10)) == []
    with pytest.raises(ValueError):
        BybitWsProtocol(max_args=0)
