"""P2 on PostgreSQL: read N stored trades into Polars, hubkit's Store vs raw ADBC and psycopg.

Usage: ``python benchmarks/p2_pg_read.py [--rows N] [--repeat R]`` (default 1,000,000 rows,
3 repeats).

One process starts an embedded PostgreSQL server (``hubkit.testing.postgres``); the trades
are written once through ``hubkit.Store`` (not timed). Then, alternating, R times each,
every method reads ``SELECT *`` of the table into a Polars frame:

- ``store``: the public API, ``hubkit.Store(url).table(spec).read_all()`` (a pooled ADBC
  connection, Arrow out, decoded to the entity's schema);
- ``pgbulk``: ``pgbulk.fetch_arrow`` + ``pgbulk.to_frame`` (the SQLAlchemy statement, the
  driver's extension types unwrapped, hubkit's dtypes);
- ``pgbulk stream``: ``pgbulk.iter_batches`` + ``pl.concat`` (the scan path);
- ``adbc``: ``cursor.execute`` + ``fetch_arrow_table`` + ``pl.from_arrow`` on an ADBC cursor;
- ``psycopg``: psycopg 3 ``fetchall`` + ``pl.DataFrame(orient="row")``.

Best-of-R times are compared; the last lines give the store's rows/s over each other
method's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl
import psycopg
import sqlalchemy as sa
from _data import Trade, trade_frame

import hubkit
from hubkit import pgbulk
from hubkit.testing.postgres import EmbeddedPostgres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n: int = args.rows

    frame = trade_frame(n)
    spec = hubkit.reflect(Trade, key="id")
    with EmbeddedPostgres() as pg, hubkit.Store(pg.uri) as store:
        trades = store.table(spec)
        trades.upsert(frame)
        table = trades.table
        adbc = pgbulk.connect(pg.url)
        cur = adbc.cursor()
        ps = psycopg.connect(pg.uri)
        select = sa.select(table)
        sql = f"SELECT * FROM {table.name}"

        def psycopg_read() -> pl.DataFrame:
            with ps.cursor() as pcur:
                pcur.execute(sql)
                rows = pcur.fetchall()
            ps.commit()
            return pl.DataFrame(rows, schema=spec.schema, orient="row")

        def adbc_read() -> pl.DataFrame:
            cur.execute(sql)
            out = pl.from_arrow(cur.fetch_arrow_table())
            assert isinstance(out, pl.DataFrame)
            return out

        methods: dict[str, Callable[[], pl.DataFrame]] = {
            "store": trades.read_all,
            "pgbulk": lambda: pgbulk.to_frame(pgbulk.fetch_arrow(cur, select)),
            "pgbulk stream": lambda: pl.concat(
                [pgbulk.to_frame(b) for b in pgbulk.iter_batches(cur, select)]
            ),
            "adbc": adbc_read,
            "psycopg": psycopg_read,
        }
        best = {m: float("inf") for m in methods}
        for _ in range(args.repeat):
            for name, run in methods.items():
                t0 = time.perf_counter()
                out = run()
                best[name] = min(best[name], time.perf_counter() - t0)
                assert out.height == n, f"{name} read {out.height} rows"
                assert out.schema == spec.schema, f"{name} read {out.schema}"
        adbc.rollback()
        cur.close()
        adbc.close()
        ps.close()

    for name, t in best.items():
        print(f"{name:>14}: {n / t:>12,.0f} rows/s (best {t:.2f} s of {args.repeat})")
    for other in ("adbc", "psycopg", "pgbulk", "pgbulk stream"):
        print(f"P2 PostgreSQL ratio store/{other}: {best[other] / best['store']:.2f}x")


if __name__ == "__main__":
    main()
