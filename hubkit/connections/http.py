"""REST connection over httpx: per-entity routes, cursor pagination, envelopes, pushes.

::

    conn = HttpConnection(
        "https://api.example.com",
        {Instrument: Route("/v1/instruments", items="result.list", cursor=Cursor())},
        rate_limit=100,                       # requests per second, client side
        auth=signer,                          # optional; keys never show in reprs or errors
    )
    async with conn:
        frame = await conn.fetch(spec, {"status": "Trading"})   # every page, one frame

Errors (all ``hubkit.HubkitError``; httpx errors never leave this module):

- ``TransportError`` / ``RemoteTimeout``: connecting, sending or reading failed, retries used up;
- ``RateLimited`` (``retry_after`` in seconds): HTTP 429, HTTP 403 (IP limit), or what the
  route's envelope rule calls a rate limit, when the wait asked for is longer than
  ``RetryPolicy.max_wait`` or retries ran out;
- ``ProtocolError`` (``status``, ``code``, ``temporary``): other HTTP errors and envelope errors;
  ``Rejected`` instead when a write was refused for good;
- ``DecodeError`` (``field``): the body is not JSON, the list is missing, or rows do not decode;
- ``SchemaError``: no route (or no verb) for the entity.

Retries (see ``hubkit.connections.retry``): exponential backoff with full jitter on connect
errors, timeouts and 5xx; waits as ``Retry-After`` (or the envelope rule's ``RateLimited``)
says for rate limits. Non-idempotent writes are only retried when the server surely did not act
on them.
Writes pushed by a sink carry an ``Idempotency-Key`` header, the same on every try of one
write (also after a restart), so a server that honours it applies each write once.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl

from hubkit.connections._transport import (
    HttpClient,
    encode_json,
    make_limiter,
    make_retry,
    parse_json,
    public_url,
    status_error,
    stringify,
)
from hubkit.connections._wire import (
    decode_items,
    dig,
    echo_to_row,
    key_to_wire,
    split_path,
)
from hubkit.connections.auth import Secret, Signer
from hubkit.connections.retry import RateLimitHeaders, RateLimitInfo, RetryPolicy, TokenBucket
from hubkit.connections.routes import IDEMPOTENCY_HEADER, Envelope, Reply, Route, Verb
from hubkit.errors import (
    DecodeError,
    HubkitError,
    ProtocolError,
    RateLimited,
    Rejected,
    SchemaError,
)

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["HttpConnection", "Page"]


@dataclass(frozen=True)
class Page:
    """One page of a paginated fetch: its rows and the cursor of the next page (None at the end)."""

    frame: pl.DataFrame
    next_cursor: str | None


class HttpConnection:
    """A ``hubkit.Connection`` over HTTP (httpx). See the module docstring for errors.

    ``HttpConnection(base_url, routes, *, timeout=10.0, retries=3, rate_limit=None, auth=None,
    headers=None, transport=None, rate_limit_headers=None)``:

    - ``routes``: ``{Entity or table name: Route}``, or one ``Route`` for every entity;
    - ``retries``: an int (retries after the first try) or a ``RetryPolicy`` (backoff, waits,
      injectable ``sleep``/``clock``);
    - ``rate_limit``: requests per second (a ``TokenBucket`` is built) or a ``TokenBucket``;
    - ``auth``: called with each outgoing ``httpx.Request`` to sign it (a ``Signer``);
    - ``headers``: extra headers; wrap credentials in ``Secret`` so they stay hidden;
    - ``transport``: an ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport``);
    - ``rate_limit_headers``: the response headers in which the remote reports its rate limit,
      read into ``last_rate_limit`` (None: not read).

    One ``httpx.AsyncClient`` per connection (keep-alive), created by ``connect()`` (or the first
    request) on the running loop; use the connection from that loop only. ``disconnect()``
    closes it; ``connect()`` may open a new one later.
    """

    def __init__(
        self,
        base_url: str,
        routes: Mapping[type | str, Route] | Route,
        *,
        timeout: float = 10.0,
        retries: int | RetryPolicy = 3,
        rate_limit: float | TokenBucket | None = None,
        auth: Signer | None = None,
        headers: Mapping[str, str | Secret] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limit_headers: RateLimitHeaders | None = None,
    ) -> None:
        self._routes: Route | Mapping[type | str, Route] = (
            routes if isinstance(routes, Route) else MappingProxyType(dict(routes))
        )
        self._http = HttpClient(
            base_url,
            timeout=timeout,
            retry=make_retry(retries),
            limiter=make_limiter(rate_limit),
            auth=auth,
            headers=headers,
            transport=transport,
            rate_limit_headers=rate_limit_headers,
        )

    def __repr__(self) -> str:
        routes = 1 if isinstance(self._routes, Route) else len(self._routes)
        auth = "" if self._http.auth is None else f", auth={self._http.auth!r}"
        state = "connected" if self.is_connected else "disconnected"
        return f"<HttpConnection {public_url(self._http.base_url)} routes={routes}{auth} {state}>"

    # -- lifetime -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the HTTP client (no request is sent). Idempotent."""
        await self._http.open()

    async def disconnect(self) -> None:
        """Close the HTTP client and its pooled connections. Idempotent."""
        await self._http.close()

    async def __aenter__(self) -> HttpConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._http.is_open

    # -- status ---------------------------------------------------------------------------

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (every try counts)."""
        return self._http.requests_made

    @property
    def last_rate_limit(self) -> RateLimitInfo | None:
        """The remote's last rate-limit figures (limit, remaining, reset), if it sent any in the
        ``rate_limit_headers`` given at construction."""
        return self._http.last_rate_limit

    @property
    def retry(self) -> RetryPolicy:
        return self._http.retry

    # -- reading --------------------------------------------------------------------------

    def route_for(self, spec: EntitySpec) -> Route:
        """The route of ``spec``: looked up by entity class, then table name, then class name."""
        if isinstance(self._routes, Route):
            return self._routes
        for key in (spec.cls, spec.table, getattr(spec.cls, "__name__", None)):
            if key is not None and key in self._routes:
                return self._routes[key]
        raise SchemaError(f"no HTTP route for {spec.table!r}", field=spec.table)

    def _reply(self, route: Route, what: str, response: httpx.Response) -> Any:
        error = status_error(response, what, self._http.retry)
        if error is not None:
            raise error
        body = parse_json(response, what) if response.content.strip() else None
        if route.envelope is not None:
            reply = Reply(
                what,
                response.status_code,
                response.headers,
                body,
                self._http.retry.clock(),
                self._http.retry.default_rate_wait,
            )
            try:
                route.envelope(reply)
            except HubkitError:
                raise
            except Exception as exc:  # a broken rule or an odd body: still a hubkit error
                raise DecodeError(f"{what}: the envelope rule failed: {exc!r}") from exc
        return body

    def _items(self, route: Route, body: Any, what: str) -> list[Mapping[str, Any]]:
        path = split_path(route.items)
        found = dig(body, path)
        if isinstance(found, Mapping):
            found = [found]
        if not isinstance(found, list):
            where = route.items or "body"
            raise DecodeError(f"{what}: {where!r} is not a list", field=where)
        if route.row_mapper is not None:
            try:
                return [route.row_mapper(item) for item in found]
            except HubkitError:
                raise
            except Exception as exc:
                raise DecodeError(f"{what}: the row mapper failed: {exc!r}") from exc
        for item in found:
            if not isinstance(item, Mapping):
                where = route.items or "body"
                raise DecodeError(f"{what}: an item of {where!r} is not an object", field=where)
        return found

    async def _page_items(
        self, route: Route, params: Mapping[str, Any] | None
    ) -> AsyncIterator[tuple[list[Mapping[str, Any]], str | None]]:
        # GET sends the parameters as the query; other methods send them as a JSON body.
        as_query = route.method.upper() in ("GET", "HEAD", "DELETE")
        merged: dict[str, Any] = {**route.params, **(params or {})}
        query: dict[str, Any] = stringify(merged) if as_query else merged
        what = f"{route.method} {route.path}"
        seen: set[str] = set()
        for _ in range(route.max_pages):
            body = await self._http.send(
                route.method,
                route.path,
                lambda response: self._reply(route, what, response),
                params=query if as_query else None,
                content=None if as_query else encode_json(query),
                idempotent=True,
            )
            items = self._items(route, body, what)
            next_cursor = self._next_cursor(route, body)
            if next_cursor is not None:
                if next_cursor in seen:
                    raise ProtocolError(
                        f"{what}: the cursor did not advance ({next_cursor!r})", temporary=False
                    )
                seen.add(next_cursor)
            yield items, next_cursor
            if next_cursor is None:
                return
            assert route.cursor is not None
            query = {**query, route.cursor.param: next_cursor}
        raise ProtocolError(f"{what}: more than {route.max_pages} pages", temporary=False)

    @staticmethod
    def _next_cursor(route: Route, body: Any) -> str | None:
        if route.cursor is None:
            return None
        value = dig(body, split_path(route.cursor.response), None)
        if value is None or value == "":
            return None
        return str(value)

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Every page of ``spec``'s route with ``params``, decoded into one frame.

        Either the whole result or an error: a failing page discards the pages before it.
        """
        route = self.route_for(spec)
        items: list[Mapping[str, Any]] = []
        async for page_items, _ in self._page_items(route, params):
            items.extend(page_items)
        return decode_items(spec, items)

    async def pages(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Page]:
        """The pages of ``spec``'s route one by one, each decoded, with the next page's cursor.

        For resumable backfills: store a page's rows with its ``next_cursor``, and pass that
        cursor back in ``params`` to resume.
        """
        route = self.route_for(spec)
        async for page_items, next_cursor in self._page_items(route, params):
            yield Page(decode_items(spec, page_items), next_cursor)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        envelope: Envelope | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One request outside the routes (e.g. server time); returns the decoded JSON body.

        Same retries, rate limit, auth and errors as routed requests.
        """
        route = Route(path, envelope=envelope, method=method)
        what = f"{method} {path}"
        return await self._http.send(
            method,
            path,
            lambda response: self._reply(route, what, response),
            params=stringify(params),
            content=None if json is None else encode_json(json),
            idempotent=Verb(method, path).is_idempotent if idempotent is None else idempotent,
        )

    # -- writing --------------------------------------------------------------------------

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """Push a new row (column-keyed); returns the remote's echo (column-keyed), if any.

        ``idempotency_key`` goes out as the ``Idempotency-Key`` header of every try (see
        ``hubkit.Connection``); a remote that honours it applies the write once."""
        route = self.route_for(spec)
        wire = spec.to_wire(row)
        return await self._write(spec, route, route.create, "create", row, wire, idempotency_key)

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """Push a changed row (column-keyed); returns the remote's echo, if any.
        ``idempotency_key``: as for ``create``."""
        route = self.route_for(spec)
        wire = spec.to_wire(row)
        return await self._write(spec, route, route.update, "update", row, wire, idempotency_key)

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        """Delete the row with ``key`` (column-keyed) on the remote.
        ``idempotency_key``: as for ``create``."""
        route = self.route_for(spec)
        wire = key_to_wire(spec, key)
        await self._write(spec, route, route.remove, "remove", key, wire, idempotency_key)

    async def _write(
        self,
        spec: EntitySpec,
        route: Route,
        verb: Verb | None,
        name: str,
        row: Mapping[str, Any],
        wire: Mapping[str, Any],
        idempotency_key: str | None,
    ) -> Mapping[str, Any] | None:
        if verb is None:
            raise SchemaError(f"the route of {spec.table!r} has no {name} verb", field=spec.table)
        path = _fill_path(verb.path, row, wire)
        what = f"{verb.method} {verb.path}"
        params: dict[str, str] | None = None
        content: bytes | None = None
        if verb.send_as == "json":
            content = encode_json(wire)
        elif verb.send_as == "query":
            params = stringify(wire)
        try:
            body = await self._http.send(
                verb.method,
                path,
                lambda response: self._reply(route, what, response),
                params=params,
                content=content,
                idempotent=verb.is_idempotent,
                headers=None if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key},
            )
        except ProtocolError as exc:
            rejection = _as_rejection(exc, route.auth_codes)
            if rejection is exc:
                raise
            raise rejection from exc
        if verb.result is None:
            return None
        return echo_to_row(spec, dig(body, split_path(verb.result), None))


def _fill_path(template: str, row: Mapping[str, Any], wire: Mapping[str, Any]) -> str:
    if "{" not in template:
        return template
    values = _Quoted({**wire, **row})
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise SchemaError(f"cannot fill {template!r} from the row: {exc}") from exc


class _Quoted(dict[str, Any]):
    def __getitem__(self, key: str) -> str:
        return urllib.parse.quote(str(super().__getitem__(key)), safe="")


def _as_rejection(exc: ProtocolError, auth_codes: frozenset[int]) -> ProtocolError:
    """A permanent refusal of a write becomes ``Rejected``; credentials/limits/temporary stay."""
    if isinstance(exc, Rejected | RateLimited) or exc.temporary:
        return exc
    if exc.status in (401, 403, 407) or exc.code in auth_codes:
        return exc
    return Rejected(str(exc), status=exc.status, code=exc.code)
