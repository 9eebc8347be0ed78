"""ByBit v5 REST rules: the ``retCode`` envelope, its error-code sets, the route shape and the
rate-limit headers, for ``HttpConnection``.

::

    HttpConnection(
        "https://api.bybit.com",
        {Instrument: bybit_route("/v5/market/instruments-info", {"category": "linear"})},
        rate_limit_headers=BYBIT_RATE_LIMIT_HEADERS,
        auth=BybitSigner(key, secret),
    )

Business errors arrive as HTTP 200 with ``retCode != 0``; 10006 is a rate limit that says when
it resets in ``X-Bapi-Limit-Reset-Timestamp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hubkit.connections.retry import RateLimitHeaders, parse_reset_timestamp
from hubkit.connections.routes import Cursor, Reply, Route, RowMapper, Verb
from hubkit.errors import DecodeError, ProtocolError, RateLimited

__all__ = [
    "BYBIT_AUTH_CODES",
    "BYBIT_RATE_LIMIT_HEADERS",
    "BYBIT_TEMPORARY_CODES",
    "bybit_envelope",
    "bybit_route",
]

BYBIT_TEMPORARY_CODES: Final = frozenset({10000, 10002, 10016})
"""ByBit retCodes worth retrying: server timeout, time window (re-signed on retry), server error."""

BYBIT_AUTH_CODES: Final = frozenset({10003, 10004, 10005})
"""ByBit retCodes about credentials (key, signature, permission): a write refused for these is
not the write's fault, so it is not reported as ``Rejected``."""

BYBIT_RATE_LIMIT_HEADERS: Final = RateLimitHeaders(
    limit="X-Bapi-Limit",
    remaining="X-Bapi-Limit-Status",
    reset_ms="X-Bapi-Limit-Reset-Timestamp",
)
"""Where ByBit reports a key's request budget on every response."""


def bybit_envelope(reply: Reply) -> None:
    """ByBit v5: ``retCode != 0`` is an error (business errors arrive as HTTP 200).

    10006 -> ``RateLimited`` waiting until ``X-Bapi-Limit-Reset-Timestamp``; codes in
    ``BYBIT_TEMPORARY_CODES`` -> temporary ``ProtocolError``; others -> permanent ``ProtocolError``.
    """
    body = reply.body
    if not isinstance(body, Mapping):
        raise DecodeError(f"{reply.what}: the body is not a ByBit envelope", field="retCode")
    code = body.get("retCode")
    if code is None:
        raise DecodeError(f"{reply.what}: the envelope has no retCode", field="retCode")
    try:
        code = int(code)
    except (TypeError, ValueError) as exc:
        raise DecodeError(
            f"{reply.what}: retCode {code!r} is not a number", field="retCode"
        ) from exc
    if code == 0:
        return
    message = str(body.get("retMsg") or "")
    if code == 10006:
        reset = parse_reset_timestamp(
            reply.headers.get(BYBIT_RATE_LIMIT_HEADERS.reset_ms), reply.now
        )
        wait = reply.default_wait if reset is None else reset
        raise RateLimited(
            f"{reply.what}: retCode 10006 {message}; wait {wait:g} s",
            retry_after=wait,
            status=reply.status,
            code=code,
        )
    raise ProtocolError(
        f"{reply.what}: retCode {code} {message}".rstrip(),
        status=reply.status,
        code=code,
        temporary=code in BYBIT_TEMPORARY_CODES,
    )


def bybit_route(
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    paginated: bool = True,
    row_mapper: RowMapper | None = None,
    create: Verb | None = None,
    update: Verb | None = None,
    remove: Verb | None = None,
) -> Route:
    """A ByBit v5 route: rows at ``result.list``, ``nextPageCursor`` pagination (unless
    ``paginated=False``), the ``retCode`` envelope, ``BYBIT_AUTH_CODES`` as credential errors.
    Write verbs echo ``result``."""
    return Route(
        path,
        params or {},
        items="result.list",
        cursor=Cursor() if paginated else None,
        envelope=bybit_envelope,
        row_mapper=row_mapper,
        create=create,
        update=update,
        remove=remove,
        auth_codes=BYBIT_AUTH_CODES,
    )
