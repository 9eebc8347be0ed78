"""Connections: how rows move between hubkit and a remote (REST, WebSocket, JSON-RPC).

Import this package only when a connection is needed: it pulls in httpx, websockets and
msgspec. Every connection translates third-party errors into ``hubkit.HubkitError`` subclasses
at its boundary and never shows a credential in a repr, a log line or an error. Nothing here
knows a particular remote: an API's envelope rule, message protocol and signer are passed in
by the provider package that knows the API.

- ``HttpConnection(base_url, routes, ...)`` with ``Route``/``Cursor``/``Verb``, ``Envelope``
  rules and ``array_row`` for array-shaped rows;
- ``WebSocketConnection(url, decoders, protocol=..., ...)`` with ``TopicDecoder`` and the
  ``WsProtocol`` shape;
- ``JsonRpcConnection(url, methods, ...)`` with ``JsonRpcMethods``;
- ``RetryPolicy``/``Backoff``/``TokenBucket`` (retry and rate-limit logic), ``Signer`` and
  ``Secret`` (auth).
"""

from __future__ import annotations

from hubkit.connections.auth import Secret, Signer
from hubkit.connections.http import HttpConnection, Page
from hubkit.connections.jsonrpc import JsonRpcConnection, JsonRpcMethods
from hubkit.connections.retry import (
    Backoff,
    RateLimitHeaders,
    RateLimitInfo,
    RetryPolicy,
    TokenBucket,
)
from hubkit.connections.routes import Cursor, Envelope, Reply, Route, RowMapper, Verb, array_row
from hubkit.connections.websocket import WebSocketConnection
from hubkit.connections.wsdecode import Extractor, TopicDecoder, default_extract, renamed
from hubkit.connections.wsproto import (
    WsAck,
    WsData,
    WsEvent,
    WsIgnored,
    WsPong,
    WsProtocol,
)

__all__ = [
    "Backoff",
    "Cursor",
    "Envelope",
    "Extractor",
    "HttpConnection",
    "JsonRpcConnection",
    "JsonRpcMethods",
    "Page",
    "RateLimitHeaders",
    "RateLimitInfo",
    "Reply",
    "RetryPolicy",
    "Route",
    "RowMapper",
    "Secret",
    "Signer",
    "TokenBucket",
    "TopicDecoder",
    "Verb",
    "WebSocketConnection",
    "WsAck",
    "WsData",
    "WsEvent",
    "WsIgnored",
    "WsPong",
    "WsProtocol",
    "array_row",
    "default_extract",
    "renamed",
]
