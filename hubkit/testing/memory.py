"""``InMemoryConnection``: a remote that lives in a dict, for testing sinks without a network.

It is a ``Connection`` and a ``StreamingConnection``: it holds the remote's rows by key,
answers ``fetch``, records every ``create``/``update``/``remove``, can be told to fail, and
delivers stream messages that a test pushes::

    conn = InMemoryConnection(key="symbol", rows=[{"symbol": "BTCUSDT", "status": "Trading"}])
    with hubkit.open_sink(Instrument, "symbol", store=path, connection=conn,
                          policy=hubkit.PushAfterWrite()) as sink:
        conn.fail_next(2)                       # the next two calls fail with TransportError
        conn.fail_next(1, applied=True)         # the next call takes effect, its answer is lost
        conn.reject_key("ETHUSDT", "closed")    # writes to this key fail with Rejected
        conn.push_stream("trades", rows)        # delivered to a subscribed messages() reader
        conn.push_stream("trades", rows, deliver=False)   # stored remotely, lost in transit
        conn.drop()                             # undelivered messages are lost; the stream's
                                                # next event is Reconnected(down_since=...)

Writes given an ``idempotency_key`` (a sink always gives one) are applied once per key: a
repeated key is answered with the first answer and changes nothing (counted in ``replays``),
as a remote that honours idempotency keys does.

Rows are plain dicts keyed by column name. ``fetch(spec, params)`` filters with ``params``:
``{"col": v}`` equality, ``{"col>=": v}`` (also ``>``, ``<=``, ``<``) comparisons (a number
compared with a datetime column is ms since the epoch, as REST APIs send it), and
``{"limit": n}`` for the newest ``n`` rows in the order they were written (like a
"recent trades" endpoint). Methods are safe to call from any thread; the async ones run on the
loop that called ``connect``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.errors import ProtocolError, Rejected, TransportError
from hubkit.types import Message, Reconnected, StreamEvent

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["InMemoryConnection"]

_OPS = ("fetch", "create", "update", "remove", "subscribe")
_PUSH_OPS = ("create", "update", "remove")


class _End:
    """Marks the end of one ``messages()`` iteration (the connection was disconnected)."""


ErrorFactory = Callable[[], BaseException]


class InMemoryConnection:
    """A remote held in memory: rows by key, call records, injected faults, a stream.

    ``key`` names the key column(s); it may be omitted and is then learnt from the first
    ``EntitySpec`` passed in (rows given before that are keyed then). ``echo`` makes
    ``create``/``update`` return the stored row, as many REST APIs do.

    Inspect: ``rows`` (key -> row dict), ``frame()``, ``calls`` (``(op, key)`` in order),
    ``count(op)``, ``pushes(key)``, ``replays``, ``subscriptions``, ``connects``,
    ``disconnects``.
    """

    def __init__(
        self,
        rows: Iterable[Mapping[str, Any]] | pl.DataFrame | None = None,
        *,
        key: str | Sequence[str] | None = None,
        echo: bool = True,
    ) -> None:
        self.echo = echo
        self._key: tuple[str, ...] | None = (key,) if isinstance(key, str) else _opt_tuple(key)
        self._lock = threading.Lock()
        self._rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._unkeyed: list[dict[str, Any]] = []
        self._calls: list[tuple[str, tuple[Any, ...] | None]] = []
        self._counts: Counter[str] = Counter()
        self._failures: deque[tuple[frozenset[str], ErrorFactory, bool]] = deque()
        self._answers: dict[str, dict[str, Any] | None] = {}  # idempotency key -> first answer
        self._replays = 0
        self._connect_failures = 0
        self._rejected: dict[tuple[Any, ...], str] = {}
        self._topics: set[str] = set()
        self._connected = False
        self.connects = 0
        self.disconnects = 0
        self._drops = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: deque[StreamEvent | _End] = deque()
        self._wakeup: asyncio.Event | None = None
        if rows is not None:
            self.put(rows)

    # -- inspecting and shaping the remote -----------------------------------------------------

    @property
    def rows(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """A copy of the remote rows by key tuple."""
        with self._lock:
            return {k: dict(v) for k, v in self._rows.items()}

    def frame(self, spec: EntitySpec | None = None) -> pl.DataFrame:
        """The remote rows as a frame (in the entity's schema when ``spec`` is given)."""
        with self._lock:
            items = [dict(v) for v in self._rows.values()]
        if spec is not None:
            return spec.to_frame(items)
        return pl.DataFrame(items)

    @property
    def calls(self) -> list[tuple[str, tuple[Any, ...] | None]]:
        """Every successful create/update/remove, as ``(op, key)`` in order."""
        with self._lock:
            return list(self._calls)

    def count(self, op: str) -> int:
        """How many times ``op`` ("fetch", "create", "update", "remove", "subscribe") was called,
        including calls that failed."""
        with self._lock:
            return self._counts[op]

    def pushes(self, key: Any) -> int:
        """How many create/update/remove calls for ``key`` took effect (a repeated
        idempotency key does not count again)."""
        wanted = _as_key(key)
        with self._lock:
            return sum(1 for op, k in self._calls if op in _PUSH_OPS and k == wanted)

    @property
    def replays(self) -> int:
        """Writes that repeated an idempotency key already applied (answered, not applied)."""
        with self._lock:
            return self._replays

    @property
    def subscriptions(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._topics)

    def put(self, rows: Iterable[Mapping[str, Any]] | pl.DataFrame) -> None:
        """Insert or replace rows on the remote side (what another client would do)."""
        items = rows.to_dicts() if isinstance(rows, pl.DataFrame) else [dict(r) for r in rows]
        with self._lock:
            if self._key is None:
                self._unkeyed.extend(items)
                return
            for item in items:
                k = tuple(item[c] for c in self._key)
                self._rows.pop(k, None)  # re-insert: newest last, for "limit"
                self._rows[k] = item

    def delete(self, key: Any) -> None:
        """Remove a row on the remote side."""
        with self._lock:
            self._rows.pop(_as_key(key), None)

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(
        self,
        times: int = 1,
        *,
        ops: Sequence[str] = _OPS,
        error: ErrorFactory | None = None,
        applied: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``ops`` raise ``error()`` (default: a temporary
        ``TransportError``). ``applied=True``: a write takes effect first and only its answer
        is lost (the caller cannot tell whether it was applied)."""
        factory: ErrorFactory = error or (lambda: TransportError("injected transport failure"))
        unknown = set(ops) - set(_OPS)
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)}; choose from {_OPS}")
        with self._lock:
            for _ in range(times):
                self._failures.append((frozenset(ops), factory, applied))

    def fail_connect(self, times: int = 1) -> None:
        """Make the next ``times`` ``connect()`` calls raise ``TransportError``."""
        with self._lock:
            self._connect_failures += times

    def reject_key(self, key: Any, reason: str = "rejected by the remote") -> None:
        """Make every create/update/remove for ``key`` raise ``Rejected(reason)``."""
        with self._lock:
            self._rejected[_as_key(key)] = reason

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._rejected.clear()
            self._connect_failures = 0

    # -- Connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        with self._lock:
            if self._connect_failures:
                self._connect_failures -= 1
                raise TransportError("injected connect failure")
            loop = asyncio.get_running_loop()
            if self._loop is not loop:
                self._loop = loop
                self._wakeup = asyncio.Event()
            self._connected = True
            self.connects += 1
            # an end-of-stream marker nobody read belongs to the previous connection
            self._events = deque(e for e in self._events if not isinstance(e, _End))

    async def disconnect(self) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self._topics.clear()
            if was:
                self.disconnects += 1
                self._events.clear()
                self._events.append(_End())
        self._notify()

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        self._begin("fetch", None, spec)
        with self._lock:
            items = [dict(v) for v in self._rows.values()]
        limit: int | None = None
        for name, value in (params or {}).items():
            if name == "limit":
                limit = int(value)
                continue
            items = [row for row in items if _matches(row, name, value)]
        if limit is not None:
            items = items[-limit:] if limit else []
        return spec.to_frame(items)

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        return self._write("create", spec, row, idempotency_key)

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        return self._write("update", spec, row, idempotency_key)

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        self._write("remove", spec, key, idempotency_key)

    # -- StreamingConnection -------------------------------------------------------------------

    async def subscribe(self, topics: Sequence[str]) -> None:
        self._begin("subscribe", None, None)
        with self._lock:
            self._topics.update(topics)

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        with self._lock:
            self._topics.difference_update(topics)

    async def messages(self) -> AsyncIterator[StreamEvent]:
        """Yield stream events until the connection is disconnected (then the iteration ends).

        One reader at a time. Messages pushed while nobody reads are queued."""
        if self._wakeup is None:
            raise TransportError("not connected")
        wakeup = self._wakeup
        while True:
            wakeup.clear()
            with self._lock:
                event = self._events.popleft() if self._events else None
            if event is None:
                await wakeup.wait()
                continue
            if isinstance(event, _End):
                return
            yield event

    def push_stream(
        self,
        topic: str,
        rows: Iterable[Mapping[str, Any]] | pl.DataFrame,
        *,
        deliver: bool = True,
        kind: str = "snapshot",
    ) -> None:
        """Publish rows on ``topic``: they are stored remotely (so a backfill can fetch them) and,
        if ``deliver`` and the topic is subscribed on a connected stream, queued as a
        ``Message``. ``deliver=False`` simulates rows lost in transit."""
        frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame([dict(r) for r in rows])
        self.put(frame)
        with self._lock:
            if not (deliver and self._connected and topic in self._topics):
                return
            self._events.append(
                Message(topic=topic, frame=frame, kind=kind, received_at=time.monotonic())
            )
        self._notify()

    def drop(self) -> None:
        """Simulate a dropped stream that reconnected by itself: messages not yet read are
        lost and the next event is ``Reconnected(down_since=now)``."""
        with self._lock:
            self._drops += 1
            self._events.clear()
            self._events.append(Reconnected(attempt=self._drops, down_since=datetime.now(UTC)))
        self._notify()

    # -- internals -----------------------------------------------------------------------------

    def _notify(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wakeup.set()
        else:
            loop.call_soon_threadsafe(wakeup.set)

    def _learn_key(self, spec: EntitySpec | None) -> None:
        if spec is None or self._key is not None:
            return
        pending: list[dict[str, Any]] = []
        with self._lock:
            if self._key is None:
                self._key = tuple(spec.key)
                pending, self._unkeyed = self._unkeyed, []
        if pending:
            self.put(pending)

    def _begin(
        self, op: str, key: tuple[Any, ...] | None, spec: EntitySpec | None
    ) -> ErrorFactory | None:
        """Count the call and apply the faults; returns the error to raise after applying a
        write (``fail_next(applied=True)``), if any."""
        self._learn_key(spec)
        with self._lock:
            self._counts[op] += 1
            if not self._connected:
                raise TransportError(f"{op}: not connected")
            for index, (ops, factory, applied) in enumerate(self._failures):
                if op in ops:
                    del self._failures[index]
                    if applied and op in _PUSH_OPS:
                        return factory
                    raise factory()
            if key is not None and key in self._rejected:
                raise Rejected(f"{op} {key!r}: {self._rejected[key]}", status=400)
        return None

    def _write(
        self, op: str, spec: EntitySpec, row: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any] | None:
        k = tuple(row[c] for c in spec.key)
        lost_answer = self._begin(op, k, spec)
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._answers:
                self._replays += 1
                answer = self._answers[idempotency_key]
            else:
                if op == "remove":
                    self._rows.pop(k, None)
                    answer = None
                else:
                    stored = dict(row)
                    self._rows.pop(k, None)
                    self._rows[k] = stored
                    answer = dict(stored) if self.echo else None
                self._calls.append((op, k))
                if idempotency_key is not None:
                    self._answers[idempotency_key] = answer
        if lost_answer is not None:
            raise lost_answer()
        return None if answer is None else dict(answer)


def _opt_tuple(key: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if key is None else tuple(key)


def _as_key(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def _matches(row: Mapping[str, Any], name: str, value: Any) -> bool:
    for suffix in (">=", "<=", ">", "<"):
        if name.endswith(suffix):
            column = name[: -len(suffix)]
            have = row.get(column)
            if have is None:
                return False
            if isinstance(have, datetime) and isinstance(value, int | float):
                value = datetime.fromtimestamp(value / 1000, UTC)  # ms since the epoch
            if suffix == ">=":
                return bool(have >= value)
            if suffix == "<=":
                return bool(have <= value)
            if suffix == ">":
                return bool(have > value)
            return bool(have < value)
    if name not in row:
        raise ProtocolError(f"unknown fetch parameter {name!r}", status=400, temporary=False)
    return bool(row[name] == value)
