"""The ``hubkit`` command line: a demo, loads, scheduled syncs, a collector, a simulator and
store status.

::

    hubkit demo [--seconds 5] [--store PATH]        # simulator + instruments + live trades
    hubkit load instruments [category=linear] [--columns A,B|all] [--out FILE.parquet]
    hubkit sync trades --symbols BTCUSDT,ETHUSDT --for 10m     # for cron / scheduled runs
    hubkit collect collector.toml                    # a collector until SIGTERM/SIGINT
    hubkit simulate [--port 9000]                    # a ByBit simulator until Ctrl-C
    hubkit status [--store PATH]                     # tables, rows, last sync, pending pushes,
                                                     # the collectors writing to the store

(``python -m hubkit ...`` is the same.) Dataset parameters are given as ``key=value`` words
or as options (``--symbols BTCUSDT,ETHUSDT``, ``--symbol=BTCUSDT``); a value with commas is
a list. ``--store`` takes a file path or a SQLAlchemy URL; the default is ``hubkit.db`` in
``hubkit.home.default_home()`` (``$HUBKIT_HOME``, else the platform's cache folder:
``$XDG_CACHE_HOME/hubkit``, ``~/.cache/hubkit`` on Linux). ByBit is
reached at ``$HUBKIT_BYBIT_REST_URL`` / ``$HUBKIT_BYBIT_WS_URL`` (default: mainnet).

What it promises: exit status 0 on success, 1 when the work failed (remote unreachable,
store error, bad parameter), 2 for a usage error (``collect``: a bad collector file), 130
when interrupted (``collect`` stops cleanly on SIGINT and SIGTERM: 0); a failure prints one
line ``hubkit <command>: error: <reason>`` on stderr and no traceback (``--debug`` shows it).
Summaries go to stdout. Options are never abbreviated: an unknown or mistyped option is
named, with the close matches (``--fro``: "did you mean --for?").

Layout: ``app`` (the table of sub-commands, the parser, ``main``), one module per group of
commands (``demo``, ``data``: load and status, ``sync``, ``collect``, ``simulate``), and their
helpers:
``params`` (words -> values, close matches; no I/O), ``names`` (the store, datasets and
symbols a command names), ``output`` (what is printed), ``running`` (signals, waiting,
counters of what sinks report).
"""

from __future__ import annotations

from hubkit.cli.app import main
from hubkit.cli.params import parse_duration

__all__ = ["main", "parse_duration"]
