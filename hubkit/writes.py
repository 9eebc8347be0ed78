"""Write results: what a ``sink.dao`` write returns, and how pushed or refused outbox entries
find their way back to it.

A write that queues outbox entries gets a ``WriteResult`` that settles when every entry was
pushed (or raises the refusal). The sink matches each settled entry to its write with a
``Tickets`` book kept per key (see its docstring for the rule that makes this exact).

Each outbox entry is pushed with an idempotency key (``idempotency_key``) that stays the same
for every try of that entry, in this process and after a restart, so a remote that remembers
the keys it applied can apply each write exactly once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.errors import BridgeError, WaitTimeout
from hubkit.types import OutboxEntry

if TYPE_CHECKING:
    from hubkit.bridge import Bridge

__all__ = [
    "Forward",
    "Tickets",
    "WriteResult",
    "idempotency_key",
    "key_text",
    "takes_idempotency_key",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key_text(key: Sequence[Any]) -> str:
    """A key as text that does not depend on how the outbox stored it (JSON or native)."""

    def one(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, bool | int | float) or value is None:
            return value
        return str(value)

    return json.dumps([one(v) for v in key], default=str)


def idempotency_key(sink: str, entry: OutboxEntry) -> str:
    """The idempotency key of one outbox entry: ``"<sink>:<id>:<created µs>"``.

    The same for every try of the entry, before and after a restart: the store never reuses an
    outbox id (SQLite ``AUTOINCREMENT``, a sequence elsewhere), and the creation time (µs
    since the epoch, as stored) keeps keys apart should a store be deleted and made anew, or
    two stores push under one sink name. Different entries never share a key, even when they
    carry the same row (two writes of equal values are two writes).
    """
    created = (entry.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{sink}:{entry.id}:{created}"


def takes_idempotency_key(verb: Callable[..., object]) -> bool:
    """Whether a connection verb (``create``/``update``/``remove``) accepts the keyword
    ``idempotency_key`` (by name, or through ``**kwargs``). Connections written before the
    keyword existed still work: they are called without it (pushes are then at least once)."""
    try:
        parameters = inspect.signature(verb).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins, C extensions)
        return False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if parameter.name == "idempotency_key" and parameter.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            return True
    return False


class WriteResult:
    """The outcome of one ``dao`` write: the rows written and, when the policy pushes local
    writes, an acknowledgement that resolves once the remote has them.

    ``frame`` holds the rows as stored (for a delete: the rows removed). ``pushes`` is how many
    outbox entries the write queued (0 when the sink does not push). Wait for the remote::

        sink.dao.upsert(rows).wait(timeout=10)      # blocking: returns once pushed
        await sink.dao.upsert(rows)                 # a WriteResult is awaitable too
        await (await sink.dao.aupsert(rows))        # async twin, then its acknowledgement

    ``wait``/``await`` return None once every entry was pushed and raise the error that
    stopped it otherwise: ``Rejected`` (the remote refused the write; it was rolled back
    locally), ``ClosedError`` (the sink closed first; the write stays in the outbox and is
    pushed after the sink is opened again), or ``WaitTimeout`` (``wait`` only: not settled
    within ``timeout``; also a ``TimeoutError``). A write that queued nothing is settled at once.
    """

    def __init__(self, frame: pl.DataFrame, pushes: int, bridge: Bridge | None) -> None:
        self.frame = frame
        self.pushes = pushes
        self._bridge = bridge
        self._future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._remaining = pushes
        self._lock = threading.Lock()
        if pushes == 0:
            self._future.set_result(None)

    def __repr__(self) -> str:
        state = "pushed" if self.pushed else ("failed" if self.done() else "pending")
        return f"<WriteResult rows={self.frame.height} pushes={self.pushes} {state}>"

    def done(self) -> bool:
        """True once the write is settled (pushed, rejected, or abandoned by a close)."""
        return self._future.done()

    @property
    def pushed(self) -> bool:
        """True once every entry of the write reached the remote (or there was none)."""
        return self._future.done() and self._future.exception() is None

    def exception(self) -> BaseException | None:
        """The error that settled the write, None if pushed or still pending."""
        return self._future.exception() if self._future.done() else None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the write is pushed (see the class docstring for what it raises).

        Calling it on hubkit's loop thread before the write is settled raises ``BridgeError``
        (it would wait on itself); await the result there instead."""
        if not self._future.done() and self._bridge is not None and self._bridge.in_loop_thread():
            raise BridgeError("WriteResult.wait() on hubkit's loop thread; use `await` there")
        try:
            self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise WaitTimeout(f"write not acknowledged within {timeout} s") from None

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> None:
        if not self._future.done():
            loop = asyncio.get_running_loop()
            settled = loop.create_future()

            def wake() -> None:
                if not settled.done():
                    settled.set_result(None)

            def relay(_: concurrent.futures.Future[None]) -> None:
                with contextlib.suppress(RuntimeError):  # the waiting loop is gone
                    loop.call_soon_threadsafe(wake)

            self._future.add_done_callback(relay)
            await settled
        self._future.result(0)

    # Settled by the sink: one call per outbox entry of the write.
    def _entry_settled(self, error: BaseException | None) -> None:
        with self._lock:
            if self._future.done():
                return
            if error is not None:
                self._future.set_exception(error)
                return
            self._remaining -= 1
            if self._remaining <= 0:
                self._future.set_result(None)

    def _abandon(self, error: BaseException) -> None:
        with self._lock:
            if not self._future.done():
                self._future.set_exception(error)


class Forward:
    """Stands for superseded outbox entries: settling it settles each of theirs."""

    def __init__(self, tickets: Sequence[WriteResult | Forward]) -> None:
        self.tickets = list(tickets)

    def _entry_settled(self, error: BaseException | None) -> None:
        for ticket in self.tickets:
            ticket._entry_settled(error)

    def _abandon(self, error: BaseException) -> None:
        for ticket in self.tickets:
            ticket._abandon(error)


Ticket = WriteResult | Forward


class Tickets:
    """Matches settled outbox entries back to the ``WriteResult`` of the write that made them.

    Why FIFO per key is exact: entries of one key are pushed, rejected or superseded in the
    order they were written; the store never reuses an outbox id; and while the sink is open
    it is the only writer of its outbox, so the entries with ids above ``watermark`` (the
    highest id pending when the sink opened) are exactly the ones this sink wrote, in ticket
    order. Entries at or below the watermark come from an earlier session and have no
    ticket. (Two sinks pushing one table under one name at the same time break the last
    assumption, and would push each entry twice anyway.)
    """

    def __init__(self, watermark: int) -> None:
        self.watermark = watermark
        self._lock = threading.Lock()
        self._by_key: dict[str, deque[Ticket]] = {}

    def add(self, key: Sequence[Any], ticket: Ticket) -> None:
        with self._lock:
            self._by_key.setdefault(key_text(key), deque()).append(ticket)

    def settle(self, entry: OutboxEntry, error: BaseException | None) -> None:
        ticket = self.pop(entry)
        if ticket is not None:
            ticket._entry_settled(error)

    def pop(self, entry: OutboxEntry) -> Ticket | None:
        if entry.id <= self.watermark:
            return None
        with self._lock:
            text = key_text(entry.key)
            queue = self._by_key.get(text)
            if not queue:
                return None
            ticket = queue.popleft()
            if not queue:
                del self._by_key[text]
            return ticket

    def abandon_all(self, error: BaseException) -> None:
        with self._lock:
            queues, self._by_key = self._by_key, {}
        for queue in queues.values():
            for ticket in queue:
                ticket._abandon(error)
