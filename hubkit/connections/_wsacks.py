"""Which subscribe/unsubscribe requests wait for an ack, and what each ack settles.

Pure bookkeeping for ``WebSocketConnection`` (no I/O): a request registers a ``PendingAck``
under its ``req_id``; an ack resolves the request it names (by ``req_id``, else by the topics
it lists, else the oldest request of the same op, since some shapes carry neither); a lost
connection fails every waiting request at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hubkit.connections.wsproto import WsAck
from hubkit.errors import HubkitError, ProtocolError

__all__ = ["AckBook", "PendingAck", "Refusal", "merge_refusals", "refusals"]

logger = logging.getLogger("hubkit.connections")


@dataclass
class PendingAck:
    """One request on the wire: its op, its topics and the future its ack resolves."""

    op: str
    topics: list[str]
    future: asyncio.Future[WsAck]


@dataclass(frozen=True)
class Refusal:
    """Topics a server refused in one ack, and the error that says so."""

    topics: list[str]
    error: ProtocolError


class AckBook:
    """The requests waiting for an ack, keyed by ``req_id`` (ids count up from 1)."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingAck] = {}
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        """A fresh request id (pings use them too)."""
        return str(next(self._ids))

    def register(self, op: str, topics: list[str]) -> tuple[str, PendingAck]:
        """A new request on the running loop: its id and what waits for its ack."""
        req_id = self.next_id()
        pending = PendingAck(op, topics, asyncio.get_running_loop().create_future())
        self._pending[req_id] = pending
        return req_id, pending

    def forget(self, waits: Sequence[PendingAck]) -> None:
        """Stop waiting for ``waits`` (timed out or never sent)."""
        for req_id, pending in list(self._pending.items()):
            if pending in waits:
                del self._pending[req_id]

    def fail_all(self, error: HubkitError) -> None:
        """Fail every waiting request with ``error`` (the connection is gone)."""
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(error)
                # Mark the exception retrieved: nobody may be waiting on this future any more.
                item.future.exception()

    def on_ack(self, ack: WsAck) -> None:
        """Match an ack to its request: by req_id, else by the topics it names, else oldest."""
        key: str | None = None
        if ack.req_id is not None and ack.req_id in self._pending:
            key = ack.req_id
        elif ack.succeeded or ack.failed:
            named = set(ack.succeeded) | set(ack.failed)
            key = next(
                (k for k, pending in self._pending.items() if named & set(pending.topics)), None
            )
        if key is None and self._pending:
            same_op = [k for k, pending in self._pending.items() if pending.op == ack.op]
            key = same_op[0] if same_op else next(iter(self._pending))
        if key is None:
            logger.debug("ignoring an ack nobody waits for: %s", ack)
            return
        pending = self._pending.pop(key)
        if not pending.future.done():
            pending.future.set_result(ack)


def refusals(op: str, waits: Sequence[PendingAck], acks: Sequence[WsAck]) -> list[Refusal]:
    """What the acks of ``waits`` refused: the topics and an error naming them."""
    found: list[Refusal] = []
    for pending, ack in zip(waits, acks, strict=True):
        if ack.success and not ack.failed:
            continue
        refused = [topic for topic in ack.failed if topic in pending.topics] or list(
            ack.failed or pending.topics
        )
        reason = ack.message or "refused"
        error = ProtocolError(f"{op} refused for {', '.join(refused)}: {reason}", temporary=False)
        found.append(Refusal(refused, error))
    return found


def merge_refusals(failures: Sequence[ProtocolError]) -> ProtocolError:
    """One error for several refusals (or the one itself)."""
    if len(failures) == 1:
        return failures[0]
    return ProtocolError("; ".join(str(failure) for failure in failures), temporary=False)
