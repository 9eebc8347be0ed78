"""The queue between a WebSocket reader and ``messages()``, and how waiting frames coalesce.

The reader puts decoded-later frames (``RawFrame``), ``Reconnected`` events, a ``Failure``
(reconnecting gave up) or ``END`` (the stream was closed) into a bounded queue; ``coalesce``
is the consumer side: frames already waiting (up to ``batch``) become one ``Message`` per run
of one topic and kind, so a busy stream pays the per-frame decode overhead once per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from hubkit.connections.wsdecode import RawFrame, decode_run_events, runs
from hubkit.errors import DecodeError, HubkitError
from hubkit.types import StreamEvent

__all__ = ["END", "Channel", "Failure", "QueueItem", "coalesce"]


@dataclass(frozen=True, slots=True)
class Failure:
    """The reader gave up: ``messages()`` raises ``error``."""

    error: HubkitError


END = object()  # queue sentinel: the stream was closed

QueueItem = Any  # RawFrame | Reconnected | FrameLost | Failure | END


@dataclass
class Channel:
    """The queue between the reader and one run of ``messages()``; replaced after a close."""

    queue: asyncio.Queue[QueueItem]
    closed: bool = False


async def coalesce(
    channel: Channel, batch: int, report: Callable[[DecodeError, str | None], None]
) -> AsyncIterator[StreamEvent]:
    """The events of ``channel`` in order, waiting frames merged into ``Message``s by run.

    Ends at ``END`` (or a closed, drained channel); raises the error of a ``Failure``.
    Frames that do not decode go to ``report`` and are skipped whole; a ``FrameLost`` takes
    the place of each.
    """
    queue = channel.queue
    carry: QueueItem | None = None
    while True:
        if carry is not None:
            item, carry = carry, None
        else:
            if channel.closed and queue.empty():
                return
            item = await queue.get()
        if item is END:
            return
        if isinstance(item, Failure):
            raise item.error
        if not isinstance(item, RawFrame):
            yield item
            continue
        waiting = [item]
        while len(waiting) < batch:
            try:
                nxt = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if not isinstance(nxt, RawFrame):
                carry = nxt  # a Reconnected or the end: deliver it after these rows
                break
            waiting.append(nxt)
        for run in runs(waiting):
            for event in decode_run_events(run, report):
                yield event
