"""Stream bookkeeping decisions, free of I/O: what is a duplicate, where a stream stood, and
what to do with a backfill after a reconnect.

A WebSocket stream loses whatever was sent while it was down. After a reconnect the
``WebSocketSubscription`` policy fetches recent rows over REST (the *backfill*) and asks
``plan_gap_fill`` which of them to apply and whether the backfill proves that nothing is
missing. Everything here is a pure function of its arguments (``RecentRows`` is the one
stateful helper, and it only remembers what it was shown), so the rules are tested without
sockets::

    recent = RecentRows(key=("trade_id",), maxlen=100_000)
    fresh = recent.fresh(frame)              # rows whose key/content was not seen lately

    plan = plan_gap_fill(backfill, key=("trade_id",), time_column="time",
                         position=position, down_since=down_since, now=now)
    plan.rows                                # backfill rows at or after the last seen one
    plan.gap                                 # a Gap when the backfill cannot prove continuity

Rules (a backfill *proves continuity* when it reaches back to where the stream stood):

- the last seen row's key is in the backfill -> continuous;
- the backfill's oldest row is at or before the last seen time (or, if nothing was seen,
  before the stream went down) -> continuous;
- the caller says the backfill is complete (it returns every row since the given time) ->
  continuous;
- otherwise rows between the last seen time and the backfill's oldest newer row may be
  missing -> ``Gap(start=last seen time or down_since, end=that row's time or now)``.
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from hubkit.types import Gap

__all__ = [
    "ALL",
    "GapFill",
    "GapPlan",
    "RecentRows",
    "StreamPosition",
    "partition_positions",
    "plan_gap_fill",
    "plan_partitioned_gap_fill",
    "positions_from_cursor",
    "positions_to_cursor",
    "split_partitions",
    "stream_position",
]


def _key_tuples(frame: pl.DataFrame, key: Sequence[str]) -> list[tuple[Any, ...]]:
    columns = [frame.get_column(k).to_list() for k in key]
    return list(zip(*columns, strict=True))


class RecentRows:
    """Remembers the last ``maxlen`` keys seen on a stream with a hash of each row's content.

    ``fresh(frame)`` returns the rows that are new: a key not seen lately, or a key seen with
    different content (a ticker that changed). A row equal to the last one seen for its key
    is a duplicate and is dropped. Within one frame the last row per key wins. The memory is
    bounded: the least recently seen keys are forgotten first.
    """

    def __init__(self, key: Sequence[str], maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.key = tuple(key)
        self.maxlen = maxlen
        self._seen: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self._proposal: tuple[pl.DataFrame, list[tuple[tuple[Any, ...], int]]] | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def fresh(self, frame: pl.DataFrame, *, remember: bool = True) -> pl.DataFrame:
        """The rows of ``frame`` not seen lately (see the class docstring).

        With ``remember`` (the default) they are recorded as seen; pass False when the rows
        are yet to be stored and call ``remember`` with the returned frame once they are, so
        a failed store does not make them look like duplicates later."""
        if frame.height == 0:
            return frame
        # One vectorised hash per row, then plain Python over the keys: for the small frames
        # of a stream this is several times faster than frame operations, each of which has
        # a fixed cost, and than building Python row tuples (datetimes are costly to box).
        digests = frame.hash_rows().to_list()
        keys = _key_tuples(frame, self.key)
        seen = self._seen
        if len(set(keys)) == len(keys) and seen.keys().isdisjoint(keys):
            # The common case of a trade stream, checked in C: every row is new.
            fresh = list(zip(keys, digests, strict=True))
            if remember:
                self._record(fresh, new=True)
            else:
                self._proposal = (frame, fresh)
            return frame
        last = {k: i for i, k in enumerate(keys)}  # within one frame the last row wins
        keep: list[bool] = []
        proposal: list[tuple[tuple[Any, ...], int]] = []
        for index, (digest, key) in enumerate(zip(digests, keys, strict=True)):
            if last[key] != index:
                keep.append(False)
                continue
            if seen.get(key) == digest:
                seen.move_to_end(key)
                keep.append(False)
                continue
            keep.append(True)
            proposal.append((key, digest))
        result = frame if all(keep) else frame.filter(pl.Series(keep, dtype=pl.Boolean))
        if remember:
            self._record(proposal)
        else:
            self._proposal = (result, proposal)
        return result

    def remember(self, frame: pl.DataFrame) -> None:
        """Record the rows of ``frame`` as seen (the last row per key wins)."""
        pending = self._proposal
        self._proposal = None
        if pending is not None and pending[0] is frame:
            self._record(pending[1])  # just returned by fresh(remember=False): reuse its work
            return
        if frame.height == 0:
            return
        digests = frame.hash_rows().to_list()
        self._record(list(zip(_key_tuples(frame, self.key), digests, strict=True)))

    def _record(self, items: Sequence[tuple[tuple[Any, ...], int]], *, new: bool = False) -> None:
        seen = self._seen
        if new:  # keys not in ``seen``: they go to the end, the most recent place, as they are
            seen.update(items)
        else:
            for key, digest in items:
                seen[key] = digest
                seen.move_to_end(key)
        self._trim()

    def _trim(self) -> None:
        seen = self._seen
        excess = len(seen) - self.maxlen
        if excess > 0:
            # forget the least recently seen keys (a C-level loop over popitem)
            deque(map(seen.popitem, itertools.repeat(False, excess)), maxlen=0)


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stood: the key and time of the newest row applied from it.

    ``to_cursor``/``from_cursor`` turn it into the text kept as the sink's sync cursor, so a
    restarted sink knows where to backfill from. Key values that JSON cannot hold are kept
    as text; compare keys with ``same_key``.
    """

    key: tuple[Any, ...] | None = None
    time: datetime | None = None

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "key": None if self.key is None else list(self.key),
                "time": None if self.time is None else self.time.isoformat(),
            },
            default=str,
            separators=(",", ":"),
        )

    @classmethod
    def from_cursor(cls, text: str | None) -> StreamPosition | None:
        """Parse a cursor written by ``to_cursor``; None (not an error) for anything else."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not ({"key", "time"} <= data.keys()):
            return None
        key = data["key"]
        raw_time = data["time"]
        try:
            moment = None if raw_time is None else _utc(datetime.fromisoformat(raw_time))
        except (TypeError, ValueError):
            return None
        return cls(key=None if key is None else tuple(key), time=moment)

    def same_key(self, other: Sequence[Any]) -> bool:
        """True if ``other`` is this position's key (compared as text, as a cursor keeps it)."""
        if self.key is None or len(other) != len(self.key):
            return False
        return all(_text(a) == _text(b) for a, b in zip(self.key, other, strict=True))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stream_position(
    frame: pl.DataFrame, *, key: Sequence[str], time_column: str | None
) -> StreamPosition | None:
    """The position after applying ``frame``: its newest row by ``time_column`` (the last row
    when there is no time column or the times tie). None for an empty frame."""
    return partition_positions(frame, key=key, time_column=time_column, partition=None).get(ALL)


@dataclass(frozen=True)
class GapFill:
    """What to do with a backfill: the rows to apply (oldest first) and the gap, if any."""

    rows: pl.DataFrame
    gap: Gap | None
    covered: bool  # True when the backfill proves nothing between the stream's rows is missing


def plan_gap_fill(
    backfill: pl.DataFrame,
    *,
    key: Sequence[str],
    time_column: str | None,
    position: StreamPosition | None,
    down_since: datetime,
    now: datetime,
    complete: bool = False,
) -> GapFill:
    """Decide what a backfill fills after a stream outage (rules in the module docstring).

    ``backfill`` holds rows fetched after the reconnect; ``position`` is where the stream stood
    before it went down (None if no row was ever seen); ``down_since`` when it went down;
    ``complete`` that the backfill holds every row since the requested time. Rows older than
    the last seen time are dropped (they were applied before, or predate the stream); rows are
    not deduplicated here (see ``RecentRows``).
    """
    since = position.time if position is not None and position.time is not None else down_since
    since = _utc(since)
    rows = backfill
    oldest_newer: datetime | None = None
    covered = complete
    if time_column is not None and backfill.height:
        times = backfill.get_column(time_column)
        oldest = times.min()
        if isinstance(oldest, datetime) and _utc(oldest) <= since:
            covered = True
        rows = backfill.filter(pl.col(time_column) >= since).sort(
            time_column, maintain_order=True, nulls_last=True
        )
        newer = rows.get_column(time_column).filter(rows.get_column(time_column) > since)
        candidate = newer.min() if newer.len() else None
        if isinstance(candidate, datetime):
            oldest_newer = _utc(candidate)
    if not covered and position is not None and position.key is not None and backfill.height:
        for candidate_key in backfill.select(list(key)).iter_rows():
            if position.same_key(candidate_key):
                covered = True
                break
    if covered:
        return GapFill(rows=rows, gap=None, covered=True)
    end = oldest_newer if oldest_newer is not None else _utc(now)
    if end < since:
        end = since
    if backfill.height:
        reason = (
            "the backfill does not reach back to the last row seen before the stream went "
            "down; rows in between may be missing"
        )
    else:
        reason = "the backfill returned no rows; rows sent while the stream was down may be missing"
    return GapFill(rows=rows, gap=Gap(start=since, end=end, reason=reason), covered=False)


# -- streams made of independent partitions (e.g. one trade stream per symbol) ---------------

ALL = ""  # the partition name used when a stream is not partitioned


def positions_to_cursor(positions: Mapping[str, StreamPosition]) -> str:
    """The sink cursor text for per-partition positions (see ``positions_from_cursor``)."""
    return json.dumps(
        {"partitions": {name: json.loads(p.to_cursor()) for name, p in positions.items()}},
        separators=(",", ":"),
    )


def positions_from_cursor(text: str | None) -> dict[str, StreamPosition]:
    """Per-partition positions from a cursor written by ``positions_to_cursor`` (or by
    ``StreamPosition.to_cursor``, read as the one partition ``ALL``); {} for anything else."""
    if not text:
        return {}
    single = StreamPosition.from_cursor(text)
    if single is not None:
        return {ALL: single}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    parts = data.get("partitions") if isinstance(data, dict) else None
    if not isinstance(parts, dict):
        return {}
    found: dict[str, StreamPosition] = {}
    for name, value in parts.items():
        position = StreamPosition.from_cursor(json.dumps(value))
        if position is not None:
            found[str(name)] = position
    return found


def split_partitions(frame: pl.DataFrame, partition: str | None) -> dict[str, pl.DataFrame]:
    """``frame`` split by the text of its ``partition`` column, in order of appearance
    (everything under ``ALL`` when ``partition`` is None)."""
    if partition is None:
        return {ALL: frame}
    if frame.height == 0:
        return {}
    values = frame.get_column(partition)
    return {
        _partition_name(value): frame.filter(values == value)
        for value in values.unique(maintain_order=True).to_list()
    }


def _partition_name(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def partition_positions(
    frame: pl.DataFrame, *, key: Sequence[str], time_column: str | None, partition: str | None
) -> dict[str, StreamPosition]:
    """The newest position of each partition present in ``frame`` (see ``stream_position``;
    everything is the one partition ``ALL`` when ``partition`` is None)."""
    if frame.height == 0:
        return {}
    n = frame.height
    parts = frame.get_column(partition).to_list() if partition is not None else [ALL] * n
    # compare times as their integer representation; box only the chosen ones
    time_series = frame.get_column(time_column) if time_column is not None else None
    times: list[Any] = (
        time_series.to_physical().to_list() if time_series is not None else [None] * n
    )
    newest: dict[Any, int] = {}
    for index in range(n):
        part, moment = parts[index], times[index]
        best = newest.get(part)
        # later rows win ties (stream order); a row with a time beats one without
        if (
            best is None
            or (moment is not None and (times[best] is None or moment >= times[best]))
            or (moment is None and times[best] is None)
        ):
            newest[part] = index
    key_columns = [frame.get_column(k) for k in key]
    found: dict[str, StreamPosition] = {}
    for part, index in newest.items():
        moment = time_series[index] if time_series is not None else None
        found[_partition_name(part) if partition is not None else ALL] = StreamPosition(
            key=tuple(column[index] for column in key_columns),
            time=_utc(moment) if isinstance(moment, datetime) else None,
        )
    return found


@dataclass(frozen=True)
class GapPlan:
    """``plan_partitioned_gap_fill``'s answer: rows to apply and one gap per unfilled part."""

    rows: pl.DataFrame
    gaps: tuple[Gap, ...]


def plan_partitioned_gap_fill(
    backfill: pl.DataFrame,
    *,
    key: Sequence[str],
    time_column: str | None,
    partition: str | None,
    positions: Mapping[str, StreamPosition],
    down_since: datetime,
    now: datetime,
    complete: bool = False,
) -> GapPlan:
    """``plan_gap_fill`` for each partition (e.g. each symbol of a trade stream).

    Partitions are the values of the ``partition`` column; each is judged against its own
    last seen position. A partition seen before but absent from the backfill is a gap unless
    ``complete``. Gap reasons name the partition. Without ``partition`` this is
    ``plan_gap_fill`` with the position under ``ALL``.
    """
    groups = split_partitions(backfill, partition)
    names = list(dict.fromkeys([*positions, *groups]))
    rows: list[pl.DataFrame] = []
    gaps: list[Gap] = []
    for name in names:
        part = groups.get(name, backfill.clear())
        plan = plan_gap_fill(
            part,
            key=key,
            time_column=time_column,
            position=positions.get(name),
            down_since=down_since,
            now=now,
            complete=complete,
        )
        if plan.rows.height:
            rows.append(plan.rows)
        if plan.gap is not None:
            gap = plan.gap
            if partition is not None:
                gap = Gap(start=gap.start, end=gap.end, reason=f"{partition}={name}: {gap.reason}")
            gaps.append(gap)
    merged = pl.concat(rows, how="vertical") if rows else backfill.clear()
    return GapPlan(rows=merged, gaps=tuple(gaps))
