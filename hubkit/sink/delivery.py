"""How changes waiting for a busy async change handler are merged, free of I/O.

``append_change(waiting, change)`` adds ``change`` to the changes waiting for a handler
whose previous call still runs. When it continues the last waiting change (same source and
op, an UPSERT or a DELETE, same reason, no gap, same columns) the two become one change
whose frame holds both frames' rows in order; otherwise it waits as its own change. So the
waiting list grows only when the kind of change alternates, and the handler's next call
gets everything that arrived meanwhile.
"""

from __future__ import annotations

import polars as pl

from hubkit.types import Change, Op

__all__ = ["append_change", "mergeable"]


def mergeable(first: Change, then: Change) -> bool:
    """True when ``then`` can be delivered in one change with ``first``."""
    return (
        first.op is then.op
        and first.op in (Op.UPSERT, Op.DELETE)
        and first.source is then.source
        and first.reason == then.reason
        and first.gap is None
        and then.gap is None
        and first.frame.schema == then.frame.schema
    )


def append_change(waiting: list[Change], change: Change) -> None:
    """Add ``change`` to ``waiting``, merged into the last waiting change when it can be."""
    if waiting and mergeable(waiting[-1], change):
        last = waiting[-1]
        frame = pl.concat([last.frame, change.frame], how="vertical", rechunk=False)
        waiting[-1] = Change(
            frame=frame, source=last.source, op=last.op, reason=last.reason, gap=last.gap
        )
        return
    waiting.append(change)
