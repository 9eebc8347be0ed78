"""One httpx.AsyncClient with retries, rate limiting, auth and error translation.

Shared by ``HttpConnection`` and ``JsonRpcConnection``. Every httpx error is translated here
(``raise TransportError(...) from exc``); nothing that leaves this module names a credential.

Which failures are retried inside one call (``RetryPolicy.wait_for`` decides the wait):

- the request never reached the server (connect error, connect/pool timeout) or the server
  refused it before doing anything (429, 403 IP limit, an envelope's rate-limit answer): always,
  for any request;
- anything else temporary (read/write errors and timeouts, 5xx, temporary error codes): only
  for idempotent requests. A non-idempotent write might have been applied, so it is raised
  (still ``temporary``) for the caller, whose outbox decides when to push again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
import msgspec

from hubkit.connections.auth import Secret, Signer, redact
from hubkit.connections.retry import (
    RateLimitHeaders,
    RateLimitInfo,
    RetryPolicy,
    TokenBucket,
    parse_retry_after,
)
from hubkit.errors import (
    BridgeError,
    DecodeError,
    HubkitError,
    ProtocolError,
    RateLimited,
    RemoteTimeout,
    TransportError,
)

T = TypeVar("T")

logger = logging.getLogger("hubkit.connections")

Headers = Mapping[str, "str | Secret"]


def userinfo_auth(url: str) -> tuple[str, dict[str, str | Secret], tuple[Secret, ...]]:
    """``url`` without ``user:password@``, the Basic ``Authorization`` header it stood for, and
    the secrets to mask (the password and the header value).

    httpx logs each request's URL at INFO; a URL that carries no credentials keeps them out of
    that line. Without user info: ``(url, {}, ())``.
    """
    if "@" not in url:
        return url, {}, ()
    parsed = httpx.URL(url)
    if not parsed.username and not parsed.password:
        return url, {}, ()
    pair = f"{parsed.username}:{parsed.password}".encode()
    header = Secret("Basic " + base64.b64encode(pair).decode("ascii"))
    secrets = (header, Secret(parsed.password)) if parsed.password else (header,)
    bare = str(parsed.copy_with(username=None, password=None))
    return bare, {"Authorization": header}, secrets


def public_url(url: str | httpx.URL) -> str:
    """``url`` without user info, query or fragment: safe for reprs and messages."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def make_retry(retries: int | RetryPolicy) -> RetryPolicy:
    return retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)


def make_limiter(rate_limit: float | TokenBucket | None) -> TokenBucket | None:
    if rate_limit is None or isinstance(rate_limit, TokenBucket):
        return rate_limit
    return TokenBucket(rate_limit, burst=max(1, int(rate_limit)))


class HttpClient:
    """The request engine behind the HTTP-based connections (not public API)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        limiter: TokenBucket | None,
        auth: Signer | None,
        headers: Headers | None,
        transport: httpx.AsyncBaseTransport | None,
        rate_limit_headers: RateLimitHeaders | None = None,
        secrets: tuple[Secret, ...] = (),
    ) -> None:
        base_url, url_headers, url_secrets = userinfo_auth(base_url)
        self.base_url = base_url
        self._secrets = (*url_secrets, *secrets)
        self.timeout = timeout
        self.retry = retry
        self.limiter = limiter
        self.auth = auth
        self._headers: dict[str, str | Secret] = {**url_headers, **dict(headers or {})}
        self._transport = transport
        self._rate_limit_headers = rate_limit_headers
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_until = 0.0
        self.requests_made = 0
        self.last_rate_limit: RateLimitInfo | None = None

    # -- lifetime -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._client is not None and not self._client.is_closed

    async def open(self) -> None:
        """Create the client on the running loop (idempotent)."""
        if self.is_open:
            return
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout),
            transport=self._transport,
            headers={"Accept": "application/json"},
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- secrets --------------------------------------------------------------------------

    def secrets(self) -> list[Secret]:
        found = [value for value in self._headers.values() if isinstance(value, Secret)]
        found.extend(self._secrets)
        if self.auth is not None:
            found.extend(self.auth.secrets())
        return found

    def redact(self, text: str) -> str:
        return redact(text, self.secrets())

    def scrub(self, error: BaseException) -> None:
        """Remove every known secret from ``error``'s message (and raw text) in place.

        Error text can quote what the remote sent back; a remote that echoes a key must not
        make hubkit print it.
        """
        secrets = self.secrets()
        if not secrets:
            return
        error.args = tuple(
            redact(arg, secrets) if isinstance(arg, str) else arg for arg in error.args
        )
        if isinstance(error, DecodeError) and error.raw is not None:
            error.raw = redact(error.raw, secrets)

    # -- requests -------------------------------------------------------------------------

    def _note_rate_limit(self, headers: httpx.Headers) -> None:
        if self._rate_limit_headers is None:
            return
        info = RateLimitInfo.from_headers(headers, self._rate_limit_headers)
        if info is not None:
            self.last_rate_limit = info

    async def _before_request(self, gate: bool) -> None:
        """Wait out a rate-limit pause another request hit (``gate``), then the rate limiter."""
        delay = self._paused_until - self.retry.clock()
        if gate and delay > 0:
            await self.retry.sleep(delay)
        if self.limiter is not None:
            await self.limiter.acquire()

    def _pause(self, seconds: float) -> None:
        """Hold every request of this client for ``seconds`` (a rate limit is per client)."""
        self._paused_until = max(self._paused_until, self.retry.clock() + seconds)
        if self.limiter is not None:
            self.limiter.pause(seconds)

    def _build(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        extra: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        headers = {
            name: value.reveal() if isinstance(value, Secret) else value
            for name, value in self._headers.items()
        }
        if extra:
            headers.update(extra)
        if content is not None:
            headers.setdefault("Content-Type", "application/json")
        # Parameters go out sorted by key: signers cover the query string as sent, and sorted
        # queries make requests reproducible.
        query: list[tuple[str, str | int | float | bool | None]] | None = (
            list(sorted(params.items())) if params else None
        )
        request = client.build_request(method, path, params=query, content=content, headers=headers)
        if self.auth is not None:
            self.auth(request)
        return request

    def _translate(self, exc: httpx.HTTPError, what: str) -> tuple[TransportError, bool]:
        """An httpx error -> (hubkit error, whether the server may have seen the request)."""
        kind = type(exc).__name__
        detail = self.redact(str(exc)) or kind
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return RemoteTimeout(f"{what}: could not connect in time ({kind})"), False
        if isinstance(exc, httpx.TimeoutException):
            return RemoteTimeout(f"{what}: no answer in time ({kind})"), True
        if isinstance(exc, httpx.ConnectError):
            return TransportError(f"{what}: could not connect ({detail})"), False
        return TransportError(f"{what}: {kind} ({detail})"), True

    async def send(
        self,
        method: str,
        path: str,
        handle: Callable[[httpx.Response], T],
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Send one request, retrying per the module rules; ``handle`` turns a response into T.

        ``handle`` raises ``HubkitError`` for error answers (see ``status_error``). ``headers``
        are added to this request only (every try carries them, e.g. ``Idempotency-Key``).
        """
        if self._client is None or self._client.is_closed:
            await self.open()
        elif asyncio.get_running_loop() is not self._loop:
            # httpx's pool belongs to the loop that made it; sharing it fails obscurely later.
            raise BridgeError(
                "this connection was opened on another event loop; use it from that loop "
                "(or disconnect() and connect() again here)"
            )
        client = self._client
        assert client is not None
        what = f"{method} {path}"
        attempt = 0
        gate = True
        while True:
            await self._before_request(gate)
            request = self._build(client, method, path, params, content, headers)
            cause: BaseException | None = None
            error: HubkitError
            try:
                self.requests_made += 1
                response = await client.send(request)
                self._note_rate_limit(response.headers)
                return handle(response)
            except httpx.HTTPError as exc:
                error, processed = self._translate(exc, what)
                cause = exc
            except HubkitError as exc:
                error, processed = exc, not isinstance(exc, RateLimited)
            self.scrub(error)
            wait = self.retry.wait_for(error, attempt)
            if wait is None or (processed and not idempotent):
                if cause is None:
                    raise error
                raise error from cause
            attempt += 1
            logger.info(
                "%s failed (%s); retry %d/%d in %.3f s",
                what,
                error,
                attempt,
                self.retry.retries,
                wait,
            )
            if isinstance(error, RateLimited):
                # Hold the other requests of this client too; this one sleeps it out below.
                self._pause(wait)
            await self.retry.sleep(wait)
            gate = False


def status_error(response: httpx.Response, what: str, retry: RetryPolicy) -> HubkitError | None:
    """The error an HTTP status means, or None for 1xx/2xx.

    3xx -> permanent ``ProtocolError`` naming the new location (redirects are not followed: an
    API that moved should be configured with its new URL, and credentials must not follow).

    429 -> ``RateLimited`` (``Retry-After``, else ``retry.default_rate_wait``); 403 ->
    ``RateLimited`` with ``Retry-After`` or ``retry.ip_ban_wait`` (exchanges answer an IP limit
    with 403 and "stop and wait at least 10 minutes"); 5xx -> temporary ``ProtocolError``;
    other 4xx -> permanent one.
    """
    status = response.status_code
    if status < 300:
        return None
    if status < 400:
        where = response.headers.get("Location", "elsewhere")
        return ProtocolError(
            f"{what}: HTTP {status} redirect to {public_url(where)}; use that URL instead",
            status=status,
            temporary=False,
        )
    reason = _short_text(response)
    if status in (429, 403):
        asked = parse_retry_after(response.headers.get("Retry-After"), retry.clock())
        default = retry.default_rate_wait if status == 429 else retry.ip_ban_wait
        wait = asked if asked is not None else default
        label = "too many requests" if status == 429 else "forbidden (IP rate limit?)"
        return RateLimited(
            f"{what}: HTTP {status} {label}; wait {wait:g} s{reason}",
            retry_after=wait,
            status=status,
        )
    return ProtocolError(f"{what}: HTTP {status}{reason}", status=status)


def _short_text(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip()
    if not text:
        return ""
    if len(text) > limit:
        text = text[:limit] + "…"
    return f": {text}"


def parse_json(response: httpx.Response, what: str) -> Any:
    """The JSON body, or ``DecodeError`` naming the request."""
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"{what}: the body is not JSON ({exc})", raw=response.text[:200]) from exc


def encode_json(document: Any) -> bytes:
    """Compact JSON bytes (what is sent is what is signed)."""
    return msgspec.json.encode(document)


def stringify(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Query parameters as strings; None values are dropped, booleans are ``true``/``false``."""
    out: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out
