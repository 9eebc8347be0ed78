"""The ByBit v5 HMAC request signer, a ``hubkit.connections.auth.Signer``.

``BybitSigner(api_key, api_secret)`` is an auth hook for ``HttpConnection``/``JsonRpcConnection``:
called with each outgoing ``httpx.Request`` (every attempt, so retries carry a fresh timestamp),
it adds ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW``, ``X-BAPI-SIGN`` and
``X-BAPI-SIGN-TYPE: 2``. The signed text is ``timestamp + api_key + recv_window + payload``, where
payload is the query string exactly as sent for GET (hubkit sends parameters sorted by key) and
the JSON body exactly as sent otherwise; the signature is lowercase hex HMAC-SHA256.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import httpx

from hubkit.connections.auth import Secret

__all__ = ["BybitSigner"]


class BybitSigner:
    """ByBit v5 HMAC-SHA256 request signer (see the module docstring for the rule).

    ``BybitSigner(api_key, api_secret, recv_window=5000, clock=time.time)``; ``clock`` returns
    epoch seconds and is injectable for tests. The key and secret are kept as ``Secret``.
    """

    def __init__(
        self,
        api_key: str | Secret,
        api_secret: str | Secret,
        *,
        recv_window: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api_key = Secret(api_key)
        self._api_secret = Secret(api_secret)
        self.recv_window = int(recv_window)
        self._clock = clock

    def __repr__(self) -> str:
        return f"BybitSigner(api_key={self._api_key!r}, recv_window={self.recv_window})"

    def secrets(self) -> tuple[Secret, ...]:
        """The key and the secret (for scrubbing text)."""
        return (self._api_key, self._api_secret)

    def string_to_sign(self, timestamp: int, payload: str) -> str:
        """``timestamp + api_key + recv_window + payload`` (the text the signature covers)."""
        return f"{timestamp}{self._api_key.reveal()}{self.recv_window}{payload}"

    def sign(self, timestamp: int, payload: str) -> str:
        """Hex HMAC-SHA256 of ``string_to_sign(timestamp, payload)``, keyed by the secret."""
        message = self.string_to_sign(timestamp, payload).encode()
        return hmac.new(self._api_secret.reveal().encode(), message, hashlib.sha256).hexdigest()

    def headers(self, method: str, payload: str, timestamp: int | None = None) -> dict[str, str]:
        """The ByBit auth headers for a request whose payload (query or body) is ``payload``."""
        ts = int(self._clock() * 1000) if timestamp is None else timestamp
        headers = {
            "X-BAPI-API-KEY": self._api_key.reveal(),
            "X-BAPI-TIMESTAMP": str(ts),
            "X-BAPI-RECV-WINDOW": str(self.recv_window),
            "X-BAPI-SIGN": self.sign(ts, payload),
            "X-BAPI-SIGN-TYPE": "2",
        }
        if method.upper() != "GET":
            headers["Content-Type"] = "application/json"
        return headers

    def __call__(self, request: httpx.Request) -> None:
        """Sign ``request`` in place; the payload is read from the request as it will be sent."""
        if request.method.upper() == "GET":
            payload = request.url.query.decode("ascii")
        else:
            payload = request.content.decode("utf-8")
        request.headers.update(self.headers(request.method, payload))

    def ws_auth_args(self, expires_ms: int | None = None) -> list[object]:
        """``args`` of the WebSocket ``{"op": "auth"}`` request: key, expiry (ms), signature.

        The signature is hex HMAC-SHA256 of ``"GET/realtime" + expires``; expiry defaults to ten
        seconds from now.
        """
        expires = int(self._clock() * 1000) + 10_000 if expires_ms is None else expires_ms
        signature = hmac.new(
            self._api_secret.reveal().encode(),
            f"GET/realtime{expires}".encode(),
            hashlib.sha256,
        ).hexdigest()
        return [self._api_key.reveal(), expires, signature]
