"""JSON-RPC 2.0 over HTTP POST (httpx): the CRUD verbs mapped to method names.

::

    conn = JsonRpcConnection(
        "http://127.0.0.1:8545/rpc",
        {Instrument: JsonRpcMethods(fetch="instruments.list", create="instruments.create",
                                    update="instruments.update", remove="instruments.remove",
                                    items="items")},
    )
    frame = await conn.fetch(spec, {"category": "linear"})   # params go as a JSON object

Each call is ``{"jsonrpc": "2.0", "method": ..., "params": {...}, "id": n}`` with a fresh id;
the answer must carry the same id.

Idempotency: a write given ``idempotency_key`` (a sink always gives one, the same on every try
of that write, also after a restart) sends that key as the request ``id`` (a string, which
JSON-RPC 2.0 allows) instead of a fresh number, and as an ``Idempotency-Key`` HTTP header; the
``params`` stay the row, unless ``JsonRpcMethods.idempotency_param`` names a parameter to carry
the key too. A server that remembers the ids of the writes it applied and answers a repeated
id with the first result, without applying it again, gets each write exactly once.

Errors:

- an error object -> ``ProtocolError(code=...)``; codes -32000..-32099 (implementation-defined
  server errors) are temporary and retried like 5xx; any other code is permanent, and for a
  write it is raised as ``Rejected`` (the write will never succeed as sent);
- HTTP statuses, transport errors, retries, rate limits and auth: as ``HttpConnection``;
- an answer with the wrong id, no ``result``/``error``, or not JSON -> ``ProtocolError`` /
  ``DecodeError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import polars as pl

from hubkit.connections._transport import (
    HttpClient,
    encode_json,
    make_limiter,
    make_retry,
    public_url,
    status_error,
    userinfo_auth,
)
from hubkit.connections._wire import decode_items, dig, echo_to_row, key_to_wire, split_path
from hubkit.connections.auth import Secret, Signer
from hubkit.connections.retry import RateLimitHeaders, RateLimitInfo, RetryPolicy, TokenBucket
from hubkit.connections.routes import IDEMPOTENCY_HEADER, Cursor
from hubkit.errors import DecodeError, ProtocolError, Rejected, SchemaError

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["JsonRpcConnection", "JsonRpcMethods", "is_temporary_code"]


def is_temporary_code(code: int) -> bool:
    """JSON-RPC 2.0 reserves -32000..-32099 for server errors: worth another try."""
    return -32099 <= code <= -32000


@dataclass(frozen=True)
class JsonRpcMethods:
    """The method names of one entity; None where the API has no such method.

    ``items``: where the rows sit inside ``result`` (dotted; None: ``result`` itself, a list or
    one object). ``params``: static parameters of ``fetch`` (call parameters override).
    ``cursor``: pagination inside ``result`` (``Cursor("next", "cursor")``), or None.
    ``echo``: create/update answer with the written row (decoded and returned). ``idempotent``:
    writes may be repeated blindly after an unclear failure (default False).
    ``idempotency_param``: also pass a write's idempotency key in ``params`` under this name
    (for servers that read it there); None (default): only the request id and the header.
    """

    fetch: str | None = None
    create: str | None = None
    update: str | None = None
    remove: str | None = None
    items: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    cursor: Cursor | None = None
    echo: bool = True
    idempotent: bool = False
    max_pages: int = 10_000
    idempotency_param: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


class JsonRpcConnection:
    """A ``hubkit.Connection`` speaking JSON-RPC 2.0 over HTTP POST.

    ``JsonRpcConnection(url, methods, *, timeout=10.0, retries=3, rate_limit=None, auth=None,
    headers=None, transport=None, rate_limit_headers=None)``: ``methods`` is
    ``{Entity or table name: JsonRpcMethods}`` or one ``JsonRpcMethods`` for every entity; the
    other arguments are as for ``HttpConnection``. One httpx client per connection, made on
    ``connect()`` (or first use).
    """

    def __init__(
        self,
        url: str,
        methods: Mapping[type | str, JsonRpcMethods] | JsonRpcMethods,
        *,
        timeout: float = 10.0,
        retries: int | RetryPolicy = 3,
        rate_limit: float | TokenBucket | None = None,
        auth: Signer | None = None,
        headers: Mapping[str, str | Secret] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limit_headers: RateLimitHeaders | None = None,
    ) -> None:
        # Credentials in the URL travel as a Basic header, so no log line shows them.
        self.url, url_headers, url_secrets = userinfo_auth(url)
        self._methods: JsonRpcMethods | Mapping[type | str, JsonRpcMethods] = (
            methods if isinstance(methods, JsonRpcMethods) else MappingProxyType(dict(methods))
        )
        # No base URL: httpx would add a trailing slash to it, and an RPC endpoint is one URL.
        self._http = HttpClient(
            "",
            timeout=timeout,
            retry=make_retry(retries),
            limiter=make_limiter(rate_limit),
            auth=auth,
            headers={**url_headers, **dict(headers or {})},
            transport=transport,
            rate_limit_headers=rate_limit_headers,
            secrets=url_secrets,
        )
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        auth = "" if self._http.auth is None else f", auth={self._http.auth!r}"
        return f"<JsonRpcConnection {public_url(self.url)}{auth} {state}>"

    async def connect(self) -> None:
        """Open the HTTP client (no request is sent). Idempotent."""
        await self._http.open()

    async def disconnect(self) -> None:
        """Close the HTTP client. Idempotent."""
        await self._http.close()

    async def __aenter__(self) -> JsonRpcConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._http.is_open

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (every try counts)."""
        return self._http.requests_made

    @property
    def last_rate_limit(self) -> RateLimitInfo | None:
        return self._http.last_rate_limit

    def methods_for(self, spec: EntitySpec) -> JsonRpcMethods:
        """The methods of ``spec``: by entity class, then table name, then class name."""
        if isinstance(self._methods, JsonRpcMethods):
            return self._methods
        for key in (spec.cls, spec.table, getattr(spec.cls, "__name__", None)):
            if key is not None and key in self._methods:
                return self._methods[key]
        raise SchemaError(f"no JSON-RPC methods for {spec.table!r}", field=spec.table)

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        idempotent: bool = True,
        request_id: str | None = None,
    ) -> Any:
        """Call ``method`` with ``params`` (an object, a list or None); returns ``result``.

        ``request_id``: the JSON-RPC id to send (every try of this call sends it, and it also
        goes out as the ``Idempotency-Key`` header); default a fresh number per call.
        Raises ``ProtocolError(code=...)`` for an error object (see the module docstring).
        """
        rid: str | int = next(self._ids) if request_id is None else request_id
        document: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            document["params"] = params
        content = encode_json(document)
        what = f"JSON-RPC {method}"
        return await self._http.send(
            "POST",
            self.url,
            lambda response: self._answer(response, what, rid),
            content=content,
            idempotent=idempotent,
            headers=None if request_id is None else {IDEMPOTENCY_HEADER: request_id},
        )

    def _answer(self, response: httpx.Response, what: str, request_id: str | int) -> Any:
        body: Any = None
        if response.content.strip():
            try:
                body = msgspec.json.decode(response.content)
            except msgspec.DecodeError as exc:
                error = status_error(response, what, self._http.retry)
                if error is not None:
                    raise error from None
                raise DecodeError(f"{what}: the answer is not JSON ({exc})") from exc
        # Some servers send HTTP 4xx/5xx with a proper error object: prefer the object.
        if not (isinstance(body, Mapping) and isinstance(body.get("error"), Mapping)):
            error = status_error(response, what, self._http.retry)
            if error is not None:
                raise error
        if not isinstance(body, Mapping):
            raise DecodeError(f"{what}: the answer is not a JSON-RPC object", field="jsonrpc")
        # A null id is allowed only for errors the server could not tie to a request.
        id_ok = body.get("id") == request_id or (body.get("id") is None and "error" in body)
        if not id_ok:
            raise ProtocolError(
                f"{what}: answer id {body.get('id')!r} does not match request {request_id}",
                temporary=True,
            )
        if "error" in body and body["error"] is not None:
            raise _error_object(what, body["error"], response.status_code)
        if "result" not in body:
            raise DecodeError(f"{what}: the answer has neither result nor error", field="result")
        return body["result"]

    # -- Connection verbs -----------------------------------------------------------------

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Every page of the ``fetch`` method with ``params``, decoded into one frame."""
        methods = self.methods_for(spec)
        name = _need(methods.fetch, spec, "fetch")
        query: dict[str, Any] = {**methods.params, **(params or {})}
        items: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        for _ in range(methods.max_pages):
            result = await self.call(name, query)
            items.extend(_items(result, methods.items, name))
            next_cursor = _next_cursor(result, methods.cursor)
            if next_cursor is None:
                return decode_items(spec, items)
            if next_cursor in seen:
                raise ProtocolError(
                    f"JSON-RPC {name}: the cursor did not advance ({next_cursor!r})",
                    temporary=False,
                )
            seen.add(next_cursor)
            assert methods.cursor is not None
            query = {**query, methods.cursor.param: next_cursor}
        raise ProtocolError(
            f"JSON-RPC {name}: more than {methods.max_pages} pages", temporary=False
        )

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """Call the ``create`` method with the row's wire form; returns the echoed row, if any.
        ``idempotency_key`` becomes the request id (see the module docstring)."""
        methods = self.methods_for(spec)
        name = _need(methods.create, spec, "create")
        return await self._write(spec, methods, name, spec.to_wire(row), key=idempotency_key)

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """Call the ``update`` method with the row's wire form; returns the echoed row, if any.
        ``idempotency_key``: as for ``create``."""
        methods = self.methods_for(spec)
        name = _need(methods.update, spec, "update")
        return await self._write(spec, methods, name, spec.to_wire(row), key=idempotency_key)

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        """Call the ``remove`` method with the key (wire names).
        ``idempotency_key``: as for ``create``."""
        methods = self.methods_for(spec)
        name = _need(methods.remove, spec, "remove")
        wire = key_to_wire(spec, key)
        await self._write(spec, methods, name, wire, echo=False, key=idempotency_key)

    async def _write(
        self,
        spec: EntitySpec,
        methods: JsonRpcMethods,
        name: str,
        params: Mapping[str, Any],
        *,
        echo: bool = True,
        key: str | None = None,
    ) -> Mapping[str, Any] | None:
        sent = dict(params)
        if key is not None and methods.idempotency_param is not None:
            sent[methods.idempotency_param] = key
        try:
            result = await self.call(name, sent, idempotent=methods.idempotent, request_id=key)
        except ProtocolError as exc:
            if exc.temporary or isinstance(exc, Rejected) or exc.status in (401, 403, 407):
                raise
            raise Rejected(str(exc), status=exc.status, code=exc.code) from exc
        if not (echo and methods.echo):
            return None
        return echo_to_row(spec, result)


def _need(name: str | None, spec: EntitySpec, verb: str) -> str:
    if name is None:
        raise SchemaError(f"no JSON-RPC {verb} method for {spec.table!r}", field=spec.table)
    return name


def _error_object(what: str, error: Mapping[str, Any], status: int) -> ProtocolError:
    raw_code = error.get("code")
    try:
        code = int(raw_code) if raw_code is not None else None
    except (TypeError, ValueError):
        code = None
    message = str(error.get("message") or "error")
    temporary = code is not None and is_temporary_code(code)
    return ProtocolError(
        f"{what}: error {code}: {message}",
        status=status if status >= 400 else None,
        code=code,
        temporary=temporary,
    )


def _items(result: Any, path: str | None, name: str) -> list[Mapping[str, Any]]:
    found = dig(result, split_path(path))
    if isinstance(found, Mapping):
        return [found]
    if not isinstance(found, list) or not all(isinstance(item, Mapping) for item in found):
        where = f"result.{path}" if path else "result"
        raise DecodeError(f"JSON-RPC {name}: {where} is not a list of objects", field=where)
    return found


def _next_cursor(result: Any, cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    value = dig(result, split_path(cursor.response), None)
    if value is None or value == "":
        return None
    return str(value)
