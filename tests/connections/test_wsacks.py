"""Which request an ack settles, decided without a socket."""

from __future__ import annotations

import pytest

from hubkit.connections._wsacks import AckBook, merge_refusals, refusals
from hubkit.connections.wsproto import WsAck
from hubkit.errors import ClosedError, ProtocolError


@pytest.mark.anyio
async def test_an_ack_settles_its_request_by_id_then_by_topic_then_by_op() -> None:
    book = AckBook()
    id_a, a = book.register("subscribe", ["t.A"])
    _, b = book.register("subscribe", ["t.B"])
    _, c = book.register("unsubscribe", ["t.C"])
    assert id_a == "1"
    book.on_ack(WsAck(True, id_a, "subscribe"))
    assert a.future.done() and not b.future.done()
    book.on_ack(WsAck(True, None, "subscribe", succeeded=("t.B",)))  # option acks: no req_id
    assert b.future.result().succeeded == ("t.B",)
    book.on_ack(WsAck(True, None, "unsubscribe"))  # neither: the oldest of the same op
    assert c.future.done()
    book.on_ack(WsAck(True, "99", "subscribe"))  # nobody waits: ignored


@pytest.mark.anyio
async def test_a_lost_connection_fails_every_waiting_request() -> None:
    book = AckBook()
    _, a = book.register("subscribe", ["t.A"])
    _, b = book.register("subscribe", ["t.B"])
    book.forget([b])
    book.fail_all(ClosedError("gone"))
    with pytest.raises(ClosedError):
        await a.future
    assert not b.future.done()  # forgotten before: nobody settles it
    book.on_ack(WsAck(True, None, "subscribe"))  # nothing left to match


@pytest.mark.anyio
async def test_refusals_name_the_refused_topics() -> None:
    book = AckBook()
    _, one = book.register("subscribe", ["t.A", "t.B"])
    _, two = book.register("subscribe", ["t.C"])
    acks = [
        WsAck(False, "1", "subscribe", "error:handler not found,topic:t.B", failed=("t.B",)),
        WsAck(True, "2", "subscribe"),
    ]
    found = refusals("subscribe", [one, two], acks)
    assert [r.topics for r in found] == [["t.B"]]
    assert "t.B" in str(found[0].error) and "handler not found" in str(found[0].error)
    whole = refusals("subscribe", [two], [WsAck(False, "2", "subscribe")])
    assert whole[0].topics == ["t.C"] and "refused" in str(whole[0].error)
    merged = merge_refusals([found[0].error, whole[0].error])
    assert isinstance(merged, ProtocolError) and "t.B" in str(merged) and "t.C" in str(merged)
    assert merge_refusals([found[0].error]) is found[0].error
