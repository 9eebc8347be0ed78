"""``hubkit collect`` as a real process: trades from the simulator into a store, stopped with
SIGTERM and restarted, checked against the simulator's ground truth; ``hubkit status`` on
the store it writes; a bad collector file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import sim_env

from hubkit.bybit import PublicTrade
from hubkit.bybit.entities import PUBLIC_TRADE_KEY
from hubkit.collector import CollectorRecord, read_collectors
from hubkit.entity import reflect
from hubkit.store import Store, store_inventory
from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TABLE = "bybit_public_trade_linear"
LIVE = pytest.mark.bybit_sim(
    symbols={"linear": list(SYMBOLS)}, trades_per_second=20.0, history_seconds=5.0
)


def _until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stored(store: str) -> pl.DataFrame:
    """The trades stored so far (none before the collector made the table)."""
    with Store(store) as st:
        if TABLE not in store_inventory(st).names():
            return pl.DataFrame(schema={"exec_id": pl.String, "symbol": pl.String})
        return st.table(reflect(PublicTrade, PUBLIC_TRADE_KEY), name=TABLE).read_all()


def _hubkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


class CollectProcess:
    """``hubkit collect FILE`` running in the background; its stderr goes to a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hubkit", "collect", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env={**os.environ, **env},
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._stderr.close()


@pytest.fixture
def processes() -> Iterator[list[CollectProcess]]:
    started: list[CollectProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collected.db'}"
    return str(request.getfixturevalue("postgres_database"))


def _config(tmp_path: Path, store: str, heartbeat: str = "0.5s") -> Path:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'store = "{store}"\nname = "test-collector"\nheartbeat = "{heartbeat}"\n\n'
        f"[trades]\nsymbols = {list(SYMBOLS)!r}\n".replace("'", '"')
    )
    return config


def _truth_window(truth: pl.DataFrame, stored: pl.DataFrame, symbol: str) -> set[str]:
    """The simulator's trades of ``symbol`` from the first to the last one stored."""
    mine = truth.filter(pl.col("symbol") == symbol).with_row_index("n")
    at = mine.filter(
        pl.col("exec_id").is_in(stored.filter(pl.col("symbol") == symbol)["exec_id"].to_list())
    )
    first, last = at["n"].min(), at["n"].max()
    return set(mine.filter(pl.col("n").is_between(first, last))["exec_id"])


@LIVE
def test_sigterm_and_restart_lose_and_duplicate_nothing(
    bybit_sim: BybitSimulator, store_url: str, tmp_path: Path, processes: list[CollectProcess]
) -> None:
    config = _config(tmp_path, store_url)
    env = sim_env(bybit_sim)
    log = tmp_path / "collect.log"

    processes.append(CollectProcess(config, env, log))
    _until(lambda: _stored(store_url).height >= 40, "the first trades stored")
    assert processes[0].stop() == 0, log.read_text()
    first_run = _stored(store_url)
    assert "INFO collector test-collector stopped" in log.read_text()

    # trades the collector misses while it is down
    produced = bybit_sim.ground_truth("trades").height
    _until(
        lambda: bybit_sim.ground_truth("trades").height >= produced + 40,
        "trades made while the collector is down",
    )
    processes.append(CollectProcess(config, env, log))
    restarted_at = bybit_sim.ground_truth("trades").height
    _until(
        lambda: _stored(store_url).height >= first_run.height + (restarted_at - produced) + 40,
        "the gap filled and new trades streamed after the restart",
    )
    assert processes[1].stop(signal.SIGINT) == 0, log.read_text()

    stored = _stored(store_url)
    truth = bybit_sim.ground_truth("trades").filter(pl.col("category") == "linear")
    assert stored["exec_id"].n_unique() == stored.height  # nothing duplicated
    assert set(stored["symbol"]) == set(SYMBOLS)
    for symbol in SYMBOLS:
        mine = set(stored.filter(pl.col("symbol") == symbol)["exec_id"])
        assert mine == _truth_window(truth, stored, symbol), symbol  # nothing lost or extra
    assert set(first_run["exec_id"]) < set(stored["exec_id"])
    # the stored values are the simulator's
    joined = stored.join(truth, on="exec_id", suffix="_truth")
    assert joined.height == stored.height
    assert (joined["price"] == joined["price_truth"].cast(pl.Float64)).all()
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(
        line[:20].endswith("Z") and line.split()[1] in ("INFO", "WARNING") for line in lines
    ), text
    assert "Traceback" not in text


@LIVE
def test_status_lists_the_collector_and_its_health(
    bybit_sim: BybitSimulator, store_url: str, tmp_path: Path, processes: list[CollectProcess]
) -> None:
    config = _config(tmp_path, store_url, heartbeat="0.5s")
    env = sim_env(bybit_sim)
    processes.append(CollectProcess(config, env, tmp_path / "collect.log"))
    _until(lambda: _stored(store_url).height > 0, "trades stored")
    pid = str(processes[0].proc.pid)

    def collector_line() -> list[str]:
        done = _hubkit("status", "--store", store_url, env=env)
        assert done.returncode == 0, done.stderr
        assert "bybit_public_trade_linear" in done.stdout
        assert "hubkit_collectors" not in done.stdout  # listed as collectors, not as a table
        found = [line for line in done.stdout.splitlines() if line.startswith("test-collector ")]
        return found[0].split() if found else []

    _until(lambda: collector_line()[1:2] == ["running"], "the collector listed as running")
    row = collector_line()
    assert row[3] == pid
    assert "trades" in row and "symbols=BTCUSDT,ETHUSDT" in row

    # killed without a word: its heartbeat goes stale
    processes[0].proc.kill()
    processes[0].proc.wait(timeout=30)
    _until(lambda: collector_line()[1:3] == ["not", "running"], "a stale heartbeat", seconds=60)

    processes.append(CollectProcess(config, env, tmp_path / "collect.log"))
    _until(lambda: collector_line()[1:2] == ["running"], "the restarted collector")
    assert processes[1].stop() == 0
    assert collector_line()[1] == "stopped"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('store = "x.db"\n[trades]\nsymbols = ["BTCUSDT"]\nevry = "5s"\n', "trades"),
        ('store = "x.db"\n[tickers]\nevery = "soon"\n', "tickers.every: expected a duration"),
        ('[instruments]\nevery = "1h"\n', "store: missing"),
        ('store = "x.db"\n[klnes]\n', "klnes: unknown key (did you mean klines?)"),
    ],
)
def test_a_bad_file_exits_2_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    done = _hubkit("collect", str(config), env={"HUBKIT_BYBIT_REST_URL": "http://127.0.0.1:9"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"hubkit collect: error: {config}: ")
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing started


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    done = _hubkit("collect", str(tmp_path / "none.toml"), env={})
    assert done.returncode == 2
    assert f"cannot read {tmp_path / 'none.toml'}" in done.stderr


@pytest.mark.bybit_sim(
    symbols={"linear": ["BTCUSDT"]}, trades_per_second=400.0, history_seconds=1.0
)
def test_a_gap_rest_cannot_fill_is_reported(
    bybit_sim: BybitSimulator, tmp_path: Path, processes: list[CollectProcess]
) -> None:
    store = f"sqlite:///{tmp_path / 'gap.db'}"
    config = tmp_path / "gap.toml"
    config.write_text(
        f'store = "{store}"\nname = "gappy"\nheartbeat = 0.2\n[trades]\nsymbols = ["BTCUSDT"]\n'
    )
    env = sim_env(bybit_sim)
    log = tmp_path / "gap.log"
    processes.append(CollectProcess(config, env, log))
    _until(lambda: _stored(store).height > 0, "trades stored")
    assert processes[0].stop() == 0
    produced = bybit_sim.ground_truth("trades").height
    # more than the 1000 newest trades REST serves
    _until(lambda: bybit_sim.ground_truth("trades").height > produced + 1500, "1500 missed trades")
    processes.append(CollectProcess(config, env, log))

    def record() -> CollectorRecord:
        with Store(store) as st:
            (found,) = read_collectors(st)
        return found

    _until(lambda: record().errors >= 1 and record().state == "running", "the gap reported")
    assert (record().last_error or "").startswith("gap "), record()
    assert processes[1].stop() == 0
    assert " WARNING trades symbols=BTCUSDT: gap " in log.read_text()


def _wait_for_line(log: Path, text: str) -> None:
    _until(lambda: text in log.read_text(), f"{text!r} in the log")


def test_a_stop_lets_the_round_in_progress_finish_and_a_second_signal_ends_at_once(
    bybit_sim: BybitSimulator, tmp_path: Path, processes: list[CollectProcess]
) -> None:
    bybit_sim.faults.http_path = "/v5/market/tickers"
    bybit_sim.faults.slow_response_seconds = 6.0  # each tickers round lasts 6 s
    store = tmp_path / "slow.db"
    config = tmp_path / "slow.toml"
    config.write_text(f'store = "{store}"\n[tickers]\nevery = "1h"\n')
    env = sim_env(bybit_sim)
    log = tmp_path / "slow.log"

    processes.append(CollectProcess(config, env, log))
    _wait_for_line(log, "INFO syncing: tickers every 1h")
    processes[0].proc.send_signal(signal.SIGTERM)
    assert processes[0].proc.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    said = [line.split(" ", 2)[2] for line in lines]
    stopping = said.index("SIGTERM: stopping")
    synced = next(i for i, text in enumerate(said) if text.startswith("tickers every 1h: "))
    assert stopping < synced < said.index("stopping: closing 1 feed(s)")
    with Store(store) as st:
        (record,) = read_collectors(st)
    assert record.state == "stopped"

    processes.append(CollectProcess(config, env, log))
    _until(lambda: log.read_text().count("INFO syncing: tickers every 1h") == 2, "the restart")
    processes[1].proc.send_signal(signal.SIGINT)
    _until(lambda: log.read_text().count("SIGINT: stopping") == 1, "the first signal handled")
    processes[1].proc.send_signal(signal.SIGINT)
    assert processes[1].proc.wait(timeout=60) == 130
    text = log.read_text()
    assert "WARNING SIGINT again: stopping at once" in text
    assert "hubkit collect: interrupted" in text
    assert "Traceback" not in text
