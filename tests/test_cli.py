"""The ``hubkit`` command line, against the ByBit simulator on loopback.

Commands whose exit status and stderr matter to schedulers (``sync``, ``simulate``,
``--version``) run as real subprocesses; the others run in-process through ``main(argv)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from cli_helpers import sim_env

from hubkit import load
from hubkit.cli import main
from hubkit.cli.params import parse_duration, parse_params
from hubkit.store.inventory import store_inventory
from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(120)
pytest_plugins = ["cli_fixtures"]  # the `pointed` fixture

COMMANDS = ("demo", "load", "sync", "simulate", "status")


def hubkit(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hubkit ARGS`` (the console script's code) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("7.5", 7.5),
        (" 3 min ", 180.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "0s", "5m10", "-3s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_params() -> None:
    words = ["category=linear", "--symbols", "BTCUSDT,ETHUSDT", "--base-coin=BTC", "limit=5"]
    assert parse_params(words) == {
        "category": "linear",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "base_coin": "BTC",
        "limit": "5",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["linear"])
    with pytest.raises(ValueError, match="needs a value"):
        parse_params(["--symbols"])


# -- help and usage ------------------------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text
    assert "HUBKIT_BYBIT_REST_URL" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: hubkit {command}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "trades", "--symbols", "BTCUSDT"])  # no --for
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--bogus"])
    assert exit_info.value.code == 2
    assert "--for" in capsys.readouterr().err


def test_version_as_a_module() -> None:
    done = hubkit("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("hubkit ")


# -- demo ----------------------------------------------------------------------------------------


def test_demo_runs_and_says_where_the_data_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBKIT_HOME", str(tmp_path))
    # the demo must not need (or reach) any configured remote
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("HUBKIT_BYBIT_WS_URL", "ws://127.0.0.1:1/v5/public")
    assert main(["demo", "--seconds", "2", "--trades-per-second", "50"]) == 0
    out = capsys.readouterr().out
    folders = list(tmp_path.glob("hubkit-demo-*"))
    assert len(folders) == 1
    assert f"data: {folders[0]}" in out
    for text in ("bybit_instrument", "bybit_public_trade_linear", "trades/s", "linear", "spot"):
        assert text in out
    rows = {t.name: t.rows for t in store_inventory(folders[0] / "hubkit.db")}
    assert (rows["bybit_instrument"] or 0) > 0
    assert (rows["bybit_public_trade_linear"] or 0) > 0


# -- sync ----------------------------------------------------------------------------------------


def test_sync_trades_stores_the_simulator_trades(bybit_sim: BybitSimulator, tmp_path: Path) -> None:
    store = tmp_path / "sync.db"
    done = hubkit(
        "sync", "trades", "--symbols", "BTCUSDT", "--for", "4s", "--store", str(store),
        env=sim_env(bybit_sim),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synced trades BTCUSDT"), done.stdout
    assert "Traceback" not in done.stderr
    from hubkit.bybit import PublicTrade
    from hubkit.bybit.entities import PUBLIC_TRADE_KEY
    from hubkit.entity import reflect
    from hubkit.store import Store

    with Store(store) as st:
        stored = st.table(
            reflect(PublicTrade, PUBLIC_TRADE_KEY), name="bybit_public_trade_linear"
        ).read_all()
    assert stored.height > 0
    assert set(stored["symbol"].unique()) == {"BTCUSDT"}
    truth = bybit_sim.ground_truth("trades").filter(pl.col("category") == "linear")
    assert set(stored["exec_id"]) <= set(truth["exec_id"])


def test_sync_against_an_unreachable_url_fails_in_one_line(tmp_path: Path) -> None:
    unreachable = {
        "HUBKIT_BYBIT_REST_URL": "http://127.0.0.1:1",
        "HUBKIT_BYBIT_WS_URL": "ws://127.0.0.1:1/v5/public",
    }
    store = str(tmp_path / "x.db")
    done = hubkit("sync", "trades", "--symbols", "BTCUSDT", "--for", "10s", "--store", store,
                  env=unreachable)  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hubkit sync: error: ")
    assert "127.0.0.1:1" in lines[0]


def test_sync_fails_when_the_stream_is_down_at_the_end(
    bybit_sim: BybitSimulator, tmp_path: Path
) -> None:
    store = tmp_path / "down.db"
    args = ["sync", "trades", "--symbols", "BTCUSDT", "--for", "4s", "--store", str(store)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **sim_env(bybit_sim)},
    )
    try:
        deadline = time.monotonic() + 60
        while not _stored_rows(store):  # wait until trades flow, then take the server away
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        bybit_sim.stop()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert out.startswith("synced trades BTCUSDT"), out  # the summary still says what arrived
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubkit sync: error: the stream was down")


def _stored_rows(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        found = store_inventory(store)
    except Exception:  # the file is being created
        return 0
    return sum(t.rows or 0 for t in found if t.name == "bybit_public_trade_linear")


def test_sync_a_rest_dataset(pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "instruments", "category=linear", "--for", "4s", "--every", "0.2s"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("synced instruments ")
    rounds = int(out.split()[2])
    assert rounds >= 2
    assert pointed.requests.get("/v5/market/instruments-info", 0) >= rounds


def test_sync_rest_dataset_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUBKIT_BYBIT_REST_URL", "http://127.0.0.1:1")
    store = str(tmp_path / "x.db")
    assert main(["sync", "tickers", "--for", "1s", "--store", store]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hubkit sync: error: ")


# -- load and status -----------------------------------------------------------------------------


def _printed(out: str) -> tuple[list[str], list[list[str]]]:
    """Header names and data cells of the Polars table in ``out``."""
    lines = [line for line in out.splitlines() if line.startswith("│")]
    cells = [[c.strip() for c in line.strip("│").split("┆")] for line in lines]
    return cells[0], cells[3:]  # names, "---", dtypes, then the rows


def test_load_prints_the_head_readably(
    pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "instruments", "category=linear", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    frame = load("instruments", category="linear")  # fresh: the rows just printed
    names, rows = _printed(out)
    assert names[:2] == ["category", "symbol"]  # the key first
    assert 5 <= len(names) < frame.width
    assert set(names) <= set(frame.columns)  # every header whole, none cut to 3 letters
    assert all(len(line) <= 160 for line in out.splitlines())
    head = frame.head(3)
    assert [row[:3] for row in rows] == [list(r) for r in head.select(names[:3]).iter_rows()]
    hidden = frame.width - len(names)
    assert f"{frame.height} rows x {frame.width} columns; {hidden} more not shown" in out


def test_load_columns_option(pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "instruments", "category=linear", "--columns", "symbol,tick_size"]) == 0
    names, rows = _printed(capsys.readouterr().out)
    assert names == ["symbol", "tick_size"] and len(rows) == 10
    assert main(["load", "instruments", "category=linear", "--columns", "all", "--rows", "1"]) == 0
    frame = load("instruments", category="linear")
    names, _ = _printed(capsys.readouterr().out)
    assert names == frame.columns
    assert main(["load", "instruments", "--columns", "symbl"]) == 1
    err = capsys.readouterr().err
    assert "--columns: no column 'symbl' (did you mean symbol?)" in err


def test_load_writes_parquet_and_csv(pointed: BybitSimulator, tmp_path: Path) -> None:
    parquet = tmp_path / "out" / "trades.parquet"
    csv = tmp_path / "trades.csv"
    args = ["load", "trades", "--symbols", "BTCUSDT,ETHUSDT"]
    assert main([*args, "--out", str(parquet)]) == 0
    assert main([*args, "--out", str(csv)]) == 0
    frame = pl.read_parquet(parquet)
    assert frame.height > 0
    assert set(frame["symbol"].unique()) == {"BTCUSDT", "ETHUSDT"}
    assert pl.read_csv(csv).height == frame.height


def test_load_failures_are_one_line(
    pointed: BybitSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "nope"]) == 1
    assert main(["load", "instruments", "--out", str(tmp_path / "x.txt")]) == 1
    assert main(["load", "klines", "symbol=BTCUSDT"]) == 1  # no interval / start
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert all(line.startswith("hubkit load: error: ") for line in err)
    assert "instruments" in err[0]  # names the known datasets


def test_status_lists_tables(pointed: BybitSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "instruments"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "bybit_instrument" in out
    assert "pending pushes" in out


def test_status_of_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert main(["status", "--store", str(missing)]) == 1
    assert "no store at" in capsys.readouterr().err
    assert not missing.exists()


# -- simulate ------------------------------------------------------------------------------------


def test_simulate_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubkit", "simulate", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("  export HUBKIT_BYBIT_WS_URL=") for line in lines):
            assert time.monotonic() < deadline, lines
            line = proc.stdout.readline()
            assert line, f"simulate exited early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.rstrip("\n"))
        rest_url = next(x.split("=", 1)[1] for x in lines if x.startswith("rest_url="))
        assert rest_url.startswith("http://127.0.0.1:")
        answer = httpx.get(f"{rest_url}/v5/market/time", timeout=10).json()
        assert answer["retCode"] == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # README: "130 interrupted"
        assert proc.stdout.read().strip().endswith("stopping")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
