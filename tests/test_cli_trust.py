"""A command line a cron job can trust: failed writes fail the run, syncs are recorded,
mistakes are named with what was meant.

Each test is a defect a first user met; the commands run against the ByBit simulator on
loopback, in-process through ``main(argv)`` or, where the exit status is what a scheduler
sees, as ``python -m hubkit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import sim_env

from hubkit.cli import main
from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(120)
pytest_plugins = ["cli_fixtures"]  # the `pointed` fixture


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line of a command that must stop with a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def _failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a command that must fail (exit 1)."""
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- a failed write fails the run ------------------------------------------------------------


def _read_only(store: Path) -> str:
    """A URL that opens the SQLite file ``store`` read-only (every write is refused)."""
    return f"sqlite:///file:{store}?mode=ro&uri=true"


def test_sync_trades_exits_1_when_its_writes_fail(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    store = tmp_path / "ro.db"
    env = {**os.environ, **sim_env(bybit_sim)}
    args = ["sync", "trades", "--symbols", "BTCUSDT", "--for"]

    def hubkit(*more: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hubkit", *args, *more]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    created = hubkit("1s", "--store", str(store))  # the table exists, with some trades
    assert created.returncode == 0, created.stderr
    done = hubkit("4s", "--store", _read_only(store))
    assert done.returncode == 1, done.stdout
    assert done.stdout.startswith("synced trades BTCUSDT"), done.stdout  # what arrived
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hubkit sync: error: ")
    assert "StoreError" in lines[0] and "readonly" in lines[0]


def test_sync_of_a_rest_dataset_exits_1_when_its_writes_fail(
    pointed: BybitSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "ro.db"
    assert main(["sync", "tickers", "--for", "0.1s", "--store", str(store)]) == 0
    capsys.readouterr()
    line = _failure(["sync", "tickers", "--for", "0.1s", "--store", _read_only(store)], capsys)
    assert line.startswith("hubkit sync: error: ") and "readonly" in line


def test_a_rest_sync_that_falls_back_to_stored_rows_fails(
    pointed: BybitSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``load`` may answer from the store when ByBit is down; a scheduled sync may not."""
    store = str(tmp_path / "t.db")
    assert main(["sync", "tickers", "--for", "0.1s", "--store", store]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", "http://127.0.0.1:1")
    line = _failure(["sync", "tickers", "--for", "0.1s", "--store", store], capsys)
    assert line.startswith("hubkit sync: error: dataset 'tickers' could not be synced")


# -- a sync is recorded ----------------------------------------------------------------------


def test_rest_sync_records_its_time_for_status_and_load(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync", "instruments", "category=linear", "--for", "0.1s"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0
    table = next(x for x in capsys.readouterr().out.splitlines() if "bybit_instrument" in x)
    assert "never" not in table and " UTC " in table  # the time of the sync, and its age
    fetched = pointed.requests.get("/v5/market/instruments-info", 0)
    assert main(["load", "instruments", "category=linear"]) == 0
    assert capsys.readouterr().err == ""  # no warning (the data's age is known)
    # fresh: the load within the freshness period answered from the store
    assert pointed.requests.get("/v5/market/instruments-info", 0) == fetched


# -- mistakes are named ------------------------------------------------------------------------


def test_a_mistyped_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["stauts", "--store", "x.db"], capsys)
    assert line.startswith("hubkit: error: unknown command 'stauts' (did you mean status?)")


def test_a_mistyped_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["sync", "trades", "--symbols", "BTCUSDT", "--fro", "10s"], capsys)
    assert line == "hubkit sync: error: unknown option --fro (did you mean --for?)"
    line = _usage_error(["load", "instruments", "--stroe", "x.db"], capsys)
    assert line == "hubkit load: error: unknown option --stroe (did you mean --store?)"
    line = _usage_error(["status", "--stor", "x.db"], capsys)
    assert line == "hubkit status: error: unknown option --stor (did you mean --store?)"


def test_options_are_not_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["sync", "trades", "--symbols", "BTCUSDT", "--fo", "10s"], capsys)
    assert line == "hubkit sync: error: unknown option --fo (did you mean --for?)"


def test_a_missing_option_is_still_reported_as_missing(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["sync", "trades", "--symbols", "BTCUSDT"], capsys)
    assert line == "hubkit sync: error: the following arguments are required: --for"


def test_dataset_parameters_given_as_options_are_not_taken_for_typos(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # --start looks like --store to difflib, but is a klines parameter, not a slip
    argv = ["load", "klines", "--symbol", "BTCUSDT", "--interval", "60", "--start", "2024-01-01"]
    assert main([*argv, "--end", "2024-01-01T05:00:00Z"]) == 0
    assert "6 rows x 11 columns" in capsys.readouterr().out


def test_a_bad_duration_lists_the_units(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["sync", "trades", "--symbols", "BTCUSDT", "--for", "5x"], capsys)
    assert line.startswith("hubkit sync: error: argument --for: invalid duration '5x'")
    assert "unknown unit 'x'" in line
    for unit in ("ms", "s", "m", "h", "d"):
        assert f" {unit}" in line.split("units:", 1)[1]


def test_an_unknown_symbol_is_named_with_close_matches(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _failure(["load", "trades", "symbol=BTCUSD"], capsys)
    assert line.startswith("hubkit load: error: unknown linear symbol 'BTCUSD' (did you mean ")
    assert "BTCUSDT" in line.split("did you mean", 1)[1]
    line = _failure(["sync", "trades", "--symbols", "ETHUSDT,BTCUSD", "--for", "5s"], capsys)
    assert line.startswith("hubkit sync: error: unknown linear symbol 'BTCUSD' (did you mean ")
    assert "ETHUSDT" not in line  # a known symbol is not blamed


def test_a_bad_start_names_the_parameter(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _failure(["load", "klines", "symbol=BTCUSDT", "interval=60", "start=yesterday"], capsys)
    assert "start='yesterday'" in line
    assert "2024-01-01" in line  # and says what a time looks like


def test_an_unknown_dataset_is_named_with_close_matches(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _failure(["sync", "instrumnts", "--for", "1s"], capsys)
    assert line.startswith("hubkit sync: error: unknown dataset 'instrumnts' (did you mean ")
    assert "instruments" in line.split("did you mean", 1)[1]
