"""FrameCache: upserts by key, immutable snapshots, TTL, row bound, thread safety."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from hubkit import cache as cache_module
from hubkit.cache import FrameCache
from hubkit.errors import HubkitError, SchemaError, ValidationError

SCHEMA = pl.Schema({"id": pl.String, "price": pl.Float64, "size": pl.Int64})


def rows(*items: tuple[str, float, int]) -> pl.DataFrame:
    return pl.DataFrame(items, schema=SCHEMA, orient="row")


def bound(**kwargs: Any) -> FrameCache:
    cache = FrameCache(**kwargs)
    cache.bind("id", SCHEMA)
    return cache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make compaction, chunk merging and the lookup index kick in on tiny tables."""
    monkeypatch.setattr(cache_module, "_MIN_PENDING_ROWS", 5)
    monkeypatch.setattr(cache_module, "_MAX_PENDING_CHUNKS", 3)
    monkeypatch.setattr(cache_module, "_INDEX_AFTER_LOOKUPS", 2)
    monkeypatch.setattr(cache_module, "_INDEX_MIN_ROWS", 0)
    monkeypatch.setattr(cache_module, "_MAX_BASE_CHUNKS", 2)
    yield


# -- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda c: c.load(rows()),
        lambda c: c.put(rows()),
        lambda c: c.remove(rows()),
        lambda c: c.get("a"),
        lambda c: c.invalidate("a"),
        lambda c: c.invalidate(),
        lambda c: c.clear(),
        lambda c: c.frame(),
        lambda c: c.lazy(),
        lambda c: len(c),
    ],
)
def test_unbound_cache_raises_hubkit_error(use: Any) -> None:
    with pytest.raises(HubkitError, match="not bound"):
        use(FrameCache())


def test_unbound_cache_is_stale_and_truthy() -> None:
    cache = FrameCache()
    assert cache.is_stale
    assert cache  # "is there a cache", not "is it empty"
    assert "unbound" in repr(cache)


def test_bind_rejects_unknown_key_and_rebinding() -> None:
    with pytest.raises(SchemaError) as info:
        FrameCache().bind("nope", SCHEMA)
    assert info.value.field == "nope"
    cache = bound()
    cache.bind(["id"], SCHEMA)  # the same binding again is fine
    with pytest.raises(HubkitError, match="already bound"):
        cache.bind("price", SCHEMA)
    assert cache.key == ("id",)
    assert cache.schema == SCHEMA


def test_new_bound_cache_is_empty_with_schema() -> None:
    cache = bound()
    assert len(cache) == 0
    assert cache.frame().schema == SCHEMA
    assert cache.get("a") is None


# -- upserts, removes, snapshots -------------------------------------------------------------


def test_put_replaces_rows_by_key_and_orders_by_last_write() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2), ("c", 3.0, 3)))
    cache.put(rows(("b", 20.0, 20), ("d", 4.0, 4)))
    cache.put(rows(("a", 10.0, 10), ("a", 11.0, 11)))  # within a batch the last row wins
    assert_frame_equal(
        cache.frame(),
        rows(("c", 3.0, 3), ("b", 20.0, 20), ("d", 4.0, 4), ("a", 11.0, 11)),
    )
    assert len(cache) == 4


def test_snapshot_is_isolated_from_later_writes() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2)))
    before = cache.frame()
    expected = before.clone()
    cache.put(rows(("a", 9.0, 9), ("c", 3.0, 3)))
    with_pending = cache.frame()
    cache.remove(pl.DataFrame({"id": ["b"]}))
    cache.load(rows(("z", 0.0, 0)))
    cache.clear()
    assert_frame_equal(before, expected)
    assert_frame_equal(with_pending, rows(("b", 2.0, 2), ("a", 9.0, 9), ("c", 3.0, 3)))


def test_in_place_edits_by_callers_do_not_reach_the_cache() -> None:
    cache = bound()
    loaded = rows(("a", 1.0, 1))
    cache.load(loaded)
    batch = rows(("b", 2.0, 2))
    cache.put(batch)
    snapshot = cache.frame()
    loaded.insert_column(0, pl.Series("x", [1]))
    batch.insert_column(0, pl.Series("x", [1]))
    snapshot.insert_column(0, pl.Series("x", [1, 2]))
    assert_frame_equal(cache.frame(), rows(("a", 1.0, 1), ("b", 2.0, 2)))


def test_remove_deletes_keys_in_base_and_pending() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2)))
    cache.put(rows(("c", 3.0, 3)))
    cache.remove(pl.DataFrame({"id": ["a", "c", "missing"], "price": [0.0, 0.0, 0.0]}))
    assert cache.get("a") is None
    assert cache.get("c") is None
    assert_frame_equal(cache.frame(), rows(("b", 2.0, 2)))
    cache.put(rows(("a", 5.0, 5)))  # a removed key can come back
    assert cache.get("a") == {"id": "a", "price": 5.0, "size": 5}
    assert_frame_equal(cache.frame(), rows(("b", 2.0, 2), ("a", 5.0, 5)))


def test_remove_needs_key_columns() -> None:
    cache = bound()
    with pytest.raises(ValidationError) as info:
        cache.remove(pl.DataFrame({"price": [1.0]}))
    assert info.value.column == "id"


def test_get_from_pending_base_and_after_compaction() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1)))
    cache.put(rows(("b", 2.0, 2)))
    assert cache.pending_rows == 1
    assert cache.get("a") == {"id": "a", "price": 1.0, "size": 1}
    assert cache.get("b") == {"id": "b", "price": 2.0, "size": 2}
    assert cache.pending_rows == 1  # get never compacts
    len(cache)
    assert cache.pending_rows == 0
    assert cache.get("b") == {"id": "b", "price": 2.0, "size": 2}
    assert cache.get("nope") is None


def test_composite_keys() -> None:
    schema = pl.Schema({"symbol": pl.String, "interval": pl.Int64, "close": pl.Float64})
    cache = FrameCache()
    cache.bind(("symbol", "interval"), schema)
    cache.load(
        pl.DataFrame(
            {"symbol": ["BTC", "BTC", "ETH"], "interval": [1, 5, 1], "close": [1.0, 2.0, 3.0]}
        )
    )
    cache.put(pl.DataFrame({"symbol": ["BTC"], "interval": [5], "close": [20.0]}))
    cache.put(pl.DataFrame({"symbol": ["ETH"], "interval": [5], "close": [30.0]}))
    assert cache.get(("BTC", 5)) == {"symbol": "BTC", "interval": 5, "close": 20.0}
    assert cache.get(["BTC", 1]) == {"symbol": "BTC", "interval": 1, "close": 1.0}
    assert cache.get({"interval": 5, "symbol": "ETH"}) == {
        "symbol": "ETH",
        "interval": 5,
        "close": 30.0,
    }
    assert cache.get(("ETH", 15)) is None
    cache.remove(pl.DataFrame({"symbol": ["BTC"], "interval": [1]}))
    assert len(cache) == 3  # BTC/1 gone; ETH/1 with the same interval stays
    assert cache.frame().sort("symbol", "interval").rows() == [
        ("BTC", 5, 20.0),
        ("ETH", 1, 3.0),
        ("ETH", 5, 30.0),
    ]
    assert cache.get(("BTC", 5)) == {"symbol": "BTC", "interval": 5, "close": 20.0}
    with pytest.raises(ValidationError, match="2 value"):
        cache.get("BTC")
    with pytest.raises(ValidationError) as info:
        cache.get({"symbol": "BTC"})
    assert info.value.column == "interval"


def test_get_casts_the_key_to_the_key_column_type() -> None:
    schema = pl.Schema({"at": pl.Datetime("us", "UTC"), "n": pl.Int64(), "v": pl.Int64()})
    cache = FrameCache()
    cache.bind(("at", "n"), schema)
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    cache.load(pl.DataFrame({"at": [at], "n": [7], "v": [1]}, schema=schema))
    assert cache.get((at, 7)) == {"at": at, "n": 7, "v": 1}
    assert cache.get((at, 7.0)) == {"at": at, "n": 7, "v": 1}
    cache.put(pl.DataFrame({"at": [at], "n": [8], "v": [2]}, schema=schema))
    assert cache.get({"at": at, "n": 8.0}) == {"at": at, "n": 8, "v": 2}


def test_categorical_keys_deduplicate_by_value() -> None:
    schema = pl.Schema({"side": pl.Categorical(), "n": pl.Int64()})
    cache = FrameCache()
    cache.bind("side", schema)
    cache.load(pl.DataFrame({"side": ["Buy", "Sell"], "n": [1, 2]}, schema=schema))
    cache.put(pl.DataFrame({"side": ["Sell"], "n": [20]}, schema=schema))
    assert cache.frame().rows() == [("Buy", 1), ("Sell", 20)]
    assert cache.get("Sell") == {"side": "Sell", "n": 20}


def test_put_conforms_frames_to_the_schema() -> None:
    cache = bound()
    cache.put(
        pl.DataFrame(
            {"extra": [1], "size": pl.Series([3], dtype=pl.Int32), "id": ["a"], "price": [1]}
        )
    )
    assert_frame_equal(cache.frame(), rows(("a", 1.0, 3)))
    with pytest.raises(ValidationError) as missing:
        cache.put(pl.DataFrame({"id": ["a"], "price": [1.0]}))
    assert missing.value.column == "size"
    with pytest.raises(ValidationError) as bad:
        cache.put(pl.DataFrame({"id": ["a"], "price": ["cheap"], "size": [1]}))
    assert bad.value.column == "price"
    assert_frame_equal(cache.frame(), rows(("a", 1.0, 3)))  # rejected batches change nothing


def test_load_keeps_the_last_row_of_duplicate_keys() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2), ("a", 3.0, 3)))
    assert_frame_equal(cache.frame(), rows(("b", 2.0, 2), ("a", 3.0, 3)))


def test_invalidate_key_drops_it_and_clear_empties() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2)))
    cache.invalidate("a")
    assert cache.get("a") is None
    assert not cache.is_stale  # one key dropped; the table is not stale
    assert_frame_equal(cache.frame(), rows(("b", 2.0, 2)))
    cache.clear()
    assert len(cache) == 0
    assert cache.frame().schema == SCHEMA
    assert cache.is_stale


def test_lazy_matches_frame() -> None:
    cache = bound()
    cache.load(rows(("a", 1.0, 1)))
    cache.put(rows(("b", 2.0, 2)))
    lazy = cache.lazy()
    assert isinstance(lazy, pl.LazyFrame)
    assert_frame_equal(lazy.collect(), cache.frame())


# -- compaction paths against a reference model -----------------------------------------------


def check_against_model(cache: FrameCache, model: dict[str, tuple[str, float, int]]) -> None:
    frame = cache.frame()
    assert frame.get_column("id").n_unique() == frame.height
    assert sorted(frame.rows()) == sorted(model.values())
    assert len(cache) == len(model)


@pytest.mark.usefixtures("small_thresholds")
@pytest.mark.parametrize("collide", [False, True])
def test_random_operations_match_a_dict(monkeypatch: pytest.MonkeyPatch, collide: bool) -> None:
    if collide:
        # Every key hashes alike: correctness must come from the key columns, not the hash.
        def same_hash(self: FrameCache, frame: pl.DataFrame) -> pl.Series:
            return pl.Series("hash", [42] * frame.height, dtype=pl.UInt64)

        monkeypatch.setattr(FrameCache, "_hash", same_hash)
    rng = random.Random(7)
    cache = bound()
    model: dict[str, tuple[str, float, int]] = {}
    keys = [f"k{i}" for i in range(40)]
    for step in range(400):
        action = rng.random()
        if action < 0.55:
            batch = [(k, rng.random(), step) for k in rng.choices(keys, k=rng.randint(1, 6))]
            cache.put(rows(*batch))
            model.update({row[0]: row for row in batch})
        elif action < 0.75:
            gone = rng.sample(keys, rng.randint(1, 4))
            cache.remove(pl.DataFrame({"id": gone}))
            for k in gone:
                model.pop(k, None)
        elif action < 0.95:
            k = rng.choice(keys)
            got = cache.get(k)
            assert (got and (got["id"], got["price"], got["size"])) == model.get(k)
        elif action < 0.98:
            check_against_model(cache, model)
        else:
            fresh = {k: (k, rng.random(), step) for k in rng.sample(keys, 10)}
            cache.load(rows(*fresh.values()))
            model = fresh
    check_against_model(cache, model)


# -- staleness and bounds --------------------------------------------------------------------


def test_ttl_counts_from_the_last_load() -> None:
    clock = FakeClock()
    cache = FrameCache(ttl=timedelta(seconds=60), clock=clock)
    cache.bind("id", SCHEMA)
    assert cache.is_stale  # never loaded
    cache.load(rows(("a", 1.0, 1)))
    assert not cache.is_stale
    clock.now += 59
    cache.put(rows(("b", 2.0, 2)))  # incremental writes do not make the table younger
    assert not cache.is_stale
    clock.now += 1
    assert cache.is_stale
    assert len(cache) == 2  # stale rows are still served; the owner decides to reload
    cache.load(rows(("a", 1.0, 1)))
    assert not cache.is_stale
    cache.invalidate()
    assert cache.is_stale
    cache.load(rows(("a", 1.0, 1)))
    assert not cache.is_stale


def test_without_ttl_only_invalidate_makes_stale() -> None:
    clock = FakeClock()
    cache = FrameCache(clock=clock)
    cache.bind("id", SCHEMA)
    cache.load(rows())
    clock.now += 10**9
    assert not cache.is_stale
    cache.invalidate()
    assert cache.is_stale


def test_max_rows_keeps_the_most_recently_written_rows() -> None:
    cache = bound(max_rows=3)
    cache.load(rows(("a", 1.0, 1), ("b", 2.0, 2), ("c", 3.0, 3), ("d", 4.0, 4)))
    assert sorted(cache.frame().get_column("id")) == ["b", "c", "d"]
    cache.put(rows(("b", 20.0, 20)))  # rewriting b makes it the newest
    cache.put(rows(("e", 5.0, 5)))
    assert_frame_equal(cache.frame(), rows(("d", 4.0, 4), ("b", 20.0, 20), ("e", 5.0, 5)))
    assert len(cache) == 3
    assert cache.get("c") is None


def test_constructor_rejects_negative_bounds() -> None:
    with pytest.raises(ValueError, match="ttl"):
        FrameCache(ttl=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="max_rows"):
        FrameCache(max_rows=-1)


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("small_thresholds")
@pytest.mark.timeout(60)
def test_concurrent_writer_and_readers_see_consistent_snapshots() -> None:
    cache = bound()
    cache.load(rows(*[(f"k{i}", 0.0, 0) for i in range(50)]))
    batches = 300
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(1, batches + 1):
                # Each batch rewrites one old key and adds one new key.
                cache.put(rows((f"k{n % 50}", float(n), n), (f"new{n}", float(n), n)))
                if n % 7 == 0:
                    cache.remove(pl.DataFrame({"id": [f"new{n - 1}"]}))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            last = 0
            while not done.is_set():
                snapshot = cache.frame()
                ids = snapshot.get_column("id")
                assert ids.n_unique() == snapshot.height
                assert snapshot.height >= 50
                newest = snapshot.get_column("size").max()
                assert isinstance(newest, int) and newest >= last  # time never runs backwards
                last = newest
                cache.get("k1")
                len(cache)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not errors, errors
    removed = {f"new{n - 1}" for n in range(7, batches + 1, 7)}
    expected = 50 + batches - len(removed)
    assert len(cache) == expected
    assert cache.get(f"new{batches}") == {"id": f"new{batches}", "price": 300.0, "size": 300}
