"""A collector's TOML file, read into a ``Plan``: the store, the collector's name and the jobs.

Free of I/O: ``parse_plan(text, rules)`` turns the file's text into a frozen ``Plan`` or
raises ``ConfigError`` naming the key that is wrong. Which datasets exist and how each one
is collected comes from ``rules`` (one ``DatasetRule`` per dataset name), so this module
knows no exchange. The file::

    store = "sqlite:////var/lib/hubkit/market.db"   # a path or a SQLAlchemy URL (required)
    name = "bybit-linear"     # the collector's id in the status table (default: host/file)
    heartbeat = "10s"         # how often the collector writes its status (default 10s)
    log_level = "info"        # debug, info, warning, error (default info)

    [trades]                  # a live dataset: streamed while the collector runs
    symbols = ["BTCUSDT", "ETHUSDT"]

    [tickers]                 # a polled dataset: synced now, then every `every`
    every = "15s"

    [[klines]]                # [[name]] when a dataset is collected more than once
    symbols = ["BTCUSDT"]     # polled datasets with a `symbol` parameter: one job each
    interval = "60"
    start = "2024-01-01"
    every = "1m"

Every other key of a dataset's table is one of its parameters (checked by the rule's
``check``). Durations are numbers of seconds or text such as ``"15s"``, ``"5m"``, ``"1h30m"``.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from hubkit.errors import HubkitError

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "LOG_LEVELS",
    "ConfigError",
    "DatasetRule",
    "Job",
    "Plan",
    "parse_duration_value",
    "parse_plan",
]

DEFAULT_HEARTBEAT_S: Final = 10.0
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_SETTINGS: Final = ("store", "name", "heartbeat", "log_level")
_JOB_KEYS: Final = ("every", "symbols")

_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|sec|min|s|m|h|d)?", re.IGNORECASE)
_UNITS: Final = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
)


class ConfigError(HubkitError):
    """A collector file that cannot be used; ``key`` is the dotted key that is wrong
    (``"trades.symbols"``), or ``""`` when the file as a whole is (not TOML)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class DatasetRule:
    """How a dataset is collected. ``live``: streamed for as long as the collector runs
    (else polled every ``every``, default ``default_every`` seconds). ``check(params)``
    raises ``ValueError`` saying what is wrong with a job's parameters (the job keeps them
    as written); ``per_symbol``: ``symbols = [...]`` makes one polled job per symbol
    (``symbol=...``); a live dataset takes the whole list."""

    name: str
    live: bool = False
    default_every: float | None = None
    per_symbol: bool = False
    check: Callable[[Mapping[str, Any]], object] | None = None


@dataclass(frozen=True)
class Job:
    """One thing the collector does: stream ``dataset`` (``every is None``) or sync it with
    ``params`` every ``every`` seconds. ``key`` is where it came from in the file."""

    dataset: str
    params: Mapping[str, Any]
    every: float | None
    key: str

    @property
    def live(self) -> bool:
        return self.every is None

    def describe(self) -> str:
        """``"trades symbols=BTCUSDT,ETHUSDT"``, ``"tickers category=linear every 15s"``."""
        parts = [self.dataset]
        for name, value in self.params.items():
            if value is None:
                continue
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            parts.append(f"{name}={text}")
        if self.every is not None:
            parts.append(f"every {_seconds_text(self.every)}")
        return " ".join(parts)


@dataclass(frozen=True)
class Plan:
    """What a collector file asks for: ``store`` (URL or path), ``name`` (None: the runner
    picks ``host/file``), ``heartbeat`` seconds, ``log_level`` and the ``jobs`` in file order."""

    store: str
    name: str | None
    heartbeat: float
    log_level: str
    jobs: tuple[Job, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """What the collector collects, one ``Job.describe()`` per job, ``"; "``-separated."""
        return "; ".join(job.describe() for job in self.jobs)


def _seconds_text(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


def parse_duration_value(value: Any) -> float:
    """Seconds of a duration: a positive number, or text such as ``"15s"``, ``"250ms"``,
    ``"1h30m"``. ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 15s or 1h, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        seconds, pos = 0.0, 0
        for match in _PART.finditer(text):
            bare = match.group(2) is None  # a bare number only as the whole text
            if match.start() != pos or (bare and (pos != 0 or match.end() != len(text))):
                break
            seconds += float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"expected a duration such as 15s, 5m, 1h30m or 250ms, not {value!r}")
    else:
        raise ValueError(f"expected a duration such as 15s or 1h, not {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, not {value!r}")
    return seconds


def _close(word: str, options: Sequence[str]) -> str:
    found = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(found)}?)" if found else ""


def _text(doc: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = doc.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(key, f"expected non-empty text, not {value!r}")
    return value


def _symbols(value: Any, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
        raise ConfigError(key, f'expected a list of symbols such as ["BTCUSDT"], not {value!r}')
    if not items:
        raise ConfigError(key, "names no symbol")
    return [s.strip() for s in items]


def _jobs(rule: DatasetRule, table: Mapping[str, Any], key: str) -> list[Job]:
    params = {k: v for k, v in table.items() if k not in _JOB_KEYS}
    every: float | None = None
    if rule.live:
        if "every" in table:
            raise ConfigError(f"{key}.every", f"{rule.name} is streamed live; it takes no every")
    else:
        raw = table.get("every", rule.default_every)
        if raw is None:
            raise ConfigError(f"{key}.every", 'missing: how often to sync, e.g. every = "1h"')
        try:
            every = parse_duration_value(raw)
        except ValueError as exc:
            raise ConfigError(f"{key}.every", str(exc)) from None
    symbols = _symbols(table["symbols"], f"{key}.symbols") if "symbols" in table else None
    if symbols is not None and "symbol" in params:
        raise ConfigError(f"{key}.symbols", "give symbols or symbol, not both")
    if symbols is not None and not (rule.live or rule.per_symbol):
        raise ConfigError(f"{key}.symbols", f"{rule.name} takes no symbols")
    groups: list[dict[str, Any]]
    if symbols is None:
        groups = [params]
    elif rule.live:
        groups = [{"symbols": symbols, **params}]
    else:
        groups = [{**params, "symbol": s} for s in symbols]
    jobs = []
    for group in groups:
        if rule.check is not None:
            try:
                rule.check(group)
            except (ValueError, TypeError) as exc:
                raise ConfigError(key, str(exc)) from None
        jobs.append(Job(rule.name, MappingProxyType(dict(group)), every, key))
    return jobs


def parse_plan(text: str, rules: Mapping[str, DatasetRule]) -> Plan:
    """The ``Plan`` of a collector file's ``text`` (see the module docstring).

    ``rules``: the datasets that may be collected, by name. Raises ``ConfigError`` naming the
    key for text that is not TOML, a missing ``store``, an unknown key or dataset (with the
    close matches), a bad duration or log level, and parameters a dataset refuses.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not a valid TOML file: {exc}") from None
    known = [*_SETTINGS, *rules]
    for top in doc:
        if top not in known:
            raise ConfigError(
                top,
                f"unknown key{_close(top, known)}; settings: {', '.join(_SETTINGS)}; "
                f"datasets: {', '.join(rules)}",
            )
    store = _text(doc, "store")
    if store is None:
        raise ConfigError("store", 'missing: where to write, e.g. store = "sqlite:///data.db"')
    name = _text(doc, "name")
    level = _text(doc, "log_level", "info")
    assert level is not None
    if level.lower() not in LOG_LEVELS:
        raise ConfigError("log_level", f"expected one of {', '.join(LOG_LEVELS)}, not {level!r}")
    try:
        heartbeat = parse_duration_value(doc.get("heartbeat", DEFAULT_HEARTBEAT_S))
    except ValueError as exc:
        raise ConfigError("heartbeat", str(exc)) from None
    jobs: list[Job] = []
    for dataset, rule in rules.items():
        if dataset not in doc:
            continue
        value = doc[dataset]
        tables = value if isinstance(value, list) else [value]
        for i, table in enumerate(tables):
            key = dataset if not isinstance(value, list) else f"{dataset}[{i}]"
            if not isinstance(table, dict):
                raise ConfigError(key, f"expected a table ([{dataset}]), not {table!r}")
            jobs.extend(_jobs(rule, table, key))
    if not jobs:
        raise ConfigError(
            "", f"the file names no dataset to collect (datasets: {', '.join(rules)})"
        )
    return Plan(store.strip(), name, heartbeat, level.lower(), tuple(jobs))
