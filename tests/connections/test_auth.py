"""The ByBit v5 signer and the Secret wrapper."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle

import httpx
import pytest

from hubkit.bybit.signer import BybitSigner
from hubkit.connections.auth import Secret, redact

KEY = "XXXXXXXXXX"
SECRET = "s3cr3t-value-never-printed"


def test_string_to_sign_matches_the_docs_example() -> None:
    signer = BybitSigner(KEY, SECRET, recv_window=5000)
    text = signer.string_to_sign(1658384314791, "category=option&symbol=BTC-29JUL22-25000-C")
    assert text == "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert signer.sign(1658384314791, "category=option&symbol=BTC-29JUL22-25000-C") == expected
    assert expected == expected.lower() and len(expected) == 64


def test_get_request_is_signed_over_the_query_as_sent() -> None:
    signer = BybitSigner(KEY, SECRET, clock=lambda: 1658384314.791)
    request = httpx.Request(
        "GET",
        "https://api.bybit.com/v5/market/tickers",
        params=sorted({"symbol": "BTC-29JUL22-25000-C", "category": "option"}.items()),
    )
    signer(request)
    assert request.url.query == b"category=option&symbol=BTC-29JUL22-25000-C"
    assert request.headers["X-BAPI-API-KEY"] == KEY
    assert request.headers["X-BAPI-TIMESTAMP"] == "1658384314791"
    assert request.headers["X-BAPI-RECV-WINDOW"] == "5000"
    assert request.headers["X-BAPI-SIGN"] == signer.sign(
        1658384314791, "category=option&symbol=BTC-29JUL22-25000-C"
    )


def test_post_request_is_signed_over_the_body() -> None:
    signer = BybitSigner(KEY, SECRET, clock=lambda: 1.0)
    body = json.dumps({"category": "linear", "symbol": "BTCUSDT"}, separators=(",", ":")).encode()
    request = httpx.Request("POST", "https://api.bybit.com/v5/order/create", content=body)
    signer(request)
    assert request.headers["X-BAPI-SIGN"] == signer.sign(1000, body.decode())
    assert request.headers["Content-Type"] == "application/json"


def test_ws_auth_args() -> None:
    signer = BybitSigner(KEY, SECRET)
    key, expires, signature = signer.ws_auth_args(1662350400000)
    assert key == KEY and expires == 1662350400000
    assert (
        signature
        == hmac.new(SECRET.encode(), b"GET/realtime1662350400000", hashlib.sha256).hexdigest()
    )


def test_secret_never_shows_itself() -> None:
    secret = Secret(SECRET)
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        str([secret]),
    ):
        assert SECRET not in text
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET) and secret != Secret("other")
    assert hash(secret) == hash(Secret(SECRET))
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_signer_repr_hides_key_and_secret() -> None:
    signer = BybitSigner(KEY, Secret(SECRET))
    assert KEY not in repr(signer) and SECRET not in repr(signer)
    assert KEY not in str(signer) and SECRET not in str(signer)


def test_redact() -> None:
    assert redact(f"bad key {KEY}!", [Secret(KEY)]) == "bad key ********!"
