"""``hubkit load`` (a dataset, printed or written to a file) and ``hubkit status`` (what a
store holds)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hubkit.cli.names import checking_symbols, dataset_named, store_for
from hubkit.cli.output import (
    frame_text,
    inventory_text,
    location,
    readable_columns,
    write_frame,
)
from hubkit.cli.params import (
    EXIT_OK,
    CommandError,
    did_you_mean,
    param_value,
    parse_params,
    symbols_of,
)

if TYPE_CHECKING:
    import polars as pl

    from hubkit import Catalog

__all__ = ["add_load_arguments", "add_status_arguments", "run_load", "run_status"]

STORE_HELP = "store file or SQLAlchemy URL (default: hubkit.db in $HUBKIT_HOME)"

#: ``--columns`` value that prints every column.
ALL_COLUMNS = "all"


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hubkit load``."""
    parser.add_argument("name", metavar="NAME", help="dataset name")
    parser.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="dataset parameters (or --key value)"
    )
    parser.add_argument("--out", default=None, help="write the frame to FILE.parquet or FILE.csv")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument("--rows", type=int, default=10, help="rows to print (default 10)")
    parser.add_argument(
        "--columns",
        default=None,
        metavar="A,B,...|all",
        help="columns to print (default: the key, then as many as fit 160 characters with "
        "every value readable; 'all' prints every column)",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hubkit status``."""
    parser.add_argument("--store", default=None, help=STORE_HELP)


def _load_frame(catalog: Catalog, name: str, store: str, params: dict[str, Any]) -> pl.DataFrame:
    """``catalog.load(name, **params)``; ``symbols=A,B`` loads ``symbol=A`` and ``symbol=B``
    and stacks the frames (the ByBit trade datasets take one symbol per load)."""
    import polars as pl

    if "symbols" not in params:
        return catalog.load(name, store=store, **params)
    rest = {k: v for k, v in params.items() if k not in ("symbols", "symbol")}
    frames = [catalog.load(name, store=store, symbol=s, **rest) for s in symbols_of(params)]
    if not frames:
        raise CommandError("--symbols names no symbol")
    return pl.concat(frames, how="vertical")


def _columns(wanted: str | None, frame: pl.DataFrame, key: tuple[str, ...], rows: int) -> list[str]:
    """The columns to print for ``--columns`` (see its help)."""
    if wanted is None:
        return readable_columns(frame, key, rows)
    if wanted.strip().lower() == ALL_COLUMNS:
        return list(frame.columns)
    value = param_value(wanted)
    names = [value] if isinstance(value, str) else value
    for name in names:
        if name not in frame.columns:
            raise CommandError(
                f"--columns: no column {name!r}{did_you_mean(name, frame.columns)} "
                f"(columns: {', '.join(frame.columns)})"
            )
    return names


def run_load(args: argparse.Namespace, out: TextIO) -> int:
    """``hubkit.load(NAME, **params)`` -> print the head, or write ``--out``."""
    import hubkit

    params = parse_params(args.params)
    catalog = hubkit.default_catalog()
    dataset = dataset_named(catalog, args.name)
    if args.out is not None:
        path = Path(args.out).expanduser()
        if path.suffix.lower() not in (".parquet", ".csv"):
            raise CommandError(f"--out must end with .parquet or .csv, not {path.name!r}")
    store = store_for(args.store, create=True)
    frame = checking_symbols(params, store, lambda: _load_frame(catalog, args.name, store, params))
    if args.out is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frame(frame, path)
        print(f"wrote {frame.height} rows x {frame.width} columns to {path}", file=out)
        return EXIT_OK
    columns = _columns(args.columns, frame, dataset.spec().key, args.rows)
    wide = args.columns is not None and len(columns) == frame.width
    print(frame_text(frame, args.rows, columns, wide=wide), file=out)
    hidden = frame.width - len(columns)
    more = f"; {hidden} more not shown (--columns NAME,... or --columns all)" if hidden else ""
    print(f"{frame.height} rows x {frame.width} columns{more}", file=out)
    return EXIT_OK


def run_status(args: argparse.Namespace, out: TextIO) -> int:
    """List the store's tables with rows, last sync and pending pushes."""
    from hubkit import StoreError
    from hubkit.store.inventory import store_inventory

    try:
        found = store_inventory(store_for(args.store, create=False))
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    print(f"store: {location(found.url)}", file=out)
    if not found.tables:
        print("no hubkit tables yet", file=out)
        return EXIT_OK
    print(inventory_text(found.tables), file=out)
    return EXIT_OK
