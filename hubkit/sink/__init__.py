"""The sink: one entity kept in sync between a remote, a SQL store and a Polars cache.

::

    with hubkit.open_sink(Instrument, key="symbol", store="data.db",
                          connection=conn, policy=hubkit.PeriodicSync(interval=60)) as sink:
        sink.dao.upsert([Instrument("BTCUSDT", "Trading", 0.1)]).wait(5)
        df = sink.frame()                 # the cached window: the newest 100,000 rows
        everything = sink.frame(full=True)  # the whole table, however big
        with sink.subscribe(print):
            sink.force_sync()

    async with await hubkit.aopen_sink(Instrument, "symbol", store="data.db") as sink:
        await sink.dao.aupsert(rows)

``open_sink`` returns only a fully initialised sink (entity reflected, table created, cache
warmed from the store, connection connected, policy running) or raises, having closed
whatever it had opened. ``close()`` stops the policy, pushes what it can of the outbox, and
disconnects; every later use raises ``ClosedError``.

Where things run (hubkit owns one event loop in one thread, see ``hubkit.bridge``):

- ``sink.dao`` blocking calls do their store I/O in the calling thread; the ``a``-twins do
  it in a worker thread. Neither touches the event loop thread.
- the policy runs as a task on hubkit's loop; everything it stores goes through its
  ``SinkContext`` (``hubkit.sink.context``), whose store work runs in worker threads.
- change handlers and the error handler are called on hubkit's loop thread, one at a time,
  in the order the changes were committed. Keep them quick; a handler may return an
  awaitable, which is run as a task on that loop. Use the ``a``-twins from a handler: a
  blocking sink call made on hubkit's loop thread raises ``BridgeError``.

Every change is one ``ChangeSet`` committed in one store transaction; the cache update after
it and the queueing of its change events happen under the same lock (``_core.Core.commit``),
so the store, the cache and the event order always agree.

The package by job: ``sink`` (what a user holds), ``dao`` (local reads and writes),
``context`` (what a policy talks to), ``outbox`` (outbox decisions, free of I/O), ``events``
(subscriptions and ordered dispatch), ``runner`` (start, syncs, reconnect, shutdown),
``open`` (``open_sink``/``aopen_sink``), ``warm`` (filling the cache with its window),
``_core`` (shared state and the one write path).
"""

from __future__ import annotations

from hubkit.sink.dao import SinkDao
from hubkit.sink.events import Subscription
from hubkit.sink.open import DEFAULT_CACHE, FIRST_SYNC_TIMEOUT, SinkOpening, aopen_sink, open_sink
from hubkit.sink.sink import Sink
from hubkit.writes import WriteResult

__all__ = [
    "DEFAULT_CACHE",
    "FIRST_SYNC_TIMEOUT",
    "Sink",
    "SinkDao",
    "SinkOpening",
    "Subscription",
    "WriteResult",
    "aopen_sink",
    "open_sink",
]
