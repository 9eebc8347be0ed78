"""``hubkit sync``: keep a dataset in sync for a while, for cron and scheduled runs.

``trades`` keeps a live WebSocket sink open (gaps filled over REST). Every other dataset of
the catalog is synced through the catalog, now and then every ``--every``: each round is a
``load`` that always syncs, so the store records the sync's time exactly as ``hubkit.load``
does (``hubkit status`` shows it; the next ``load`` within the freshness period makes no
request).

Exit 1 (one line on stderr) when the sync could not start, a REST round failed (the remote
unreachable, a write refused by the store), a streamed write failed, or the stream was down
at the end. The summary line on stdout still says what arrived.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TextIO

from hubkit.cli.data import STORE_HELP
from hubkit.cli.names import checking_symbols, dataset_named, store_for
from hubkit.cli.params import (
    EXIT_OK,
    CommandError,
    did_you_mean,
    duration_arg,
    parse_params,
    symbols_of,
)
from hubkit.cli.running import ErrorLog, RowCounter, wait

if TYPE_CHECKING:
    from hubkit import Catalog, Store

__all__ = ["STREAMED", "add_arguments", "run"]

#: Dataset names whose ``sync`` keeps a live WebSocket sink open (the others sync over REST).
STREAMED: Final = frozenset({"trades"})
_STREAM_PARAMS: Final = ("symbols", "symbol", "category")

# The shortest pause between two REST rounds, whatever --every says.
_MIN_EVERY_S: Final = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hubkit sync`` (``--for`` is checked after parsing, so that a typo
    such as ``--fro`` is reported as the unknown option it is)."""
    parser.add_argument("name", metavar="NAME", help="dataset name")
    parser.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="dataset parameters (or --key value)"
    )
    parser.add_argument(
        "--for",
        dest="duration",
        type=duration_arg,
        default=None,
        metavar="DURATION",
        help="required: how long to keep syncing: 10s, 5m, 1h30m ...",
    )
    parser.add_argument(
        "--every",
        type=duration_arg,
        default=None,
        metavar="INTERVAL",
        help="REST datasets: sync again at this interval (default: the dataset's "
        "freshness period, e.g. 1h for instruments, 15s for tickers)",
    )
    parser.add_argument("--store", default=None, help=STORE_HELP)


def _sync_stream(store: str, params: Mapping[str, Any], seconds: float) -> tuple[str, str | None]:
    """``sync trades``: a live WebSocket trades sink kept open for ``seconds``.

    Returns the summary line and, when data may be missing (a write failed) or the stream
    was down at the end, the reason to exit non-zero."""
    from hubkit import bybit

    symbols = symbols_of(params)
    if not symbols:
        raise CommandError("sync trades needs --symbols SYMBOL[,SYMBOL...]")
    category = str(params.get("category", "linear"))
    unknown = sorted(set(params) - set(_STREAM_PARAMS))
    if unknown:
        named = ", ".join(f"{u}{did_you_mean(u, _STREAM_PARAMS)}" for u in unknown)
        raise CommandError(
            f"unknown parameter(s) for trades: {named} (parameters: {', '.join(_STREAM_PARAMS)})"
        )
    counter = RowCounter()
    errors = ErrorLog()
    started = time.monotonic()
    with checking_symbols(
        params, store, lambda: bybit.open_trades(symbols, category, store=store)
    ) as sink:
        sink.set_error_handler(errors)
        with sink.subscribe(counter):
            wait(seconds)
        status = sink.status()
        name = sink.name
    elapsed = time.monotonic() - started
    rate = counter.rows / elapsed if elapsed > 0 else 0.0
    gaps = f", {counter.gaps} gaps" if counter.gaps else ""
    summary = (
        f"synced trades {','.join(symbols)} ({category}) for {elapsed:.1f} s: "
        f"{counter.rows} new trades ({rate:.1f}/s), table {name} has {status.rows} rows, "
        f"{status.reconnects} reconnects{gaps}, {len(errors.items)} errors"
    )
    lost = errors.lost
    if lost:
        return summary, f"{len(lost)} error(s) where data may be missing, the last: {lost[-1]}"
    if not status.connected:
        last = f": {errors.last}" if errors.last is not None else ""
        return summary, f"the stream was down at the end{last}"
    return summary, None


def _sync_once(catalog: Catalog, name: str, store: Store, params: Mapping[str, Any]) -> int:
    """One REST round through the catalog; returns the rows that answer ``params``.

    ``load`` returns stored rows with a ``StaleDataWarning`` when the remote cannot be
    reached: for a scheduled sync that is a failure."""
    from hubkit import StaleDataWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleDataWarning)
        try:
            return catalog.load(name, store=store, **params).height
        except StaleDataWarning as exc:
            raise CommandError(str(exc)) from None


def _sync_rest(
    catalog: Catalog,
    name: str,
    store: str,
    params: Mapping[str, Any],
    seconds: float,
    every: float | None,
) -> str:
    """Sync now, then every ``every`` seconds (default: the dataset's freshness period)
    until ``seconds`` have passed; returns the summary line."""
    import hubkit

    dataset = dataset_named(catalog, name)
    period = every if every is not None else dataset.stale_after.total_seconds()
    # The same dataset with no freshness period: each load syncs first, then records the
    # sync's time under the same parameters as `hubkit.load` would.
    always = hubkit.Catalog([dataclasses.replace(dataset, stale_after=timedelta(0))])
    table = dataset.table_name(dataset.resolve_params(params)) or dataset.spec().table
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    with hubkit.Store(store) as st:
        while True:
            rows = checking_symbols(params, store, lambda: _sync_once(always, name, st, params))
            rounds += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait(min(max(period, _MIN_EVERY_S), left))
            if time.monotonic() >= deadline:
                break
    elapsed = time.monotonic() - started
    return (
        f"synced {name} {rounds} time(s) in {elapsed:.1f} s "
        f"(every {period:g} s): {rows} rows in table {table}"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Keep a dataset syncing for ``--for`` and print a one-line summary; fail (exit 1) as
    the module docstring says."""
    import hubkit

    params = parse_params(args.params)
    store = store_for(args.store, create=True)
    failure: str | None = None
    if args.name in STREAMED:
        summary, failure = _sync_stream(store, params, args.duration)
    else:
        catalog = hubkit.default_catalog()
        summary = _sync_rest(catalog, args.name, store, params, args.duration, args.every)
    print(summary, file=out, flush=True)
    if failure is not None:
        raise CommandError(failure)
    return EXIT_OK
