"""``hubkit migrate STORE TABLE``: rewrite a table for the definition its last open asked
for (the one hubkit refused to apply in place), keeping a copy of the old table; or drop a
kept column or a kept copy; or list the table's schema history."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from hubkit.cli.params import EXIT_OK, CommandError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``hubkit migrate``."""
    parser.add_argument("store", metavar="STORE", help="store file or SQLAlchemy URL")
    parser.add_argument("table", metavar="TABLE", help="the table to migrate")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--drop-column",
        metavar="COLUMN",
        help="delete a column kept after its field was removed (and its data)",
    )
    what.add_argument("--drop-copy", metavar="COPY", help="delete a copy an earlier migration kept")
    what.add_argument(
        "--history", action="store_true", help="list the table's schema changes and exit"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Migrate, drop or list, then print what was done."""
    from hubkit.store import Store
    from hubkit.store.migrate import definition_of_refused

    if "://" not in args.store and not Path(args.store).expanduser().exists():
        raise CommandError(f"no store at {args.store!r}")
    with Store(args.store) as store:
        if args.history:
            for at, _, change, detail in store.schema_history(args.table).iter_rows():
                print(f"{at:%Y-%m-%d %H:%M:%S} {change:<10} {detail}", file=out)
            return EXIT_OK
        if args.drop_column is not None:
            store.drop_column(args.table, args.drop_column)
            print(f"dropped column {args.drop_column!r} of {args.table!r}", file=out)
            return EXIT_OK
        if args.drop_copy is not None:
            store.drop_copy(args.drop_copy)
            print(f"dropped {args.drop_copy!r}", file=out)
            return EXIT_OK
        done = store.migrate(definition_of_refused(store, args.table), name=args.table)
    if done.copy is None:
        print(f"{args.table!r} already fits its definition; nothing to do", file=out)
        return EXIT_OK
    print(f"migrated {args.table!r}: {done.rows} rows rewritten", file=out)
    for change in done.changes:
        print(f"  {change}", file=out)
    print(
        f"the old table is kept as {done.copy!r}; delete it with "
        f"`hubkit migrate STORE {args.table} --drop-copy {done.copy}`",
        file=out,
    )
    return EXIT_OK
