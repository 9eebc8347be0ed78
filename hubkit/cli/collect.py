"""``hubkit collect CONFIG.toml``: a long-running collector; and the collectors part of
``hubkit status``.

The file (see ``hubkit.collector.plan``) names the store and the datasets; ByBit's rules and
feeds are ``hubkit.bybit.collect``'s. Logs go to stderr, one line each:
``2026-01-02T03:04:05Z INFO message``. SIGTERM or SIGINT stops it cleanly (the sync in
progress finishes, live sinks close with their writes committed, the status row says
``stopped``): exit status 0; a second signal while it stops ends it at once (exit 130).
A bad file is a usage error (exit 2) naming the key; a failure while running exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from hubkit.cli.output import age_text, text_table
from hubkit.cli.params import EXIT_OK, EXIT_USAGE
from hubkit.cli.running import Interrupted

if TYPE_CHECKING:
    from hubkit.collector import Plan

__all__ = ["LOG_FORMAT", "add_arguments", "collectors_text", "run"]

#: The collector's log lines: UTC time, level, message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The argument of ``hubkit collect``: the collector file."""
    parser.add_argument("config", metavar="CONFIG.toml", help="the collector file (TOML)")


def _store_of(plan: Plan, config: Path) -> str:
    """The plan's store; a relative file path is relative to the collector file's folder."""
    if "://" in plan.store or Path(plan.store).expanduser().is_absolute():
        return plan.store
    return str((config.parent / plan.store).resolve())


@contextlib.contextmanager
def _plain_logging(level: str, debug: bool) -> Iterator[None]:
    """hubkit's log records as ``TIME LEVEL message`` lines on stderr, at ``level``."""
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger("hubkit")
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


@contextlib.contextmanager
def _stop_on(stop: threading.Event, *signals: signal.Signals) -> Iterator[None]:
    """Set ``stop`` on these signals (instead of interrupting whatever is running); a second
    one, while stopping, interrupts (``Interrupted``: exit 130 without the clean stop)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logging.getLogger("hubkit.collector").warning("%s again: stopping at once", name)
            raise Interrupted(signum)
        logging.getLogger("hubkit.collector").info("%s: stopping", name)
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Collect what the file says until SIGTERM/SIGINT (see the module docstring)."""
    import hubkit
    from hubkit.bybit.collect import bybit_collect_rules, open_bybit_feed
    from hubkit.collector import Collector, ConfigError, parse_plan

    config = Path(args.config).expanduser()
    catalog = hubkit.default_catalog()
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"hubkit collect: error: cannot read {config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = parse_plan(text, bybit_collect_rules(catalog))
    except ConfigError as exc:
        print(f"hubkit collect: error: {config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    name = plan.name or f"{socket.gethostname()}/{config.stem}"
    stop = threading.Event()
    with (
        _plain_logging(plan.log_level, args.debug),
        _stop_on(stop, signal.SIGTERM, signal.SIGINT),
        hubkit.Store(_store_of(plan, config)) as store,
    ):
        collector = Collector(plan, store, name, functools.partial(open_bybit_feed, catalog))
        try:
            collector.run(stop)
        finally:
            catalog.close()
    return EXIT_OK


def collectors_text(store: str) -> str:
    """The collectors of ``store`` as a table (id, health, host, pid, heartbeat age, rows,
    lag, errors, what it collects), then each one's last error; "" when none wrote there."""
    import hubkit
    from hubkit.collector import health, read_collectors

    with hubkit.Store(store) as st:
        records = read_collectors(st)
    if not records:
        return ""
    now = datetime.now(UTC)
    rows = [
        (
            r.id,
            health(r, now),
            r.host,
            r.pid,
            age_text(r.heartbeat, now),
            r.rows,
            "-" if r.lag is None else f"{r.lag:.2f}s",
            r.errors,
            r.collects,
        )
        for r in records
    ]
    headers = ("collector", "health", "host", "pid", "heartbeat", "rows", "lag", "errors")
    lines = [text_table((*headers, "collects"), rows)]
    lines += [f"{r.id}: last error: {r.last_error}" for r in records if r.last_error]
    return "\n".join(lines)
