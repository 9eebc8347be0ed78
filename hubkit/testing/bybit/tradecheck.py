"""Compare the trades a sink stored with the simulator's ground truth: lost, duplicated,
unknown and mismatched trades, for tests and soak runs.

::

    check = compare_trades(sink.dao.query(), sim.ground_truth("trades"),
                           symbols=["BTCUSDT"], until_ms=cut)
    assert check.lost == check.duplicated == check.mismatched == check.unknown == 0

A trade is *expected* when the simulator made it for one of ``symbols`` (in ``category``)
after the first trade stored for that symbol (the stream starts there) and at or before
``until_ms``. ``lost`` counts expected trades not stored; ``duplicated`` stored rows sharing an
``exec_id``; ``unknown`` stored trades the simulator never made; ``mismatched`` stored trades
whose fields differ from the simulator's (``FIELDS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

__all__ = ["FIELDS", "TradeCheck", "compare_trades"]

FIELDS = ("symbol", "price", "size", "side", "time", "is_block_trade", "seq")


@dataclass(frozen=True)
class TradeCheck:
    expected: int
    stored: int
    lost: int
    duplicated: int
    unknown: int
    mismatched: int
    lost_ids: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unknown or self.mismatched)

    def __str__(self) -> str:
        return (
            f"expected {self.expected:,}  stored {self.stored:,}  lost {self.lost:,}  "
            f"duplicated {self.duplicated:,}  unknown {self.unknown:,}  "
            f"field mismatches {self.mismatched:,}"
        )


def compare_trades(
    stored: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    symbols: Sequence[str],
    until_ms: int,
    category: str = "linear",
) -> TradeCheck:
    """``stored`` (a trades sink's rows) against ``truth`` (``sim.ground_truth("trades")``)."""
    truth = truth.filter(
        (pl.col("category") == category) & pl.col("symbol").is_in(list(symbols))
    ).with_columns(time=pl.from_epoch("time_ms", time_unit="ms").dt.replace_time_zone("UTC"))
    until = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    columns = ["exec_id", *FIELDS]
    mine = stored.select(columns)
    truth = truth.select(columns).cast(mine.schema)
    lost_ids: list[str] = []
    expected = 0
    for symbol in symbols:
        first = mine.filter(pl.col("symbol") == symbol)["time"].min()
        if not isinstance(first, datetime):
            continue
        wanted = truth.filter(
            (pl.col("symbol") == symbol) & (pl.col("time") > first) & (pl.col("time") <= until)
        )
        expected += wanted.height
        missing = wanted.join(mine, on="exec_id", how="anti")
        lost_ids.extend(missing["exec_id"].to_list())
    joined = mine.join(truth, on="exec_id", how="left", suffix="_truth")
    known = joined.filter(pl.col("symbol_truth").is_not_null())
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_truth")) for c in FIELDS)
    return TradeCheck(
        expected=expected,
        stored=mine.height,
        lost=len(lost_ids),
        duplicated=int(mine["exec_id"].is_duplicated().sum()),
        unknown=joined.height - known.height,
        mismatched=known.filter(differs).height,
        lost_ids=tuple(lost_ids[:20]),
    )
