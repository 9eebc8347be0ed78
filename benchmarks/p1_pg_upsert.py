"""P1 on PostgreSQL: upsert N ByBit-like trades, hubkit's Store vs two psycopg baselines.

Usage: ``python benchmarks/p1_pg_upsert.py [--rows N]`` (default 1,000,000).

One process starts an embedded PostgreSQL server (``hubkit.testing.postgres``) and writes
the same rows into three tables of the same definition (native types: text key, double
precision, timestamptz, boolean), one transaction per pass:

- ``executemany``: psycopg 3 ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` over
  prebuilt row tuples (building the tuples is not timed);
- ``copy+merge``: psycopg 3 ``COPY`` of the same tuples into a TEMP table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``;
- ``pgbulk``: ``pgbulk.upsert`` of the Polars frame (conversion for COPY, de-duplication
  and key ordering included), ADBC's binary COPY into a TEMP table, then the same merge;
- ``store``: the public API, ``hubkit.Store(url).table(spec).upsert(frame)`` (validation
  of the frame, the same COPY + merge, the sink's sync-state row in the same transaction).

Pass 1 inserts N new keys into an empty table, pass 2 upserts the same N keys again (every
row replaced). The last lines give the store's rows/s over each baseline's, both passes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import sqlalchemy as sa
from _data import Trade, trade_frame

import hubkit
from hubkit import pgbulk
from hubkit.testing.postgres import EmbeddedPostgres

PASSES = ("insert new keys", "replace existing keys")


def _upsert_sql(table: sa.Table, source: str | None) -> str:
    names = [c.name for c in table.c]
    others = [n for n in names if n not in table.primary_key.columns]
    head = f"INSERT INTO {table.name} ({', '.join(names)}) "
    body = f"SELECT * FROM {source} " if source else f"VALUES ({', '.join(['%s'] * len(names))}) "
    return (
        head
        + body
        + f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in others)}"
    )


def _executemany(conn: psycopg.Connection, table: sa.Table, rows: list[tuple[object, ...]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(_upsert_sql(table, None), rows)
    conn.commit()


def _copy_merge(conn: psycopg.Connection, table: sa.Table, rows: list[tuple[object, ...]]) -> None:
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE stage (LIKE {table.name})")
        with cur.copy("COPY stage FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(_upsert_sql(table, "stage"))
        cur.execute("DROP TABLE stage")
    conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n: int = args.rows

    t0 = time.perf_counter()
    frame = trade_frame(n)
    rows = frame.rows()  # tuples of str, float, bool and aware datetimes
    print(f"data: {n:,} trades generated in {time.perf_counter() - t0:.1f} s")

    spec = hubkit.reflect(Trade, key="id")
    md = sa.MetaData()
    tables = {
        label: pgbulk.define_table(md, f"trade_{label}", spec.columns, spec.key)
        for label in ("executemany", "copy_merge", "pgbulk")
    }
    with EmbeddedPostgres() as pg, hubkit.Store(pg.uri) as store:
        engine = sa.create_engine(pg.url)
        md.create_all(engine)
        engine.dispose()
        trades = store.table(spec)
        ps = psycopg.connect(pg.uri)
        adbc = pgbulk.connect(pg.url)
        cur = adbc.cursor()

        def run_pgbulk() -> None:
            pgbulk.upsert(cur, tables["pgbulk"], pgbulk.copy_table(spec.columns, frame))
            adbc.commit()

        def run_store() -> None:
            trades.upsert(frame, cursor="p1")

        methods: dict[str, Callable[[], None]] = {
            "executemany": lambda: _executemany(ps, tables["executemany"], rows),
            "copy+merge": lambda: _copy_merge(ps, tables["copy_merge"], rows),
            "pgbulk": run_pgbulk,
            "store": run_store,
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        for label in PASSES:
            for name, run in methods.items():
                t1 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t1)
            print(
                f"{label:>22}: "
                + "   ".join(
                    f"{m} {n / t[-1]:>10,.0f} rows/s ({t[-1]:.2f} s)" for m, t in times.items()
                )
            )
        for t in [*tables.values(), trades.table]:
            stored = pgbulk.fetch_arrow(cur, sa.select(sa.func.count()).select_from(t))
            assert stored.column(0)[0].as_py() == n, f"{t.name} holds a different row count"
        adbc.commit()
        cur.close()
        adbc.close()
        ps.close()

    total = {m: sum(t) for m, t in times.items()}
    print(
        f"{'both passes':>22}: "
        + "   ".join(f"{m} {2 * n / s:,.0f} rows/s" for m, s in total.items())
    )
    for base in ("executemany", "copy+merge", "pgbulk"):
        print(f"P1 PostgreSQL ratio store/{base}: {total[base] / total['store']:.2f}x")


if __name__ == "__main__":
    main()
