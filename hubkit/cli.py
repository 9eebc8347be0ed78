"""The ``hubkit`` command line: a demo, loads, scheduled syncs, a simulator and store status.

::

    hubkit demo [--seconds 5] [--store PATH]        # simulator + instruments + live trades
    hubkit load instruments [category=linear] [--out instruments.parquet]
    hubkit sync trades --symbols BTCUSDT,ETHUSDT --for 10m     # for cron / scheduled runs
    hubkit simulate [--port 9000]                    # a ByBit simulator until Ctrl-C
    hubkit status [--store PATH]                     # tables, rows, last sync, pending pushes

(``python -m hubkit ...`` is the same.) Dataset parameters are given as ``key=value`` words
or as options (``--symbols BTCUSDT,ETHUSDT``, ``--symbol=BTCUSDT``); a value with commas is
a list. ``--store`` takes a file path or a SQLAlchemy URL; the default is
``$HUBKIT_HOME/hubkit.db`` (``HUBKIT_HOME`` defaults to ``~/.cache/hubkit``). ByBit is
reached at ``$HUBKIT_BYBIT_REST_URL`` / ``$HUBKIT_BYBIT_WS_URL`` (default: mainnet).

What it promises: exit status 0 on success, 1 when the work failed (remote unreachable,
store error, bad parameter), 2 for a usage error, 130 when interrupted; a failure prints one
line ``hubkit <command>: error: <reason>`` on stderr and no traceback (``--debug`` shows it).
Summaries go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import polars as pl

    from hubkit.catalog import Dataset
    from hubkit.types import Change

__all__ = [
    "CommandError",
    "StoreTable",
    "build_parser",
    "main",
    "parse_duration",
    "parse_params",
    "read_store_tables",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

#: Dataset names whose ``sync`` keeps a live WebSocket sink open (the others sync over REST).
STREAMED: Final = frozenset({"trades"})

_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|min|sec|s|m|h|d)?", re.IGNORECASE)
_UNIT_SECONDS: Final = MappingProxyType(
    {
        "ms": 0.001,
        "s": 1.0,
        "sec": 1.0,
        "m": 60.0,
        "min": 60.0,
        "h": 3600.0,
        "d": 86400.0,
    }
)


class CommandError(Exception):
    """A failure the command reports as one line (exit status 1)."""


# -- small parsers -----------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"10s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"2d"`` or a bare
    number of seconds (``"7.5"``). Raises ``ValueError`` for anything else or a value <= 0."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration")
    total = 0.0
    pos = 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        number, unit = match.groups()
        if unit is None and (match.start() != 0 or match.end() != len(cleaned)):
            raise ValueError(f"invalid duration {text!r}: every part needs a unit")
        total += float(number) * _UNIT_SECONDS[(unit or "s").lower()]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"invalid duration {text!r} (examples: 10s, 5m, 1h30m, 250ms)")
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be positive")
    return total


def _param_value(text: str) -> str | list[str]:
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def parse_params(words: Sequence[str]) -> dict[str, Any]:
    """Dataset parameters from ``key=value`` words and ``--key value`` / ``--key=value``
    options. Dashes in keys become underscores; a value with commas becomes a list of
    strings; values stay text otherwise (the dataset converts them). A repeated key keeps
    its last value. Raises ``ValueError`` for a word that is neither form."""
    params: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--"):
            body = word[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i < len(words) and not words[i].startswith("--"):
                key, value = body, words[i]
                i += 1
            else:
                raise ValueError(f"option {word} needs a value (e.g. {word} VALUE)")
        elif "=" in word and not word.startswith("="):
            key, value = word.split("=", 1)
        else:
            raise ValueError(f"unexpected argument {word!r}; parameters look like key=value")
        key = key.strip().replace("-", "_")
        if not key.isidentifier():
            raise ValueError(f"invalid parameter name {key!r}")
        params[key] = _param_value(value)
    return params


def _symbols(params: Mapping[str, Any]) -> list[str]:
    raw = params.get("symbols", params.get("symbol"))
    if raw is None:
        return []
    names = [raw] if isinstance(raw, str) else list(raw)
    return [str(n).strip().upper() for n in names if str(n).strip()]


# -- the store, read-only ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreTable:
    """One hubkit table of a store, as ``hubkit status`` lists it."""

    name: str
    rows: int | None  # None when the table named in the sync state is missing
    last_sync: datetime | None
    pending: int
    cursor: str | None


def _sqlite_file(url: str) -> Path | None:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _store_url(store: str | None) -> str:
    from hubkit.store import Store, default_store_url

    if store is None:
        return default_store_url()
    # Store computes the canonical URL of a path (absolute, SQLite) without connecting.
    return Store(store).url


def read_store_tables(store: str | None) -> tuple[str, list[StoreTable]]:
    """The store's URL and its hubkit tables (those with a sync-state row), sorted by name.

    Read-only: nothing is created. Raises ``CommandError`` when a SQLite file does not exist.
    """
    import sqlalchemy as sa

    from hubkit.store import OUTBOX_TABLE, STATE_TABLE

    url = _store_url(store)
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        raise CommandError(f"no store at {path}")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if STATE_TABLE not in names:
                return url, []
            pending: dict[str, int] = {}
            if OUTBOX_TABLE in names:
                outbox = sa.table(OUTBOX_TABLE, sa.column("sink"))
                query = sa.select(outbox.c.sink, sa.func.count()).group_by(outbox.c.sink)
                pending = {str(sink): int(n) for sink, n in conn.execute(query)}
            state = sa.table(
                STATE_TABLE, sa.column("sink"), sa.column("cursor"), sa.column("last_sync")
            )
            tables: list[StoreTable] = []
            for sink, cursor, last_sync in conn.execute(
                sa.select(state.c.sink, state.c.cursor, state.c.last_sync)
            ):
                name = str(sink)
                rows: int | None = None
                if name in names:
                    count = sa.select(sa.func.count()).select_from(sa.table(name))
                    rows = int(conn.execute(count).scalar_one())
                synced = (
                    None
                    if last_sync is None
                    else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(last_sync))
                )
                tables.append(StoreTable(name, rows, synced, pending.get(name, 0), cursor))
    except sa.exc.SQLAlchemyError as exc:
        raise CommandError(f"cannot read store {url}: {_first_line(exc)}") from exc
    finally:
        engine.dispose()
    return url, sorted(tables, key=lambda t: t.name)


# -- output --------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """One line saying why a command failed."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, CommandError | ValueError | OSError):
        return _first_line(exc)
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def _age(moment: datetime | None, now: datetime | None = None) -> str:
    from hubkit.status import humanize_age

    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return humanize_age(max(0.0, seconds))


def _store_tables_text(tables: Sequence[StoreTable]) -> str:
    now = datetime.now(UTC)
    rows = [
        (
            t.name,
            "missing" if t.rows is None else t.rows,
            "never" if t.last_sync is None else t.last_sync.strftime("%Y-%m-%d %H:%M:%S UTC"),
            _age(t.last_sync, now),
            t.pending,
        )
        for t in tables
    ]
    return _table(("table", "rows", "last sync", "age", "pending pushes"), rows)


def _location(url: str) -> str:
    path = _sqlite_file(url)
    return str(path) if path is not None else url


# -- running with a deadline -------------------------------------------------------------------


@contextlib.contextmanager
def _signals_as_interrupt(*signals: signal.Signals) -> Iterator[None]:
    """Raise ``KeyboardInterrupt`` in the main thread on these signals (SIGTERM is what
    schedulers send to stop a job; SIGINT is ignored in background jobs of a script unless
    a handler is installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except (ValueError, OSError):  # not allowed here (an embedding interpreter)
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _wait(seconds: float) -> None:
    """Sleep ``seconds`` (``math.inf``: until interrupted) in short steps, so that Ctrl-C and
    SIGTERM are handled promptly on every platform."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


class _Counter:
    """Counts the rows of REMOTE upserts a sink reports (its handler runs on hubkit's loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.by_symbol: dict[str, int] = {}
        self.gaps = 0

    def __call__(self, change: Change) -> None:
        from hubkit.types import Op, Source

        if change.op is Op.GAP:
            with self._lock:
                self.gaps += 1
            return
        if change.source is not Source.REMOTE or change.op is not Op.UPSERT:
            return
        frame = change.frame
        counts: dict[str, int] = {}
        if "symbol" in frame.columns:
            for symbol, n in frame.get_column("symbol").value_counts().iter_rows():
                counts[str(symbol)] = int(n)
        with self._lock:
            self.rows += frame.height
            for symbol, n in counts.items():
                self.by_symbol[symbol] = self.by_symbol.get(symbol, 0) + n


class _Errors:
    """Collects the errors a sink hands to its error handler (background sync failures)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[str] = []

    def __call__(self, exc: BaseException) -> None:
        with self._lock:
            self.items.append(f"{type(exc).__name__}: {_first_line(exc)}")

    @property
    def last(self) -> str | None:
        with self._lock:
            return self.items[-1] if self.items else None


# -- commands ----------------------------------------------------------------------------------


def _demo_store(explicit: str | None) -> tuple[str, Path | None]:
    if explicit is not None:
        return explicit, None
    base = Path(os.environ.get("HUBKIT_HOME") or Path.cwd()).expanduser()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = base / f"hubkit-demo-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = base / f"hubkit-demo-{stamp}-{n}"
    folder.mkdir(parents=True)
    return str(folder / "hubkit.db"), folder


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Simulator on loopback -> instruments sink + live trades sink -> summary."""
    from hubkit import bybit
    from hubkit.testing import BybitSimulator

    symbols = _symbols({"symbols": _param_value(args.symbols)}) or ["BTCUSDT", "ETHUSDT"]
    store, folder = _demo_store(args.store)
    counter = _Counter()
    errors = _Errors()
    sim = BybitSimulator(
        seed=args.seed,
        trades_per_second=args.trades_per_second,
        symbols={"linear": symbols},
        history_seconds=5.0,
    )
    with sim:
        print(f"ByBit simulator on {sim.rest_url} (WebSocket {sim.ws_url})", file=out, flush=True)
        print(f"store: {store}", file=out, flush=True)
        provider = bybit.InstrumentProvider(store=store, rest_url=sim.rest_url)
        try:
            provider.sink.set_error_handler(errors)
            trades = bybit.open_trades(
                symbols, "linear", store=store, rest_url=sim.rest_url, ws_url=sim.ws_url
            )
            try:
                trades.set_error_handler(errors)
                started = time.monotonic()
                with trades.subscribe(counter):
                    print(
                        f"receiving live trades of {', '.join(symbols)} for {args.seconds:g} s ...",
                        file=out,
                        flush=True,
                    )
                    _wait(args.seconds)
                elapsed = time.monotonic() - started
                trade_status = trades.status()
            finally:
                trades.close()
            instruments = provider.instruments()
        finally:
            provider.close()
    url, tables = read_store_tables(store)
    print("", file=out)
    print(_store_tables_text(tables), file=out)
    print("", file=out)
    per_category = instruments.group_by("category").len().sort("category")
    print(
        _table(
            ("category", "instruments"),
            [(str(c), int(n)) for c, n in per_category.iter_rows()],
        ),
        file=out,
    )
    print("", file=out)
    rate = counter.rows / elapsed if elapsed > 0 else 0.0
    rows = [
        (s, counter.by_symbol.get(s, 0), round(counter.by_symbol.get(s, 0) / elapsed, 1))
        for s in symbols
    ]
    print(_table(("symbol", "trades received", "trades/s"), rows), file=out)
    print("", file=out)
    print(
        f"{counter.rows} live trades in {elapsed:.1f} s ({rate:.1f} trades/s), "
        f"{trade_status.reconnects} reconnects, {len(errors.items)} errors",
        file=out,
    )
    where = folder if folder is not None else _location(url)
    print(f"data: {where}", file=out)
    print(f"next: hubkit status --store {store}", file=out)
    if counter.rows == 0:
        raise CommandError("no live trades arrived" + (f" ({errors.last})" if errors.last else ""))
    return EXIT_OK


def _open_catalog() -> Any:
    from hubkit.catalog import default_catalog

    return default_catalog()


def _frame_text(frame: pl.DataFrame, rows: int) -> str:
    import polars as pl

    with pl.Config(tbl_rows=rows, tbl_cols=-1, tbl_width_chars=160, fmt_str_lengths=40):
        return repr(frame.head(rows))


def _write_frame(frame: pl.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    else:
        raise CommandError(f"--out must end with .parquet or .csv, not {path.name!r}")


def _load_frame(catalog: Any, name: str, store: str | None, params: dict[str, Any]) -> pl.DataFrame:
    """``load(name, **params)``; ``symbols=A,B`` loads ``symbol=A`` and ``symbol=B`` and
    stacks the frames (the ByBit trade datasets take one symbol per load)."""
    import polars as pl

    from hubkit.catalog import load

    if "symbols" not in params:
        return load(name, catalog=catalog, store=store, **params)
    rest = {k: v for k, v in params.items() if k not in ("symbols", "symbol")}
    frames = [
        load(name, catalog=catalog, store=store, symbol=symbol, **rest)
        for symbol in _symbols(params)
    ]
    if not frames:
        raise CommandError("--symbols names no symbol")
    return pl.concat(frames, how="vertical")


def cmd_load(args: argparse.Namespace, out: TextIO) -> int:
    """``hubkit.load(NAME, **params)`` -> print the head, or write ``--out``."""
    params = parse_params(args.params)
    catalog = _open_catalog()
    if args.name not in catalog:
        raise CommandError(f"unknown dataset {args.name!r} (known: {', '.join(catalog.names())})")
    frame = _load_frame(catalog, args.name, args.store, params)
    if args.out is not None:
        path = Path(args.out).expanduser()
        if path.suffix.lower() not in (".parquet", ".csv"):
            raise CommandError(f"--out must end with .parquet or .csv, not {path.name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_frame(frame, path)
        print(f"wrote {frame.height} rows x {frame.width} columns to {path}", file=out)
        return EXIT_OK
    print(_frame_text(frame, args.rows), file=out)
    print(f"{frame.height} rows x {frame.width} columns", file=out)
    return EXIT_OK


def _sync_stream(
    args: argparse.Namespace, params: dict[str, Any], seconds: float
) -> tuple[str, str | None]:
    """``sync trades``: a live WebSocket trades sink kept open for ``seconds``.

    Returns the summary line and, when the stream was down at the end (the rows that did
    arrive are stored), the reason to exit non-zero."""
    from hubkit import bybit

    symbols = _symbols(params)
    if not symbols:
        raise CommandError("sync trades needs --symbols SYMBOL[,SYMBOL...]")
    category = str(params.get("category", "linear"))
    unknown = sorted(set(params) - {"symbol", "symbols", "category"})
    if unknown:
        raise CommandError(f"unknown parameter(s) for trades: {', '.join(unknown)}")
    counter = _Counter()
    errors = _Errors()
    started = time.monotonic()
    sink = bybit.open_trades(symbols, category, store=args.store)
    try:
        sink.set_error_handler(errors)
        with sink.subscribe(counter):
            _wait(seconds)
        status = sink.status()
    finally:
        sink.close()
    elapsed = time.monotonic() - started
    rate = counter.rows / elapsed if elapsed > 0 else 0.0
    gaps = f", {counter.gaps} gaps" if counter.gaps else ""
    summary = (
        f"synced trades {','.join(symbols)} ({category}) for {elapsed:.1f} s: "
        f"{counter.rows} new trades ({rate:.1f}/s), table {sink.name} has {status.rows} rows, "
        f"{status.reconnects} reconnects{gaps}, {len(errors.items)} errors"
    )
    failure = None
    if not status.connected:
        failure = "the stream was down at the end" + (
            f": {errors.last}" if errors.last is not None else ""
        )
    return summary, failure


def _sync_rest(
    args: argparse.Namespace, dataset: Dataset, params: dict[str, Any], seconds: float
) -> str:
    """Other datasets: sync now, then every ``--every`` (default: the dataset's freshness
    period ``stale_after``) until ``seconds`` have passed."""
    from hubkit.bridge import run
    from hubkit.store import Store

    prepared = dataset.resolve_params(params)
    every = args.every if args.every is not None else dataset.stale_after.total_seconds()
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    with Store(args.store) as store:
        table = store.table(dataset.spec(), name=dataset.table_name(prepared))
        while True:
            run(_sync_dataset_once(dataset, prepared, table))
            rounds += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _wait(min(max(every, 0.1), left))
            if time.monotonic() >= deadline:
                break
        rows = table.count()
        name = table.name
    elapsed = time.monotonic() - started
    return (
        f"synced {dataset.name} {rounds} time(s) in {elapsed:.1f} s "
        f"(every {every:g} s): table {name} has {rows} rows"
    )


async def _sync_dataset_once(dataset: Dataset, params: Mapping[str, Any], table: Any) -> None:
    from hubkit.catalog import SyncRequest

    await dataset.sync(SyncRequest(dataset, params, table))


def cmd_sync(args: argparse.Namespace, out: TextIO) -> int:
    """Keep a dataset syncing for ``--for`` and print a one-line summary; fail (exit 1) when
    it could not start, a REST sync failed, or the stream was down at the end."""
    params = parse_params(args.params)
    seconds = args.duration
    failure: str | None = None
    if args.name in STREAMED:
        summary, failure = _sync_stream(args, params, seconds)
    else:
        catalog = _open_catalog()
        if args.name not in catalog:
            known = ", ".join(catalog.names())
            raise CommandError(f"unknown dataset {args.name!r} (known: {known})")
        summary = _sync_rest(args, catalog[args.name], params, seconds)
    print(summary, file=out, flush=True)
    if failure is not None:
        raise CommandError(failure)
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    """Run a ByBit simulator in the foreground until Ctrl-C / SIGTERM."""
    from hubkit.testing import BybitSimulator

    symbols = _symbols({"symbols": _param_value(args.symbols)}) if args.symbols else None
    sim = BybitSimulator(
        seed=args.seed,
        port=args.port,
        trades_per_second=args.trades_per_second,
        symbols={"linear": symbols} if symbols else None,
        time_scale=args.time_scale,
    )
    sim.start()
    try:
        print(f"ByBit v5 simulator (seed {args.seed}) serving on 127.0.0.1", file=out)
        print(f"rest_url={sim.rest_url}", file=out)
        print(f"ws_url={sim.ws_url}", file=out)
        print("point hubkit at it (in another shell):", file=out)
        print(f"  export HUBKIT_BYBIT_REST_URL={sim.rest_url}", file=out)
        print(f"  export HUBKIT_BYBIT_WS_URL={sim.ws_url}", file=out)
        print("press Ctrl-C to stop", file=out, flush=True)
        try:
            _wait(math.inf)
        except KeyboardInterrupt:
            print("stopping", file=out, flush=True)
    finally:
        sim.stop()
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """List the store's tables with rows, last sync and pending pushes."""
    url, tables = read_store_tables(args.store)
    print(f"store: {_location(url)}", file=out)
    if not tables:
        print("no hubkit tables yet", file=out)
        return EXIT_OK
    print(_store_tables_text(tables), file=out)
    return EXIT_OK


# -- the parser --------------------------------------------------------------------------------


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


_EPILOG: Final = """\
environment:
  HUBKIT_HOME             default store folder (default ~/.cache/hubkit)
  HUBKIT_BYBIT_REST_URL   ByBit REST base URL (default https://api.bybit.com)
  HUBKIT_BYBIT_WS_URL     ByBit public WebSocket base (default wss://stream.bybit.com/v5/public)

exit status: 0 ok, 1 failed (one line on stderr), 2 usage error, 130 interrupted
"""

_STORE_HELP: Final = "store file or SQLAlchemy URL (default: $HUBKIT_HOME/hubkit.db)"


def build_parser() -> argparse.ArgumentParser:
    """The ``hubkit`` argument parser (sub-commands demo, load, sync, simulate, status)."""
    from hubkit import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="hubkit",
        description="hubkit: keep ByBit market data (or any dataclass entity) in sync\n"
        "between a remote, SQLite and a Polars frame.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"hubkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="run a simulator, an instruments sink and a live trades sink; print a summary",
        description="Start a ByBit simulator on 127.0.0.1, keep an instruments sink and a\n"
        "live WebSocket trades sink running for a few seconds, then print rows per table,\n"
        "trades/s received, instruments per category and where the data is.\n"
        "Never reaches the internet.",
        formatter_class=fmt,
    )
    demo.add_argument("--seconds", type=_positive_float, default=5.0, help="default: 5")
    demo.add_argument(
        "--store",
        default=None,
        help="store file or URL (default: a new folder hubkit-demo-<time> under $HUBKIT_HOME, "
        "or the current directory when HUBKIT_HOME is not set)",
    )
    demo.add_argument("--symbols", default="BTCUSDT,ETHUSDT", help="default: BTCUSDT,ETHUSDT")
    demo.add_argument(
        "--trades-per-second", type=_positive_float, default=20.0, help="per symbol; default 20"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    load = sub.add_parser(
        "load",
        help="load a dataset (synced first if stale) and print it or write a file",
        description="hubkit.load(NAME, **params): the stored rows, synced first when older\n"
        "than the dataset's freshness rule. Datasets: instruments, trades, tickers, klines.",
        epilog="examples:\n  hubkit load instruments category=linear\n"
        "  hubkit load klines --symbol BTCUSDT --interval 60 --start 2024-01-01 --out k.parquet\n"
        "  hubkit load trades --symbols BTCUSDT,ETHUSDT --out trades.csv",
        formatter_class=fmt,
    )
    load.add_argument("name", metavar="NAME", help="dataset name")
    load.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="dataset parameters (or --key value)"
    )
    load.add_argument("--out", default=None, help="write the frame to FILE.parquet or FILE.csv")
    load.add_argument("--store", default=None, help=_STORE_HELP)
    load.add_argument("--rows", type=int, default=10, help="rows to print (default 10)")
    load.set_defaults(func=cmd_load)

    sync = sub.add_parser(
        "sync",
        help="keep a dataset syncing for a duration (for cron and scheduled runs)",
        description="Keep a dataset in sync for DURATION, then print a one-line summary.\n"
        "trades: a live WebSocket sink (gaps filled over REST). Other datasets: synced\n"
        "over REST at the start, then every --every. Exits 1 with a one-line reason when\n"
        "the remote cannot be reached or the sync fails.",
        epilog="examples:\n  hubkit sync trades --symbols BTCUSDT,ETHUSDT --for 10m\n"
        "  hubkit sync instruments --for 1h --every 5m",
        formatter_class=fmt,
    )
    sync.add_argument("name", metavar="NAME", help="dataset name")
    sync.add_argument(
        "params", nargs="*", metavar="KEY=VALUE", help="dataset parameters (or --key value)"
    )
    sync.add_argument(
        "--for",
        dest="duration",
        type=_duration_arg,
        required=True,
        metavar="DURATION",
        help="how long to keep syncing: 10s, 5m, 1h30m ...",
    )
    sync.add_argument(
        "--every",
        type=_duration_arg,
        default=None,
        metavar="INTERVAL",
        help="REST datasets: sync again at this interval (default: the dataset's "
        "freshness period, e.g. 1h for instruments, 15s for tickers)",
    )
    sync.add_argument("--store", default=None, help=_STORE_HELP)
    sync.set_defaults(func=cmd_sync)

    simulate = sub.add_parser(
        "simulate",
        help="run a ByBit v5 simulator (REST + WebSocket) until Ctrl-C",
        description="Serve a ByBit v5 compatible public API on 127.0.0.1 until Ctrl-C or\n"
        "SIGTERM; prints its URLs and the environment lines that point hubkit at it.",
        formatter_class=fmt,
    )
    simulate.add_argument("--port", type=int, default=9000, help="TCP port (0: any free; 9000)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--trades-per-second", type=_positive_float, default=10.0, help="per symbol; default 10"
    )
    simulate.add_argument(
        "--symbols",
        default=None,
        help="linear symbols trading from the start (default: "
        "BTCUSDT,ETHUSDT; others start when first asked for)",
    )
    simulate.add_argument(
        "--time-scale", type=_positive_float, default=1.0, help="simulated ms per wall ms"
    )
    simulate.set_defaults(func=cmd_simulate)

    status = sub.add_parser(
        "status",
        help="list the store's tables: rows, last sync, pending pushes",
        description="List the hubkit tables of a store with their row counts, last\n"
        "successful sync and pending outbox entries. Read-only.",
        formatter_class=fmt,
    )
    status.add_argument("--store", default=None, help=_STORE_HELP)
    status.set_defaults(func=cmd_status)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse, letting ``load``/``sync`` take dataset parameters as unknown ``--key`` options."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "command", None) not in ("load", "sync"):
            parser.parse_args(argv)  # reports the unrecognised arguments and exits 2
        args.params = [*args.params, *extra]
    return args


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
    parser = build_parser()
    args = _parse(parser, list(sys.argv[1:] if argv is None else argv))
    command: Callable[[argparse.Namespace, TextIO], int] = args.func
    with _configured_logging(args.debug), warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            handled = (signal.SIGTERM, signal.SIGINT) if args.command == "simulate" else ()
            with _signals_as_interrupt(signal.SIGTERM, *handled):
                return command(args, sys.stdout)
        except KeyboardInterrupt:
            print(f"hubkit {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:
            if args.debug:
                raise
            print(f"hubkit {args.command}: error: {_reason(exc)}", file=sys.stderr)
            return EXIT_FAILED
