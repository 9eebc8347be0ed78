"""ByBit v5 WebSocket messages: the ``WsProtocol`` a ``WebSocketConnection`` to ByBit is given.

``BybitWsProtocol`` speaks ByBit v5 public streams:

- requests: ``{"op":"subscribe","args":[...],"req_id":"7"}`` (at most ``max_args`` topics per
  request; spot allows 10), ``{"op":"unsubscribe",...}``, ``{"op":"ping","req_id":"8"}``;
- acks: linear/inverse ``{"success":true,"ret_msg":"","op":"subscribe","req_id":"7",...}``,
  spot the same with ``"ret_msg":"subscribe"``, option/spread
  ``{"success":true,"type":"COMMAND_RESP","data":{"successTopics":[...],"failTopics":[...]}}``;
  a refusal ``{"success":false,"ret_msg":"error:handler not found,topic:X",...}``;
- pongs: ``ret_msg == "pong"`` (linear/inverse/spot, ``op`` is ``"ping"``) or ``op == "pong"``
  (option, spread, private);
- data: ``{"topic", "type", "ts", "data", ...}``.

``parse`` decodes the envelope with a typed msgspec decoder (``data`` stays plain JSON values)
and raises ``DecodeError`` naming the field for frames that are not JSON, have wrong types, or
are neither data nor a known control frame. ``parse_lazy`` does the same but leaves a data
frame's ``data`` as JSON text (``msgspec.Raw``), so that the connection decodes the rows
straight into typed values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from hubkit.connections.wsproto import (
    WsAck,
    WsData,
    WsEvent,
    WsIgnored,
    WsPong,
    decode_error_field,
    preview,
)
from hubkit.errors import DecodeError

__all__ = ["BybitWsProtocol"]


class _BybitFrame(msgspec.Struct):
    """Every top-level field hubkit reads from a ByBit frame; unknown fields are ignored."""

    topic: str | None = None
    type: str | None = None
    ts: int | float | None = None
    data: Any = None
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | int | None = None


class _BybitDataFrame(msgspec.Struct):
    """``_BybitFrame`` with ``data`` left as its JSON text (``msgspec.Raw``)."""

    topic: str | None = None
    type: str | None = None
    ts: int | float | None = None
    data: msgspec.Raw = msgspec.Raw()
    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    req_id: str | int | None = None


_NULL = msgspec.Raw(b"null")


class _CommandData(msgspec.Struct):
    successTopics: list[str] = []  # ByBit's wire names
    failTopics: list[str] = []


_TOPIC_IN_MESSAGE = re.compile(r"topic:\s*([^\s,;]+)")


class BybitWsProtocol:
    """ByBit v5 WebSocket shapes (see the module docstring). ``max_args`` defaults to spot's 10."""

    def __init__(self, *, max_args: int = 10) -> None:
        if max_args < 1:
            raise ValueError("max_args must be at least 1")
        self.max_args = max_args
        self._decoder = msgspec.json.Decoder(_BybitFrame)
        self._data_decoder = msgspec.json.Decoder(_BybitDataFrame)
        self._encoder = msgspec.json.Encoder()

    def __repr__(self) -> str:
        return f"BybitWsProtocol(max_args={self.max_args})"

    def subscribe(self, topics: Sequence[str], req_id: str) -> str:
        return self._request("subscribe", topics, req_id)

    def unsubscribe(self, topics: Sequence[str], req_id: str) -> str:
        return self._request("unsubscribe", topics, req_id)

    def _request(self, op: str, topics: Sequence[str], req_id: str) -> str:
        message = {"op": op, "args": list(topics), "req_id": req_id}
        return self._encoder.encode(message).decode()

    def ping(self, req_id: str) -> str:
        return self._encoder.encode({"op": "ping", "req_id": req_id}).decode()

    def parse(self, raw: bytes | str) -> WsEvent:
        try:
            frame = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            field = decode_error_field(exc) or "frame"
            raise DecodeError(f"malformed frame: {exc}", field=field, raw=preview(raw)) from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(f"frame is not JSON: {exc}", raw=preview(raw)) from exc
        if frame.topic is not None:
            if frame.data is None:
                raise DecodeError(
                    f"frame on {frame.topic!r} has no data", field="data", raw=preview(raw)
                )
            return WsData(frame.topic, frame.type or "snapshot", frame.data, frame.ts)
        return self._control(frame, raw)

    def parse_lazy(self, raw: bytes | str) -> WsEvent:
        """``parse``, except that a data frame's ``data`` stays JSON text (``msgspec.Raw``), for
        a typed decoder to read in one pass. Control frames come out as from ``parse``."""
        try:
            frame = self._data_decoder.decode(raw)
        except msgspec.DecodeError:
            return self.parse(raw)  # the full parse names what is wrong
        if frame.topic is None:
            return self.parse(raw)
        data = frame.data
        if not data or data == _NULL:
            raise DecodeError(
                f"frame on {frame.topic!r} has no data", field="data", raw=preview(raw)
            )
        return WsData(frame.topic, frame.type or "snapshot", data, frame.ts)

    def _control(self, frame: _BybitFrame, raw: bytes | str) -> WsEvent:
        op = frame.op
        if op == "pong" or frame.ret_msg == "pong":
            return WsPong()
        req_id = None if frame.req_id in (None, "") else str(frame.req_id)
        message = frame.ret_msg or ""
        if frame.type == "COMMAND_RESP":
            try:
                command = msgspec.convert(frame.data or {}, _CommandData)
            except msgspec.ValidationError as exc:
                field = "data." + (decode_error_field(exc) or "successTopics")
                raise DecodeError(f"malformed ack: {exc}", field=field, raw=preview(raw)) from exc
            failed = tuple(command.failTopics)
            return WsAck(
                success=bool(frame.success) and not failed,
                req_id=req_id,
                op=op,
                message=message or (f"failTopics: {', '.join(failed)}" if failed else ""),
                succeeded=tuple(command.successTopics),
                failed=failed,
            )
        if op is None and frame.success is None:
            raise DecodeError(
                "frame has neither a topic nor an op", field="topic", raw=preview(raw)
            )
        if frame.success is None:
            # A request echoed back (or sent by a peer) carries no verdict: nothing to act on.
            return WsIgnored(str(op))
        if op in ("subscribe", "unsubscribe") or op is None:
            success = bool(frame.success)
            failed = () if success else tuple(_TOPIC_IN_MESSAGE.findall(message))
            return WsAck(success, req_id, op, message, failed=failed)
        return WsIgnored(op)
