"""Each fault switch fires as documented and is counted in ``sim.fault_counts``."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from simclient import recv_until, send, ws
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from hubkit.testing import BybitSimulator, Faults

pytestmark = pytest.mark.bybit_sim(trades_per_second=200, tick=0.01, history_seconds=2)


def _subscribe_trades(conn: ClientConnection) -> None:
    send(conn, {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]})
    recv_until(conn, lambda m: m.get("op") == "subscribe")


def _drain_until_closed(conn: ClientConnection, limit: int = 10_000) -> int:
    count = 0
    with pytest.raises(ConnectionClosed):
        for _ in range(limit):
            conn.recv(timeout=10)
            count += 1
    return count


def test_drop_after_n_messages(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.drop_ws_every_n_messages = 5
    with ws(bybit_sim, "linear") as conn:
        _subscribe_trades(conn)
        assert _drain_until_closed(conn) == 5
    assert bybit_sim.fault_counts["ws_drop_messages"] == 1


def test_drop_every_t_seconds(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.drop_ws_every_seconds = 0.2
    started = time.monotonic()
    with ws(bybit_sim, "linear") as conn:
        _subscribe_trades(conn)
        _drain_until_closed(conn)
    assert time.monotonic() - started >= 0.2
    assert bybit_sim.fault_counts["ws_drop_timer"] == 1


def test_disconnect_all(bybit_sim: BybitSimulator) -> None:
    with ws(bybit_sim, "linear") as conn:
        _subscribe_trades(conn)
        assert bybit_sim.disconnect_all() == 1
        _drain_until_closed(conn)
    assert bybit_sim.fault_counts["ws_drop_manual"] == 1


def test_ignore_pings(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.ignore_pings = True
    with ws(bybit_sim, "linear") as conn:
        pong = conn.ping()
        send(conn, {"op": "ping", "req_id": "p1"})
        send(conn, {"op": "subscribe", "req_id": "s1", "args": ["tickers.BTCUSDT"]})
        # replies come in order: had the pings been answered, the pongs would precede the ack
        first = json.loads(conn.recv(timeout=10))
        assert first["op"] == "subscribe"
        assert not pong.is_set()
    assert bybit_sim.fault_counts["ping_ignored"] == 2
    bybit_sim.faults.ignore_pings = False
    with ws(bybit_sim, "linear") as conn:
        assert conn.ping().wait(5)


def test_malformed_frames_cycle_through_kinds(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.malformed_every_n_messages = 2
    with ws(bybit_sim, "linear") as conn:
        _subscribe_trades(conn)
        frames = [conn.recv(timeout=10) for _ in range(6)]
    bad = frames[1::2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])
    wrong = json.loads(bad[1])
    assert isinstance(wrong["ts"], str) and isinstance(wrong["data"][0]["p"], float)
    missing = json.loads(bad[2])
    assert "ts" not in missing and "p" not in missing["data"][0]
    for good in frames[0::2]:
        message = json.loads(good)
        assert isinstance(message["ts"], int) and isinstance(message["data"][0]["p"], str)
    counts = bybit_sim.fault_counts
    assert counts["malformed_invalid_json"] == counts["malformed_wrong_types"] == 1
    assert counts["malformed_missing_fields"] == 1


def test_http_5xx_burst(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.http_5xx_next = 2
    with httpx.Client(base_url=bybit_sim.rest_url) as client:
        codes = [client.get("/v5/market/time").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert bybit_sim.fault_counts["http_5xx"] == 2


def test_http_429_with_retry_after(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.http_429_next = 1
    bybit_sim.faults.retry_after_seconds = 2
    r = httpx.get(f"{bybit_sim.rest_url}/v5/market/time")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert bybit_sim.fault_counts["http_429"] == 1


def test_10006_burst_with_limit_headers(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.rate_limit_next = 2
    bybit_sim.faults.rate_limit_reset_ms = 1500
    with httpx.Client(base_url=bybit_sim.rest_url) as client:
        answers = [client.get("/v5/market/time") for _ in range(3)]
    for r in answers[:2]:
        assert r.status_code == 200
        assert r.json()["retCode"] == 10006 and r.json()["retMsg"] == "Too many visits!"
        assert r.headers["X-Bapi-Limit-Status"] == "0" and r.headers["X-Bapi-Limit"] == "10"
        assert int(r.headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000
    assert answers[2].json()["retCode"] == 0
    assert bybit_sim.fault_counts["http_10006"] == 2


def test_slow_responses(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.slow_response_seconds = 0.2
    started = time.monotonic()
    assert httpx.get(f"{bybit_sim.rest_url}/v5/market/time").status_code == 200
    assert time.monotonic() - started >= 0.2
    assert bybit_sim.fault_counts["http_slow"] == 1


def test_timeout_never_answers(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.timeout_next = 1
    with httpx.Client(base_url=bybit_sim.rest_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/v5/market/time")
        assert client.get("/v5/market/time").status_code == 200
    assert bybit_sim.fault_counts["http_timeout"] == 1


def test_truncated_body(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.truncate_next = 1
    with httpx.Client(base_url=bybit_sim.rest_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/v5/market/instruments-info", params={"category": "spot"})
        assert client.get("/v5/market/time").status_code == 200
    assert bybit_sim.fault_counts["http_truncated"] == 1


def test_http_faults_can_target_one_path(bybit_sim: BybitSimulator) -> None:
    bybit_sim.faults.http_path = "/v5/market/kline"
    bybit_sim.faults.http_5xx_next = 1
    assert httpx.get(f"{bybit_sim.rest_url}/v5/market/time").status_code == 200
    r = httpx.get(f"{bybit_sim.rest_url}/v5/market/kline", params={"symbol": "BTCUSDT"})
    assert r.status_code == 503


def test_faults_given_at_start() -> None:
    with BybitSimulator(faults=Faults(http_5xx_next=1, http_5xx_status=502)) as sim:
        assert httpx.get(f"{sim.rest_url}/v5/market/time").status_code == 502
        assert sim.fault_counts == {"http_5xx": 1}
        sim.faults.reset()
        assert sim.faults == Faults()


def test_ip_limit_answers_403() -> None:
    with BybitSimulator(ip_limit=(3, 60.0, 60.0)) as sim, httpx.Client() as client:
        codes = [client.get(f"{sim.rest_url}/v5/market/time").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 403, 403]
        assert sim.fault_counts["ip_limited"] == 2
