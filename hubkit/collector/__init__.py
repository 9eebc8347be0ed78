"""A long-running collector: a TOML file says what to collect into which store.

Layers (none of them knows an exchange; ``hubkit.bybit.collect`` gives ByBit's rules and
feeds, ``hubkit collect`` puts them together):

- ``plan``: the file's text -> a frozen ``Plan`` of ``Job`` s (pure; ``ConfigError`` names
  the key that is wrong).
- ``runner``: ``Collector(plan, store, name, open_feed).run(stop)`` opens the feeds, syncs
  the polled ones on time, writes heartbeats and stops cleanly when ``stop`` is set.
- ``board``: the ``hubkit_collectors`` table (one row per collector: host, pid, what it
  collects, rows, lag, errors, heartbeat) written through the store, and ``health``.
"""

from __future__ import annotations

from hubkit.collector.board import (
    COLLECTORS_TABLE,
    CollectorBoard,
    CollectorRecord,
    health,
    read_collectors,
)
from hubkit.collector.plan import ConfigError, DatasetRule, Job, Plan, parse_plan
from hubkit.collector.runner import Collector, Feed, OpenFeed, first_line

__all__ = [
    "COLLECTORS_TABLE",
    "Collector",
    "CollectorBoard",
    "CollectorRecord",
    "ConfigError",
    "DatasetRule",
    "Feed",
    "Job",
    "OpenFeed",
    "Plan",
    "first_line",
    "health",
    "parse_plan",
    "read_collectors",
]
