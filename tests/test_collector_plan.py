"""Reading a collector file into a plan (no I/O): what each key becomes, and every mistake
named by its key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hubkit import default_catalog
from hubkit.bybit.collect import bybit_collect_rules
from hubkit.collector import ConfigError, DatasetRule, Plan, parse_plan
from hubkit.collector.plan import DEFAULT_HEARTBEAT_S, parse_duration_value
from hubkit.errors import HubkitError

RULES = bybit_collect_rules(default_catalog())

FULL = """
store = "postgresql+psycopg://collector@db/market"
name = "bybit-linear"
heartbeat = "5s"
log_level = "WARNING"

[trades]
symbols = ["BTCUSDT", "ETHUSDT"]

[tickers]
every = "15s"

[instruments]

[[klines]]
symbols = ["BTCUSDT", "ETHUSDT"]
interval = "60"
start = "2024-01-01"
every = "1m"

[[klines]]
symbol = "SOLUSDT"
interval = "D"
start = "2023-01-01"
"""


def _plan(text: str) -> Plan:
    return parse_plan(text, RULES)


def test_a_full_file_becomes_one_job_per_stream_and_per_polled_symbol() -> None:
    plan = _plan(FULL)
    assert (plan.store, plan.name, plan.heartbeat, plan.log_level) == (
        "postgresql+psycopg://collector@db/market",
        "bybit-linear",
        5.0,
        "warning",
    )
    jobs = [(j.dataset, dict(j.params), j.every, j.key) for j in plan.jobs]
    k60 = {"interval": "60", "start": "2024-01-01"}
    assert jobs == [
        ("trades", {"symbols": ["BTCUSDT", "ETHUSDT"]}, None, "trades"),
        ("tickers", {}, 15.0, "tickers"),
        ("instruments", {}, 3600.0, "instruments"),
        ("klines", {**k60, "symbol": "BTCUSDT"}, 60.0, "klines[0]"),
        ("klines", {**k60, "symbol": "ETHUSDT"}, 60.0, "klines[0]"),
        ("klines", {"symbol": "SOLUSDT", "interval": "D", "start": "2023-01-01"}, 60, "klines[1]"),
    ]  # fmt: skip
    assert plan.jobs[0].live and not plan.jobs[1].live
    assert plan.describe().startswith("trades symbols=BTCUSDT,ETHUSDT; tickers every 15s; ")


def test_defaults() -> None:
    plan = _plan('store = "data.db"\n[trades]\nsymbols = "BTCUSDT"\n')
    assert plan.name is None
    assert plan.heartbeat == DEFAULT_HEARTBEAT_S
    assert plan.log_level == "info"
    assert dict(plan.jobs[0].params) == {"symbols": ["BTCUSDT"]}


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("store = 'a.db'\n[trades\n", "", "not a valid TOML file"),
        ("[trades]\nsymbols = ['BTCUSDT']\n", "store", "missing"),
        ("store = 3\n[instruments]\n", "store", "non-empty text"),
        ("stor = 'a.db'\n[instruments]\n", "stor", "did you mean store?"),
        ("store = 'a.db'\n[trade]\nsymbols = ['X']\n", "trade", "did you mean trades"),
        ("store = 'a.db'\n", "", "names no dataset"),
        ("store = 'a.db'\nheartbeat = '5 parsecs'\n[instruments]\n", "heartbeat", "duration"),
        ("store = 'a.db'\nheartbeat = -1\n[instruments]\n", "heartbeat", "positive"),
        ("store = 'a.db'\nlog_level = 'loud'\n[instruments]\n", "log_level", "debug, info"),
        ("store = 'a.db'\n[tickers]\nevery = 'often'\n", "tickers.every", "duration"),
        ("store = 'a.db'\n[trades]\nsymbols = ['X']\nevery = '1s'\n", "trades.every", "live"),
        ("store = 'a.db'\n[trades]\n", "trades", "needs symbols"),
        ("store = 'a.db'\n[trades]\nsymbols = []\n", "trades.symbols", "no symbol"),
        ("store = 'a.db'\n[trades]\nsymbols = [1]\n", "trades.symbols", "list of symbols"),
        ("store = 'a.db'\n[trades]\nsymbols = ['X']\ncategory = 'futures'\n", "trades", "category"),
        ("store = 'a.db'\n[trades]\nsymbols = ['X']\nlimit = 5\n", "trades", "no parameter limit"),
        ("store = 'a.db'\n[instruments]\nsymbols = ['X']\n", "instruments.symbols", "no symbols"),
        ("store = 'a.db'\n[klines]\nsymbols = ['X']\nsymbol = 'Y'\n", "klines.symbols", "not both"),
        ("store = 'a.db'\n[klines]\nsymbol = 'X'\ninterval = '60'\n", "klines", "start"),
        (
            "store = 'a.db'\n[klines]\nsymbol = 'X'\ninterval = '60'\nstart = 'soon'\n",
            "klines",
            "start='soon' is not a time",
        ),
        ("store = 'a.db'\n[[klines]]\nsymbol = 'X'\ninterval = '7'\nstart = 1\n", "klines[0]", "7"),
        ("store = 'a.db'\ntrades = 5\n", "trades", "expected a table"),
    ],
)
def test_mistakes_are_named_by_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _plan(text)
    assert caught.value.key == key
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{key}: " if key else "")
    assert isinstance(caught.value, HubkitError)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("15s", 15.0), ("1h30m", 5400.0), ("250ms", 0.25), ("5", 5.0), (90, 90.0), ("2 min", 120.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration_value(value) == seconds


@pytest.mark.parametrize("value", ["", "s", "10x", "1h 5", "5h1", 0, -3, True, [1], "inf"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_value(value)


def test_a_polled_dataset_without_a_default_period_needs_every() -> None:
    rules = {"orders": DatasetRule("orders")}
    with pytest.raises(ConfigError, match=r"^orders\.every: missing"):
        parse_plan("store = 'a.db'\n[orders]\n", rules)
    plan = parse_plan("store = 'a.db'\n[orders]\nevery = 2\naccount = 'main'\n", rules)
    assert [(j.dataset, dict(j.params), j.every) for j in plan.jobs] == [
        ("orders", {"account": "main"}, 2.0)
    ]


def test_the_readme_collector_file_is_a_valid_plan() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (text,) = re.findall(r"^```toml\n(.*?)^```$", readme, re.S | re.M)
    plan = _plan(text)
    assert [j.describe() for j in plan.jobs] == [
        "trades symbols=BTCUSDT,ETHUSDT category=linear",
        "tickers every 15s",
        "instruments every 1h",
        "klines interval=60 start=2024-01-01 symbol=BTCUSDT every 1m",
    ]
    assert plan.store.startswith("postgresql+psycopg://")
