"""The ``hubkit`` program: the table of sub-commands, the argument parser and ``main``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

from hubkit.cli import collect, data, demo, migrate, simulate, sync
from hubkit.cli.output import reason
from hubkit.cli.params import EXIT_FAILED, EXIT_INTERRUPTED, did_you_mean, is_typo
from hubkit.cli.running import signals_as_interrupt

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One sub-command: its help texts, how it adds its arguments and how it runs.

    ``run(args, out)`` prints to ``out`` and returns the exit status, or raises (one line on
    stderr, exit 1). ``takes_params``: unknown ``--key value`` options are dataset parameters
    (``load``, ``sync``). ``required``: options checked after parsing, so that a mistyped one
    is reported as unknown rather than as missing.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, TextIO], int]
    epilog: str = ""
    takes_params: bool = False
    required: tuple[str, ...] = ()
    usage: str | None = None  # when argparse's own would show a required option as optional


COMMANDS: Final = (
    Command(
        "demo",
        help="run a simulator, an instruments sink and a live trades sink; print a summary",
        description="Start a ByBit simulator on 127.0.0.1, keep an instruments sink and a\n"
        "live WebSocket trades sink running for a few seconds, then print rows per table,\n"
        "trades/s received, instruments per category and where the data is.\n"
        "Never reaches the internet.",
        add_arguments=demo.add_arguments,
        run=demo.run,
    ),
    Command(
        "load",
        help="load a dataset (synced first if stale) and print it or write a file",
        description="hubkit.load(NAME, **params): the stored rows, synced first when older\n"
        "than the dataset's freshness rule. Datasets: instruments, trades, tickers, klines.",
        epilog="examples:\n  hubkit load instruments category=linear\n"
        "  hubkit load instruments --columns symbol,status,tick_size --rows 20\n"
        "  hubkit load klines --symbol BTCUSDT --interval 60 --start 2024-01-01 --out k.parquet\n"
        "  hubkit load trades --symbols BTCUSDT,ETHUSDT --out trades.csv",
        add_arguments=data.add_load_arguments,
        run=data.run_load,
        takes_params=True,
    ),
    Command(
        "sync",
        help="keep a dataset syncing for a duration (for cron and scheduled runs)",
        description="Keep a dataset in sync for DURATION, then print a one-line summary.\n"
        "trades: a live WebSocket sink (gaps filled over REST). Other datasets: synced\n"
        "over REST at the start, then every --every; each sync is recorded as load's are.\n"
        "Exits 1 with a one-line reason when the remote cannot be reached, a write fails\n"
        "or the stream is down at the end.",
        epilog="examples:\n  hubkit sync trades --symbols BTCUSDT,ETHUSDT --for 10m\n"
        "  hubkit sync instruments --for 1h --every 5m",
        add_arguments=sync.add_arguments,
        run=sync.run,
        takes_params=True,
        required=("--for",),
        usage="%(prog)s [-h] --for DURATION [--every INTERVAL] [--store STORE]\n"
        "                   NAME [KEY=VALUE ...]",
    ),
    Command(
        "collect",
        help="run a collector from a TOML file until SIGTERM/SIGINT",
        description="Collect the datasets a TOML file names into its store: live trades,\n"
        "tickers, instruments and klines synced on a schedule. Logs one plain line per\n"
        "event on stderr, writes a heartbeat to the store's collectors table (see\n"
        "`hubkit status --store`), stops cleanly on SIGTERM/SIGINT (exit 0) and resumes\n"
        "where it stopped. A bad file: exit 2 with the key that is wrong.",
        epilog="example file:\n"
        '  store = "sqlite:///market.db"      # or postgresql+psycopg://user@host/db\n'
        "  [trades]\n"
        '  symbols = ["BTCUSDT", "ETHUSDT"]\n'
        "  [tickers]\n"
        '  every = "15s"\n'
        "  [instruments]\n"
        '  every = "1h"\n'
        "  [klines]\n"
        '  symbols = ["BTCUSDT"]\n'
        '  interval = "60"\n'
        '  start = "2024-01-01"',
        add_arguments=collect.add_arguments,
        run=collect.run,
    ),
    Command(
        "simulate",
        help="run a ByBit v5 simulator (REST + WebSocket) until Ctrl-C",
        description="Serve a ByBit v5 compatible public API on 127.0.0.1 until Ctrl-C (exit\n"
        "status 130) or SIGTERM (exit status 0); prints its URLs and the environment lines\n"
        "that point hubkit at it.",
        add_arguments=simulate.add_arguments,
        run=simulate.run,
    ),
    Command(
        "status",
        help="list the store's tables (rows, last sync, pending pushes) and collectors",
        description="List the hubkit tables of a store with their row counts, last\n"
        "successful sync and pending outbox entries, then the collectors writing to it\n"
        "and their health (a stale heartbeat: not running). Read-only.",
        add_arguments=data.add_status_arguments,
        run=data.run_status,
    ),
    Command(
        "migrate",
        help="rewrite a table for a changed dataclass (keeping a copy of the old table)",
        description="Rewrite TABLE of STORE, in one transaction, for the definition that\n"
        "hubkit refused to apply in place when the table was last opened; the old table is\n"
        "kept as a copy until you drop it. Also drops a kept column or a kept copy.",
        epilog="examples:\n  hubkit migrate data.db trade\n"
        "  hubkit migrate data.db trade --drop-column old_field\n"
        "  hubkit migrate data.db trade --history",
        add_arguments=migrate.add_arguments,
        run=migrate.run,
    ),
)

_BY_NAME: Final = {c.name: c for c in COMMANDS}

_EPILOG: Final = """\
environment:
  HUBKIT_HOME             default store folder (default: the platform's cache folder,
                          $XDG_CACHE_HOME/hubkit or ~/.cache/hubkit on Linux)
  HUBKIT_BYBIT_REST_URL   ByBit REST base URL (default https://api.bybit.com)
  HUBKIT_BYBIT_WS_URL     ByBit public WebSocket base (default wss://stream.bybit.com/v5/public)

exit status: 0 ok, 1 failed (one line on stderr), 2 usage error, 130 interrupted
"""


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from hubkit import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    # allow_abbrev=False: argparse would take "--fo" for "--for"; a shortened or mistyped
    # option is reported by name instead (see _parse).
    parser = argparse.ArgumentParser(
        prog="hubkit",
        description="hubkit: keep ByBit market data (or any dataclass entity) in sync\n"
        "between a remote, SQLite and a Polars frame.",
        epilog=_EPILOG,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"hubkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers: dict[str, argparse.ArgumentParser] = {}
    for command in COMMANDS:
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog or None,
            usage=command.usage,
            formatter_class=fmt,
            allow_abbrev=False,
        )
        command.add_arguments(child)
        parsers[command.name] = child
    return parser, parsers


def build_parser() -> argparse.ArgumentParser:
    """The ``hubkit`` argument parser (sub-commands demo, load, sync, collect, simulate,
    status, migrate)."""
    return _build()[0]


def _options(*parsers: argparse.ArgumentParser) -> list[str]:
    """The long options the parsers define (argparse lists them only in ``_actions``)."""
    return [s for p in parsers for a in p._actions for s in a.option_strings if s.startswith("--")]


def _parse(
    parser: argparse.ArgumentParser,
    children: Mapping[str, argparse.ArgumentParser],
    argv: Sequence[str],
) -> argparse.Namespace:
    """Parse ``argv``. An unknown command is named with its close matches. ``load`` and
    ``sync`` take unknown ``--key value`` options as dataset parameters, unless the key is
    one slip away from one of the command's own options (``--fro`` for ``--for``). Any
    other unknown option is a usage error that names it and suggests the close matches
    (exit 2)."""
    word = next((w for w in argv if not w.startswith("-")), None)
    if word is not None and word not in _BY_NAME:
        names = list(_BY_NAME)
        parser.error(
            f"unknown command {word!r}{did_you_mean(word, names)} (commands: {', '.join(names)})"
        )
    args, extra = parser.parse_known_args(argv)
    command = _BY_NAME[args.command]
    child = children[command.name]
    options = _options(child, parser)
    for word in extra:
        if not word.startswith("-"):
            if not command.takes_params:
                child.error(f"unexpected argument {word!r}")
            continue
        name = word.split("=", 1)[0]
        if not command.takes_params or any(is_typo(name, o) for o in options):
            child.error(f"unknown option {name}{did_you_mean(name, options)}")
    if command.takes_params:
        args.params = [*args.params, *extra]
    missing = [o for o in command.required if getattr(args, _dest(child, o)) is None]
    if missing:
        child.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def _dest(parser: argparse.ArgumentParser, option: str) -> str:
    return next(a.dest for a in parser._actions if option in a.option_strings)


@contextlib.contextmanager
def _configured_logging(debug: bool) -> Iterator[None]:
    """Send hubkit's log records to stderr for one command, then restore the logger as it was
    (``main`` may run inside a larger program or a test session)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hubkit: %(levelname)s: %(message)s"))
    root = logging.getLogger("hubkit")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.ERROR)
    root.propagate = False
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"hubkit: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``SystemExit`` from ``--help``/usage errors propagates as argparse raises it.
    """
    parser, children = _build()
    args = _parse(parser, children, list(sys.argv[1:] if argv is None else argv))
    command = _BY_NAME[args.command]
    with _configured_logging(args.debug), warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            # simulate runs until stopped: SIGINT too must end it cleanly in a background job
            handled = (signal.SIGTERM, signal.SIGINT) if command.name == "simulate" else ()
            with signals_as_interrupt(signal.SIGTERM, *handled):
                return command.run(args, sys.stdout)
        except KeyboardInterrupt:
            print(f"hubkit {command.name}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:
            if args.debug:
                raise
            print(f"hubkit {command.name}: error: {reason(exc)}", file=sys.stderr)
            return EXIT_FAILED
