"""Where entities live on a REST API: ``Route``, its write ``Verb``s, ``Cursor`` pagination,
and the ``Envelope`` rule that reads errors out of 2xx bodies.

::

    Route(
        "/v1/items",
        {"limit": 100},
        items="result.list",                      # where the rows sit in the body
        cursor=Cursor("result.next", "cursor"),   # pagination, or None
        envelope=my_envelope,                     # raises a HubkitError for an error answer
        create=Verb("POST", "/v1/items", result="result"),
    )

Pure data and small pure functions: no I/O here; ``HttpConnection`` does the requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from hubkit.errors import DecodeError

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Cursor",
    "Envelope",
    "Reply",
    "Route",
    "RowMapper",
    "Verb",
    "array_row",
]


@dataclass(frozen=True)
class Reply:
    """What an envelope rule sees: one decoded response.

    ``now`` is the epoch time from the connection's clock; ``default_wait`` is the wait to use
    when a rate-limit answer does not say how long.
    """

    what: str  # "GET /v1/items", for messages
    status: int
    headers: httpx.Headers
    body: Any
    now: float
    default_wait: float


Envelope = Callable[[Reply], None]
"""An envelope rule: raises a ``HubkitError`` when a 2xx body is an error answer."""

RowMapper = Callable[[Any], Mapping[str, Any]]
"""Turns one list item of the response into a JSON object for ``spec.from_wire``."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
"""The header that carries a write's idempotency key (IETF draft "The Idempotency-Key HTTP
Header Field"); the same on every try of one outbox entry."""


def array_row(*names: str) -> RowMapper:
    """A row mapper for list items that are arrays: ``array_row("startTime", "open", ...)``.

    Some APIs send candles as ``["1670608800000", "17071", ...]``; this names the positions. An
    item that is not an array of exactly ``len(names)`` values raises ``DecodeError``.
    """

    def mapper(item: Any) -> Mapping[str, Any]:
        if not isinstance(item, list | tuple) or len(item) != len(names):
            raise DecodeError(
                f"expected an array of {len(names)} values ({', '.join(names)}), got {item!r:.80}",
                field=names[0] if names else None,
            )
        return dict(zip(names, item, strict=True))

    return mapper


@dataclass(frozen=True)
class Cursor:
    """Cursor pagination: where the next cursor sits in a response, and the query parameter
    that carries it back. A missing, null or empty cursor ends the pages."""

    response: str = "result.nextPageCursor"
    param: str = "cursor"


@dataclass(frozen=True)
class Verb:
    """How one write goes out: ``Verb("POST", "/v1/items")``, ``Verb("DELETE", "/v1/items/{id}")``.

    ``path`` may name columns in braces; they are filled from the row (or key), URL-escaped.
    ``send``: ``"json"`` (body = ``spec.to_wire(row)``), ``"query"`` (flat parameters) or
    ``"none"``; default json for POST/PUT/PATCH, query otherwise. ``result``: where the remote's
    echo of the row sits in the response (``"result"``), None for no echo. ``idempotent``: may a
    failed try be repeated blindly; default True for PUT/DELETE, False for POST/PATCH.
    """

    method: str
    path: str
    send: str | None = None
    result: str | None = None
    idempotent: bool | None = None

    @property
    def send_as(self) -> str:
        if self.send is not None:
            return self.send
        return "json" if self.method.upper() in ("POST", "PUT", "PATCH") else "query"

    @property
    def is_idempotent(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Route:
    """Where one entity lives on a REST API.

    ``path`` and static ``params`` (call parameters override them); ``items``: dotted path of the
    row list in the body (None: the body is the list; a single object counts as one row);
    ``cursor``: pagination, or None; ``envelope``: the error rule for 2xx bodies, or None;
    ``row_mapper``: applied to every item (e.g. ``array_row(...)`` for klines); ``create`` /
    ``update`` / ``remove``: the write verbs, None where the API has none; ``method``: of the
    fetch (GET sends parameters as the query, POST as a JSON body); ``max_pages``: a safety
    stop for runaway cursors; ``auth_codes``: the envelope's error codes that are about
    credentials (key, signature, permission): a write refused with one of them is not the
    write's fault, so it is not reported as ``Rejected``. Fetches are idempotent, so every
    temporary failure is retried.
    """

    path: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    items: str | None = None
    cursor: Cursor | None = None
    envelope: Envelope | None = None
    row_mapper: RowMapper | None = None
    create: Verb | None = None
    update: Verb | None = None
    remove: Verb | None = None
    method: str = "GET"
    max_pages: int = 10_000
    auth_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
