"""Connections: how rows move between hubkit and a remote (REST, WebSocket, JSON-RPC).

Import this package only when a connection is needed: it pulls in httpx, websockets and
msgspec. Every connection translates third-party errors into ``hubkit.HubkitError`` subclasses
at its boundary and never shows a credential in a repr, a log line or an error.

- ``HttpConnection(base_url, routes, ...)`` with ``Route``/``Cursor``/``Verb``, the ByBit
  envelope rule ``bybit_envelope`` and ``array_row`` for array-shaped rows;
- ``WebSocketConnection(url, decoders, ...)`` with ``TopicDecoder``, the ``WsProtocol`` shape
  and ``BybitWsProtocol``;
- ``JsonRpcConnection(url, methods, ...)`` with ``JsonRpcMethods``;
- ``RetryPolicy``/``Backoff``/``TokenBucket`` (retry and rate-limit logic), ``BybitSigner`` and
  ``Secret`` (auth).
"""

from __future__ import annotations

from hubkit.connections.auth import BybitSigner, Secret, Signer
from hubkit.connections.http import (
    BYBIT_AUTH_CODES,
    BYBIT_TEMPORARY_CODES,
    Cursor,
    Envelope,
    HttpConnection,
    Page,
    Reply,
    Route,
    RowMapper,
    Verb,
    array_row,
    bybit_envelope,
)
from hubkit.connections.jsonrpc import JsonRpcConnection, JsonRpcMethods
from hubkit.connections.retry import Backoff, RateLimitInfo, RetryPolicy, TokenBucket
from hubkit.connections.websocket import WebSocketConnection
from hubkit.connections.wsdecode import Extractor, TopicDecoder, default_extract, renamed
from hubkit.connections.wsproto import (
    BybitWsProtocol,
    WsAck,
    WsData,
    WsEvent,
    WsIgnored,
    WsPong,
    WsProtocol,
)

__all__ = [
    "BYBIT_AUTH_CODES",
    "BYBIT_TEMPORARY_CODES",
    "Backoff",
    "BybitSigner",
    "BybitWsProtocol",
    "Cursor",
    "Envelope",
    "Extractor",
    "HttpConnection",
    "JsonRpcConnection",
    "JsonRpcMethods",
    "Page",
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
    "bybit_envelope",
    "default_extract",
    "renamed",
]
