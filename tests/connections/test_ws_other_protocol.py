"""WebSocketConnection speaks whatever message protocol it is given: here a made-up API whose
requests, acks, pongs and data frames look nothing like ByBit's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from websockets.asyncio.server import ServerConnection, serve

from hubkit.connections import WebSocketConnection, WsAck, WsData, WsEvent, WsIgnored, WsPong
from hubkit.entity import reflect
from hubkit.errors import DecodeError, ProtocolError
from hubkit.types import Message


@dataclass
class Quote:
    code: str
    bid: float


class LineProtocol:
    """``{"action": "join", "channels": [...], "seq": n}`` -> ``{"joined": n, "ok": bool}``;
    data ``{"channel": c, "rows": [...]}``; ``{"beat": n}`` pings and ``{"beat_ok": n}`` pongs."""

    max_args = 2

    def subscribe(self, topics: Sequence[str], req_id: str) -> str:
        return json.dumps({"action": "join", "channels": list(topics), "seq": int(req_id)})

    def unsubscribe(self, topics: Sequence[str], req_id: str) -> str:
        return json.dumps({"action": "leave", "channels": list(topics), "seq": int(req_id)})

    def ping(self, req_id: str) -> str | None:
        return json.dumps({"beat": int(req_id)})

    def parse(self, raw: bytes | str) -> WsEvent:
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        if "channel" in frame:
            return WsData(frame["channel"], "snapshot", frame["rows"])
        if "joined" in frame or "left" in frame:
            seq = frame.get("joined", frame.get("left"))
            op = "subscribe" if "joined" in frame else "unsubscribe"
            return WsAck(bool(frame["ok"]), str(seq), op, frame.get("why", ""))
        if "beat_ok" in frame:
            return WsPong()
        return WsIgnored("unknown")

    def parse_lazy(self, raw: bytes | str) -> WsEvent:
        return self.parse(raw)


async def exchange(ws: ServerConnection) -> None:
    async for text in ws:
        request = json.loads(text)
        if "beat" in request:
            await ws.send(json.dumps({"beat_ok": request["beat"]}))
            continue
        channels = request["channels"]
        if request["action"] == "join":
            bad = [c for c in channels if not c.startswith("quotes.")]
            reply = {"joined": request["seq"], "ok": not bad, "why": f"no channel {bad}"}
            await ws.send(json.dumps(reply))
            for channel in channels if not bad else []:
                rows = [{"code": channel.split(".")[1], "bid": 1.5}]
                await ws.send(json.dumps({"channel": channel, "rows": rows}))
        else:
            await ws.send(json.dumps({"left": request["seq"], "ok": True}))


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serve(exchange, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@pytest.mark.anyio
async def test_a_made_up_protocol_subscribes_decodes_and_is_refused_by_its_own_rules(
    url: str,
) -> None:
    conn = WebSocketConnection(
        url,
        {"quotes": reflect(Quote, "code")},
        protocol=LineProtocol(),
        ping_interval=None,
        silence_timeout=None,
    )
    async with conn:
        stream = conn.messages()
        reader = asyncio.ensure_future(anext(stream))
        await conn.subscribe(["quotes.AAA", "quotes.BBB", "quotes.CCC"])  # two requests of 2, 1
        seen: list[Message] = []
        first = await asyncio.wait_for(reader, 5)
        assert isinstance(first, Message)
        seen.append(first)
        while sum(m.frame.height for m in seen) < 3:
            event = await asyncio.wait_for(anext(stream), 5)
            assert isinstance(event, Message)
            seen.append(event)
        codes = sorted(code for m in seen for code in m.frame["code"].to_list())
        assert codes == ["AAA", "BBB", "CCC"]
        with pytest.raises(ProtocolError, match=r"news\.X"):
            await conn.subscribe(["news.X"])
        assert conn.topics == ("quotes.AAA", "quotes.BBB", "quotes.CCC")
        await conn.unsubscribe(["quotes.AAA"])
        assert conn.topics == ("quotes.BBB", "quotes.CCC")
