"""WebSocket control logic: topics, subscribe / unsubscribe acks, pings, per-category shapes.

``WsSession`` turns one client text frame into the replies ByBit sends and the subscription
changes to make; it does no I/O. Shapes (from ByBit's docs and captures):

- linear / inverse ack: ``{success, ret_msg: "", conn_id, req_id, op}``; spot the same with
  ``ret_msg: "subscribe"``; option: ``{success, conn_id, data: {failTopics, successTopics},
  type: "COMMAND_RESP"}``; private: ``{success, ret_msg: "", op, conn_id}``.
- a topic that does not exist: ``success: false`` and ``ret_msg: "error:handler not
  found,topic:<topic>"`` (option: listed in ``failTopics``); the valid topics of the same request
  are still subscribed.
- spot accepts at most 10 args per request (``ret_msg: "error:args size >10"``).
- pong: linear/inverse ``{success, ret_msg: "pong", conn_id, req_id, op: "ping"}``; spot the
  same without ``req_id`` unless the ping had one; option ``{args: [<ms>], op: "pong"}``;
  private ``{req_id, op: "pong", args: [<ms>], conn_id}``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from hubkit.testing.bybit.instruments import Catalog
from hubkit.testing.bybit.pricing import INTERVALS

__all__ = ["PRIVATE_TOPICS", "Topic", "WsReply", "WsSession", "parse_topic"]

BOOK_DEPTHS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "spot": (1, 50, 200, 1000),
        "linear": (1, 50, 200, 1000),
        "inverse": (1, 50, 200, 1000),
        "option": (25, 100),
    }
)
PRIVATE_TOPICS = frozenset(
    {"order", "execution", "execution.fast", "position", "wallet", "greeks", "dcp"}
)
SPOT_MAX_ARGS = 10


@dataclass(frozen=True)
class Topic:
    """A parsed public topic: ``kind`` is publicTrade / tickers / kline / orderbook."""

    name: str
    kind: str
    symbol: str  # a base coin for option publicTrade
    interval: str = ""
    depth: int = 0


def parse_topic(category: str, name: str, catalog: Catalog) -> Topic | None:
    """Parse and validate a topic for a category; None when ByBit has no such handler."""
    parts = name.split(".")
    kind = parts[0]
    if kind == "publicTrade" and len(parts) == 2:
        key = parts[1]
        if category == "option":
            return Topic(name, kind, key) if key in catalog.base_coins("option") else None
        return Topic(name, kind, key) if catalog.get(category, key) else None
    if kind == "tickers" and len(parts) == 2:
        return Topic(name, kind, parts[1]) if catalog.get(category, parts[1]) else None
    if kind == "kline" and len(parts) == 3 and category != "option":
        if parts[1] in INTERVALS and catalog.get(category, parts[2]):
            return Topic(name, kind, parts[2], interval=parts[1])
        return None
    if kind == "orderbook" and len(parts) == 3 and parts[1].isdigit():
        depth = int(parts[1])
        if depth in BOOK_DEPTHS[category] and catalog.get(category, parts[2]):
            return Topic(name, kind, parts[2], depth=depth)
    return None


@dataclass
class WsReply:
    """What to do after one client frame: replies to send, topics to add / remove."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    subscribe: list[Topic] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    ping: bool = False  # the frame was a ping (answered in ``replies`` unless pings are ignored)


class WsSession:
    """Control-message logic of one connection to ``/v5/public/<category>`` or ``/v5/private``.

    ``api_keys`` (private only) maps API key to secret; when empty any signature is accepted.
    """

    def __init__(
        self,
        category: str,
        conn_id: str,
        catalog: Catalog,
        now_ms: Callable[[], int],
        api_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.category = category
        self.conn_id = conn_id
        self.catalog = catalog
        self.now_ms = now_ms
        self.api_keys = dict(api_keys or {})
        self.topics: set[str] = set()
        self.authed = False

    def on_text(self, text: str | bytes) -> WsReply:
        """Handle one text frame from the client."""
        out = WsReply()
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            out.replies.append(self._fail("error:invalid op", "", None))
            return out
        if not isinstance(msg, dict):
            out.replies.append(self._fail("error:invalid op", "", None))
            return out
        op = msg.get("op")
        req_id = msg.get("req_id")
        args = msg.get("args")
        if op == "ping":
            out.ping = True
            out.replies.append(self._pong(req_id))
        elif op == "subscribe" and isinstance(args, list):
            self._subscribe(out, [str(a) for a in args], req_id)
        elif op == "unsubscribe" and isinstance(args, list):
            names = [str(a) for a in args]
            out.unsubscribe.extend(n for n in names if n in self.topics)
            self.topics.difference_update(names)
            out.replies.append(self._ack("unsubscribe", True, "", req_id, names, []))
        elif op == "auth" and self.category == "private":
            out.replies.append(self._auth(args, req_id))
        else:
            out.replies.append(self._fail("error:invalid op", str(op or ""), req_id))
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _fail(self, ret_msg: str, op: str, req_id: object) -> dict[str, Any]:
        return {
            "success": False,
            "ret_msg": ret_msg,
            "conn_id": self.conn_id,
            "req_id": "" if req_id is None else req_id,
            "op": op,
        }

    def _pong(self, req_id: object) -> dict[str, Any]:
        now = str(self.now_ms())
        if self.category == "option":
            pong: dict[str, Any] = {"args": [now], "op": "pong"}
            if req_id is not None:
                pong["req_id"] = req_id
            return pong
        if self.category == "private":
            return {"req_id": "" if req_id is None else req_id, "op": "pong", "args": [now],
                    "conn_id": self.conn_id}  # fmt: skip
        pong = {"success": True, "ret_msg": "pong", "conn_id": self.conn_id}
        if self.category != "spot" or req_id is not None:
            pong["req_id"] = "" if req_id is None else req_id
        pong["op"] = "ping"
        return pong

    def _ack(
        self, op: str, ok: bool, ret_msg: str, req_id: object, good: list[str], bad: list[str]
    ) -> dict[str, Any]:
        if self.category == "option":
            ack: dict[str, Any] = {
                "success": ok,
                "conn_id": self.conn_id,
                "data": {"failTopics": bad, "successTopics": good},
                "type": "COMMAND_RESP",
            }
            if req_id is not None:
                ack["req_id"] = req_id
            return ack
        if self.category == "private":
            ack = {"success": ok, "ret_msg": ret_msg, "op": op, "conn_id": self.conn_id}
            if req_id is not None:
                ack["req_id"] = req_id
            return ack
        if ok and op == "subscribe" and self.category == "spot":
            ret_msg = "subscribe"
        return {
            "success": ok,
            "ret_msg": ret_msg,
            "conn_id": self.conn_id,
            "req_id": "" if req_id is None else req_id,
            "op": op,
        }

    def _subscribe(self, out: WsReply, names: list[str], req_id: object) -> None:
        if self.category == "spot" and len(names) > SPOT_MAX_ARGS:
            out.replies.append(self._ack("subscribe", False, "error:args size >10", req_id, [], []))
            return
        good: list[str] = []
        bad: list[str] = []
        if self.category == "private":
            if not self.authed:
                out.replies.append(
                    self._ack("subscribe", False, "Request not authorized", req_id, [], [])
                )
                return
            for name in names:
                (good if name.split(".")[0] in PRIVATE_TOPICS or name in PRIVATE_TOPICS
                 else bad).append(name)  # fmt: skip
            self.topics.update(good)
        else:
            for name in names:
                topic = parse_topic(self.category, name, self.catalog)
                if topic is None:
                    bad.append(name)
                    continue
                good.append(name)
                if name not in self.topics:
                    self.topics.add(name)
                    out.subscribe.append(topic)
        ret_msg = f"error:handler not found,topic:{bad[0]}" if bad else ""
        out.replies.append(self._ack("subscribe", not bad, ret_msg, req_id, good, bad))

    def _auth(self, args: object, req_id: object) -> dict[str, Any]:
        ok = isinstance(args, list) and len(args) == 3
        if ok and self.api_keys:
            assert isinstance(args, list)
            key, expires, sign = str(args[0]), str(args[1]), str(args[2])
            secret = self.api_keys.get(key)
            expected = (
                hmac.new(
                    secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256
                ).hexdigest()
                if secret is not None
                else None
            )
            ok = (
                expected is not None
                and hmac.compare_digest(expected, sign)
                and expires.isdigit()
                and int(expires) > self.now_ms()
            )
        self.authed = ok
        reply: dict[str, Any] = {
            "success": ok,
            "ret_msg": "" if ok else "Invalid apikey or signature",
            "op": "auth",
            "conn_id": self.conn_id,
        }
        if req_id is not None and not ok:
            reply["req_id"] = req_id
        return reply
