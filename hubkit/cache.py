"""``FrameCache``: the in-memory Polars table of a sink, upserted by key in time ~ the batch.

How to use it (a sink does this; tests and notebooks may too)::

    cache = FrameCache(ttl=timedelta(minutes=5), max_rows=1_000_000)
    cache.bind(("symbol",), schema)          # once: key columns and the frame schema
    cache.bind(("id",), schema, time_column="time")   # ... with a column that orders the window
    cache.load(store_frame)                  # warm-up / refresh: replaces everything
    cache.put(batch)                         # upsert rows by key
    cache.remove(keys_frame)                 # delete rows by key
    df = cache.frame()                       # deduplicated snapshot; later writes never change it
    cache.get("BTCUSDT")                     # one row as a dict, or None

How it stays cheap. The table is a compacted *base* frame (one row per key, in the order the
rows were last written) plus *pending* write chunks. ``put`` and ``remove`` only append a chunk
and record, per key, where its newest version lives, so a write costs time proportional to its
batch. Pending chunks are folded into the base (*compaction*) when a reader asks for the whole
table (``frame``, ``lazy``, ``len``) or when pending rows exceed ``max(4096, base rows / 64)``;
that threshold makes the O(table) compaction cost amortise to a constant per written row. The
base keeps a 64-bit hash of every row's key next to it, so compaction probes integers rather
than re-hashing a million text keys (hash matches are re-checked on the real key columns, so a
collision can never drop a row). A compacted snapshot is kept and handed out until the next
write.

Staleness (``ttl``): the cache measures the age of the *whole table since the last* ``load``
(the sink's full refresh from its store); ``put`` and ``remove`` keep individual rows current
but do not make the table younger. ``is_stale`` is true when the cache was never loaded, when
``ttl`` has passed since the last ``load``, or after ``invalidate()`` (until the next ``load``).
The cache never reloads itself: its owner checks ``is_stale`` and calls ``load``.

Window (``max_rows``, default ``DEFAULT_WINDOW`` = 100,000): the cache keeps a bounded window,
the ``max_rows`` *newest* rows. Newest means the largest values of the window column
(``newest_by``, or the ``time_column`` its owner names at ``bind``; a sink names its entity's
first datetime column) or, without one, the most recently *written* rows (an upsert counts as
a write, so a row that keeps changing stays). Rows with a null window value are the oldest;
see ``hubkit.cachewindow``. ``load`` keeps the newest ``max_rows`` of what it is given, and
the window is applied again whenever the cache compacts, so ``frame()`` and ``len()`` never
exceed it and new rows evict the oldest; between compactions ``get`` may still find a row
that the next compaction drops. ``complete`` says whether the window still holds every row
it was given (a sink hands ``load`` one row more than the window to find out), ``window``
says the same in words. ``max_rows=None`` keeps every row: the whole table.

Thread safety: one lock guards the state. Writers (hubkit's loop thread) and readers (the
user's thread) may call any method concurrently. Snapshots are immutable: nothing here ever
mutates a frame in place, and ``frame()`` returns a clone so that even a caller's in-place
edits cannot reach the cache.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import polars as pl

from hubkit.cachewindow import DEFAULT_WINDOW, describe, newest_positions
from hubkit.errors import HubkitError, ParameterError, SchemaError, ValidationError

__all__ = ["DEFAULT_WINDOW", "FrameCache"]

# Compaction threshold: fold pending rows into the base once they exceed this many rows or
# 1/_PENDING_FRACTION of the base, whichever is larger. The proportional part keeps the
# amortised cost per written row constant as the table grows.
_MIN_PENDING_ROWS: Final = 4096
_PENDING_FRACTION: Final = 64
# Many tiny batches make many tiny chunks; concatenating pending chunks among themselves
# (cost ~ pending rows, not table rows) keeps lookups and compaction from paying per chunk.
_MAX_PENDING_CHUNKS: Final = 64
# A sorted hash index over the base costs ~0.1 s at 1M rows (an argsort and two copies into
# compact arrays); build it only once the same base has served this many point lookups, and only
# for bases where a vectorised scan (~1-3 ms at 1M rows) hurts.
_INDEX_AFTER_LOOKUPS: Final = 8
_INDEX_MIN_ROWS: Final = 50_000
# Concatenating new rows onto the base adds chunks; rechunk once there are this many.
_MAX_BASE_CHUNKS: Final = 16

_KeyTuple = tuple[Any, ...]
_HASH: Final = "hash"


def _empty_hashes() -> pl.Series:
    return pl.Series(_HASH, [], dtype=pl.UInt64)


class FrameCache:
    """A keyed Polars table with cheap upserts and immutable, deduplicated snapshots.

    ``ttl`` is the longest time the table may go without a ``load`` before ``is_stale`` turns
    true (``None``: only ``invalidate()`` makes it stale). ``max_rows`` bounds the table to a
    window of the newest rows (default ``DEFAULT_WINDOW``, 100,000; ``None``: the whole
    table, unbounded). ``newest_by`` names the column whose largest values are the newest
    rows (default: the ``time_column`` given to ``bind``, else write order). ``clock``
    returns monotonic seconds and exists for tests.

    A new cache is unbound; ``bind(key, schema)`` must come first, and every method that
    reads or writes rows raises ``HubkitError`` until it has (``is_stale`` is simply true).
    """

    def __init__(
        self,
        ttl: timedelta | None = None,
        max_rows: int | None = DEFAULT_WINDOW,
        *,
        newest_by: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl is not None and ttl.total_seconds() < 0:
            raise ParameterError(f"ttl must not be negative, got {ttl!r}")
        if max_rows is not None and max_rows < 0:
            raise ParameterError(f"max_rows must not be negative, got {max_rows!r}")
        self.ttl = ttl
        self.max_rows = max_rows
        self.newest_by = newest_by
        self._clock = clock
        self._lock = threading.Lock()
        self._key: tuple[str, ...] | None = None
        self._schema: pl.Schema | None = None
        # Compacted state: one row per key, in last-write order, with its key hashes.
        self._base = pl.DataFrame()
        self._base_hash = _empty_hashes()
        # Pending writes. Upsert rows are numbered globally in arrival order across
        # ``_chunks``; ``_pending`` maps each touched key to the number of its newest row, or
        # to None if its newest write was a removal. ``_tombstones`` holds removed key frames.
        self._chunks: list[pl.DataFrame] = []
        self._chunk_starts: list[int] = []
        self._pending_rows = 0
        self._tombstones: list[pl.DataFrame] = []
        self._tombstone_rows = 0
        self._pending: dict[_KeyTuple, int | None] = {}
        # Point-lookup index over the base: (sorted hashes, their row numbers), built on demand.
        self._index: tuple[array[int], array[int]] | None = None
        self._base_lookups = 0
        self._loaded_at: float | None = None
        self._invalidated = False
        self._by: str | None = None  # the window column, fixed by ``bind``
        self._complete = True  # no row was left out by the window since the last load

    # -- binding ---------------------------------------------------------------------------

    def bind(
        self,
        key: str | Sequence[str],
        schema: pl.Schema | Mapping[str, Any],
        *,
        time_column: str | None = None,
    ) -> None:
        """Fix the key columns and the frame schema; call once before anything else.

        ``time_column``: the owner's time column, which orders the window unless the cache
        was made with ``newest_by``. Binding again with the same key and schema is a no-op;
        anything else raises ``HubkitError`` (a cache belongs to one table). A key or window
        column missing from the schema raises ``SchemaError``.
        """
        key_cols = (key,) if isinstance(key, str) else tuple(key)
        bound_schema = pl.Schema(schema)
        if not key_cols:
            raise SchemaError("a FrameCache needs at least one key column")
        for name in key_cols:
            if name not in bound_schema:
                raise SchemaError(f"key column {name!r} is not in the schema", field=name)
        by = self.newest_by if self.newest_by is not None else time_column
        if by is not None and by not in bound_schema:
            raise SchemaError(f"window column {by!r} is not in the schema", field=by)
        with self._lock:
            if self._key is not None:
                if self._key == key_cols and self._schema == bound_schema:
                    return
                raise HubkitError(
                    f"this FrameCache is already bound to key {self._key!r}; "
                    "use one cache per table"
                )
            self._key = key_cols
            self._schema = bound_schema
            self._by = by
            self._base = bound_schema.to_frame()

    @property
    def key(self) -> tuple[str, ...]:
        """The key column names (raises ``HubkitError`` before ``bind``)."""
        return self._bound()[0]

    @property
    def schema(self) -> pl.Schema:
        """The frame schema (raises ``HubkitError`` before ``bind``)."""
        return self._bound()[1]

    # -- writes ----------------------------------------------------------------------------

    def load(self, frame: pl.DataFrame) -> None:
        """Replace the whole table with ``frame`` and restart the staleness clock.

        ``frame`` is taken in write order (oldest first). Only its newest ``max_rows`` rows
        are kept; ``complete`` tells whether that was all of them. Duplicate keys in
        ``frame`` keep their last row. Writes that race with a ``load`` are
        replaced by it too, so ``frame`` must be read after them (the sink serialises both on
        its loop). Raises ``ValidationError`` if a schema column is missing or a value cannot
        be cast to its column's type.
        """
        key, _ = self._bound()
        base = self._conform(frame).clone()  # the caller's frame object stays the caller's
        hashes = self._hash(base)
        # Rows from a store are unique by primary key; only pay for ``unique`` when the cheap
        # hash check says there may be duplicates.
        if hashes.n_unique() != base.height:
            base = base.unique(subset=list(key), keep="last", maintain_order=True)
            hashes = self._hash(base)
        base, hashes, dropped = self._window(base, hashes)
        with self._lock:
            self._reset_pending()
            self._set_base(base, hashes)
            self._complete = not dropped
            self._loaded_at = self._clock()
            self._invalidated = False

    def put(self, frame: pl.DataFrame) -> None:
        """Upsert ``frame``'s rows by key (a later row for a key replaces earlier ones).

        Costs time proportional to ``frame``, plus an occasional amortised compaction.
        Raises ``ValidationError`` if a schema column is missing or a value does not cast.
        """
        self._bound()
        # clone(): the caller keeps its frame object; in-place edits to it must not reach us.
        rows = self._conform(frame).clone()
        if rows.height == 0:
            return
        keys = rows.select(self.key).rows()
        with self._lock:
            start = self._pending_rows
            self._chunks.append(rows)
            self._chunk_starts.append(start)
            self._pending_rows += rows.height
            pending = self._pending
            for offset, k in enumerate(keys):
                pending[k] = start + offset
            self._after_write()

    def remove(self, keys: pl.DataFrame) -> None:
        """Delete the rows whose keys appear in ``keys`` (a frame with the key columns).

        Other columns in ``keys`` are ignored; keys not in the cache are ignored too.
        """
        key_frame = self._conform_keys(keys)
        if key_frame.height == 0:
            return
        key_rows = key_frame.rows()
        with self._lock:
            self._tombstones.append(key_frame)
            self._tombstone_rows += key_frame.height
            pending = self._pending
            for k in key_rows:
                pending[k] = None
            self._after_write()

    def invalidate(self, key: Any | None = None) -> None:
        """Forget one key, or (no argument) mark the whole table stale.

        ``invalidate(key)`` drops that row so the next ``get`` misses and its owner reads the
        store; ``frame()`` lacks the row until it is written or loaded again. ``invalidate()``
        keeps serving the current rows but makes ``is_stale`` true until the next ``load``.
        """
        if key is None:
            self._bound()
            with self._lock:
                self._invalidated = True
            return
        self.remove(self._key_frame(key))

    def clear(self) -> None:
        """Drop every row. The cache stays bound and counts as stale until the next ``load``."""
        self._bound()
        with self._lock:
            self._reset_pending()
            self._set_base(self.schema.to_frame(), _empty_hashes())
            self._loaded_at = None
            self._complete = True

    # -- reads -----------------------------------------------------------------------------

    def frame(self) -> pl.DataFrame:
        """A deduplicated snapshot of the cached window: one row per key, newest write wins,
        removed keys gone (with ``max_rows``, only the newest rows: see ``complete``).

        Rows come in the order they were last written. The frame is never changed by later
        writes. Folds pending writes into the base first if there are any (the result is kept
        for the next reader until the next write).
        """
        self._bound()
        with self._lock:
            self._compact()
            # clone() is O(columns): it shares the buffers but gives the caller its own
            # frame object, so even in-place frame methods on it cannot reach the cache.
            return self._base.clone()

    def lazy(self) -> pl.LazyFrame:
        """``frame()`` as a ``LazyFrame``."""
        return self.frame().lazy()

    def get(self, key: Any) -> dict[str, Any] | None:
        """The row for ``key`` as a column-name keyed dict, or None.

        ``key`` is a scalar for a one-column key, or a tuple/list (in key column order) or a
        mapping of column names for any key. Never compacts: pending writes are checked by
        a dict lookup, then the base through its key hashes.
        """
        key_cols, _ = self._bound()
        probe: _KeyTuple | None = self._quick_key(key, len(key_cols))
        with self._lock:
            if probe is not None and probe in self._pending:
                return self._pending_row(self._pending[probe])
        # Not pending under the value as given: build the canonical key (values cast to the
        # key column types, so 1 matches 1.0 and naive/aware datetimes line up) and retry.
        key_frame = self._key_frame(key)
        canonical = key_frame.row(0)
        wanted = self._hash(key_frame)[0]
        with self._lock:
            if canonical in self._pending:
                return self._pending_row(self._pending[canonical])
            positions = [self._base.get_column_index(name) for name in key_cols]
            for row_no in self._base_candidates(wanted):
                row = self._base.row(row_no)
                if tuple(row[i] for i in positions) == canonical:
                    return dict(zip(self._base.columns, row, strict=True))
            return None

    def __len__(self) -> int:
        """Number of rows in the deduplicated table (compacts pending writes first)."""
        self._bound()
        with self._lock:
            self._compact()
            return self._base.height

    def __bool__(self) -> bool:
        # ``if cache:`` means "is there a cache", even when it is empty; without this an empty
        # cache would be falsy and an unbound one would raise from ``__len__``.
        return True

    @property
    def is_stale(self) -> bool:
        """True if never loaded, ``invalidate()``-d, or ``ttl`` has passed since ``load``."""
        with self._lock:
            if self._invalidated or self._loaded_at is None:
                return True
            if self.ttl is None:
                return False
            return self._clock() - self._loaded_at >= self.ttl.total_seconds()

    @property
    def window_by(self) -> str | None:
        """The column that orders the window (None: write order; None before ``bind``)."""
        return self._by

    @property
    def complete(self) -> bool:
        """True unless the window left out rows: since the last ``load``, ``load`` itself or a
        compaction dropped the oldest rows to stay within ``max_rows``. Always true without
        ``max_rows``. Pending writes are not compacted to find out."""
        with self._lock:
            return self._complete

    @property
    def window(self) -> str:
        """What the cache holds, in words: ``"whole table"`` or e.g.
        ``"newest 100,000 by 'time' (partial)"``."""
        with self._lock:
            return describe(self.max_rows, self._by, complete=self._complete)

    @property
    def pending_rows(self) -> int:
        """Rows written since the last compaction (for status displays and benchmarks)."""
        with self._lock:
            return self._pending_rows + self._tombstone_rows

    def __repr__(self) -> str:
        with self._lock:
            if self._key is None:
                return "<FrameCache unbound>"
            window = describe(self.max_rows, self._by, complete=self._complete)
            return (
                f"<FrameCache key={self._key!r} window={window!r} base_rows={self._base.height} "
                f"pending_rows={self._pending_rows} ttl={self.ttl} max_rows={self.max_rows}>"
            )

    # -- internals (callers of the _locked helpers hold self._lock) ----------------------------

    def _bound(self) -> tuple[tuple[str, ...], pl.Schema]:
        key, schema = self._key, self._schema
        if key is None or schema is None:
            raise HubkitError("FrameCache is not bound: call bind(key, schema) first")
        return key, schema

    def _conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with exactly the bound schema (columns in order, types cast)."""
        _, schema = self._bound()
        if frame.schema == schema:
            return frame
        for name in schema:
            if name not in frame.schema:
                raise ValidationError(f"the frame has no column {name!r}", column=name)
        return self._cast(frame, schema)

    def _conform_keys(self, frame: pl.DataFrame) -> pl.DataFrame:
        key, schema = self._bound()
        key_schema = pl.Schema({name: schema[name] for name in key})
        for name in key:
            if name not in frame.schema:
                raise ValidationError(f"the key frame has no column {name!r}", column=name)
        return self._cast(frame, key_schema)

    @staticmethod
    def _cast(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
        try:
            return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())
        except pl.exceptions.PolarsError as exc:
            bad = next(
                (
                    name
                    for name, dtype in schema.items()
                    if frame.schema[name] != dtype
                    and frame.select(pl.col(name).cast(dtype, strict=False).null_count()).item()
                    > frame.get_column(name).null_count()
                ),
                None,
            )
            raise ValidationError(
                f"values do not fit column {bad!r}: {exc}" if bad else f"frame does not fit: {exc}",
                column=bad,
            ) from exc

    def _key_frame(self, key: Any) -> pl.DataFrame:
        """A one-row frame of ``key`` cast to the key column types."""
        key_cols, schema = self._bound()
        if isinstance(key, Mapping):
            missing = [name for name in key_cols if name not in key]
            if missing:
                raise ValidationError(f"the key has no value for {missing[0]!r}", column=missing[0])
            values = [key[name] for name in key_cols]
        elif isinstance(key, tuple | list):
            values = list(key)
        else:
            values = [key]
        if len(values) != len(key_cols):
            raise ValidationError(
                f"expected a key of {len(key_cols)} value(s) for {key_cols!r}, got {key!r}"
            )
        raw = pl.DataFrame({name: [value] for name, value in zip(key_cols, values, strict=True)})
        return self._cast(raw, pl.Schema({name: schema[name] for name in key_cols}))

    @staticmethod
    def _quick_key(key: Any, width: int) -> _KeyTuple | None:
        # The common case, a str/int key for a one-column key, needs no frame to canonicalise.
        if width == 1 and isinstance(key, str | int) and not isinstance(key, bool):
            return (key,)
        return None

    def _hash(self, frame: pl.DataFrame) -> pl.Series:
        """Stable (within a process) 64-bit hashes of ``frame``'s key columns."""
        key, schema = self._bound()
        # Categorical hashes depend on physical codes, not values: hash those as text.
        cols = [
            pl.col(name).cast(pl.String)
            if isinstance(schema[name], pl.Categorical | pl.Enum)
            else pl.col(name)
            for name in key
        ]
        if len(cols) == 1:
            return frame.select(cols[0].hash().alias(_HASH)).to_series()
        return frame.select(pl.struct(cols).hash().alias(_HASH)).to_series()

    def _after_write(self) -> None:
        if len(self._chunks) > _MAX_PENDING_CHUNKS:
            # Row numbers stay valid: the merged chunk starts at 0 and keeps arrival order.
            self._chunks = [pl.concat(self._chunks, rechunk=True)]
            self._chunk_starts = [0]
        if len(self._tombstones) > _MAX_PENDING_CHUNKS:
            self._tombstones = [pl.concat(self._tombstones, rechunk=True)]
        # Count written rows, not distinct keys: a stream rewriting the same few keys must
        # still compact, or its chunks would grow without bound.
        threshold = max(_MIN_PENDING_ROWS, self._base.height // _PENDING_FRACTION)
        if self._pending_rows + self._tombstone_rows > threshold:
            self._compact()

    def _pending_row(self, row_no: int | None) -> dict[str, Any] | None:
        if row_no is None:
            return None
        chunk_no = bisect.bisect_right(self._chunk_starts, row_no) - 1
        return self._chunks[chunk_no].row(row_no - self._chunk_starts[chunk_no], named=True)

    def _base_candidates(self, wanted: int) -> list[int]:
        """Base row numbers whose key hash equals ``wanted`` (almost always 0 or 1)."""
        self._base_lookups += 1
        if (
            self._index is None
            and self._base_lookups >= _INDEX_AFTER_LOOKUPS
            and self._base.height >= _INDEX_MIN_ROWS
        ):
            order = self._base_hash.arg_sort()
            # Plain arrays + bisect: a lookup is a few C-level comparisons, where a Series
            # search_sorted pays ~0.2 ms of conversion per call.
            self._index = (
                array("Q", self._base_hash.gather(order).to_list()),
                array("Q", order.to_list()),
            )
        if self._index is None:
            return (self._base_hash == wanted).arg_true().to_list()
        sorted_hashes, rows = self._index
        at = bisect.bisect_left(sorted_hashes, wanted)
        found: list[int] = []
        while at < len(sorted_hashes) and sorted_hashes[at] == wanted:
            found.append(rows[at])
            at += 1
        return found

    def _compact(self) -> None:
        """Fold pending writes into the base (cost ~ base rows, once per threshold)."""
        if not self._pending:
            return
        key = list(self._bound()[0])
        pending = pl.concat(self._chunks, rechunk=True) if self._chunks else None
        live_rows = sorted(row_no for row_no in self._pending.values() if row_no is not None)
        touched_parts = [pending.select(key)] if pending is not None else []
        touched_parts.extend(self._tombstones)
        touched = pl.concat(touched_parts, rechunk=True)
        touched_hashes = self._hash(touched)

        base, hashes = self._base, self._base_hash
        hit = hashes.is_in(touched_hashes.implode())
        if hit.any():
            candidates = base.filter(hit)
            # A hash match is only a candidate: keep the rows whose real key was not touched
            # (a 64-bit collision), so correctness never rests on the hash.
            survivors = candidates.join(touched.unique(), on=key, how="anti", nulls_equal=True)
            base, hashes = base.filter(~hit), hashes.filter(~hit)
            if survivors.height:
                base = pl.concat([base, survivors])
                hashes = pl.concat([hashes, self._hash(survivors)])
        if pending is not None and live_rows:
            live = pending[live_rows]
            base = pl.concat([base, live])
            hashes = pl.concat([hashes, self._hash(live)])
        base, hashes, dropped = self._window(base, hashes)
        if dropped:
            self._complete = False
        if base.n_chunks() > _MAX_BASE_CHUNKS:
            base, hashes = base.rechunk(), hashes.rechunk()
        self._reset_pending()
        self._set_base(base, hashes)

    def _window(
        self, base: pl.DataFrame, hashes: pl.Series
    ) -> tuple[pl.DataFrame, pl.Series, bool]:
        """``base`` and its hashes cut to the window; and whether rows were dropped."""
        if self.max_rows is None:
            return base, hashes, False
        keep = newest_positions(base, self.max_rows, self._by)
        if keep is None:
            return base, hashes, False
        if self.max_rows == 0 or keep[0] == base.height - self.max_rows:  # the last rows
            return base.tail(self.max_rows), hashes.tail(self.max_rows), True
        return base[keep], hashes.gather(keep), True

    def _reset_pending(self) -> None:
        self._chunks = []
        self._chunk_starts = []
        self._pending_rows = 0
        self._tombstones = []
        self._tombstone_rows = 0
        self._pending = {}

    def _set_base(self, base: pl.DataFrame, hashes: pl.Series) -> None:
        self._base = base
        self._base_hash = hashes
        self._index = None
        self._base_lookups = 0
