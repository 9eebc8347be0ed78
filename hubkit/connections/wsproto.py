"""WebSocket message shapes: what to send to (un)subscribe and ping, and what a frame means.

A ``WsProtocol`` is pure logic (no I/O), so each shape is testable without a socket; the
``WebSocketConnection`` does the I/O and is given the protocol of the API it talks to (a
provider package defines its API's protocol).

A protocol turns a list of topics into the text frame that subscribes or unsubscribes them (at
most ``max_args`` topics per request), makes an application-level ping (or None), and says what
a received frame is: a ``WsData`` (topic, kind, payload), a ``WsAck`` (the verdict on a
request), a ``WsPong``, or a ``WsIgnored`` control frame; a malformed frame raises
``DecodeError`` naming the field. ``parse_lazy`` is ``parse`` except that a data frame's payload
may stay JSON text (``msgspec.Raw``) for the topic's decoder to read in one pass.

To speak another API, write an object with ``max_args`` and the five methods of ``WsProtocol``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import msgspec

__all__ = [
    "WsAck",
    "WsData",
    "WsEvent",
    "WsIgnored",
    "WsPong",
    "WsProtocol",
    "check_topics",
    "chunked",
    "decode_error_field",
    "preview",
]


class WsData(msgspec.Struct, frozen=True):
    """A data frame: ``data`` is the payload as plain JSON values (list or object), or its
    JSON text (``msgspec.Raw``) when it came from ``parse_lazy``.

    (A msgspec Struct rather than a dataclass: one is made per frame, and it builds ~2x faster.)
    """

    topic: str
    kind: str  # "snapshot" | "delta"
    data: Any
    ts: int | float | None = None


class WsAck(msgspec.Struct, frozen=True):
    """The answer to a subscribe/unsubscribe request.

    ``req_id`` is None when the shape carries none (option acks); then ``succeeded``/``failed``
    name the topics. ``failed`` lists refused topics when the frame says which.
    """

    success: bool
    req_id: str | None
    op: str | None
    message: str = ""
    succeeded: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


class WsPong(msgspec.Struct, frozen=True):
    """An application-level pong."""


class WsIgnored(msgspec.Struct, frozen=True):
    """A control frame that needs no action (e.g. an auth reply); ``what`` says which."""

    what: str


WsEvent = WsData | WsAck | WsPong | WsIgnored


class WsProtocol(Protocol):
    """The message shapes of one WebSocket API. ``max_args``: topics per (un)subscribe request."""

    max_args: int

    def subscribe(self, topics: Sequence[str], req_id: str) -> str:
        """The text frame that subscribes ``topics``."""
        ...

    def unsubscribe(self, topics: Sequence[str], req_id: str) -> str:
        """The text frame that unsubscribes ``topics``."""
        ...

    def ping(self, req_id: str) -> str | None:
        """An application-level ping frame, or None when the API has none."""
        ...

    def parse(self, raw: bytes | str) -> WsEvent:
        """What a received frame means; ``DecodeError(field=...)`` for a malformed one."""
        ...

    def parse_lazy(self, raw: bytes | str) -> WsEvent:
        """``parse``, except that a data frame's payload may stay JSON text (``msgspec.Raw``).

        A protocol without a faster path returns ``parse(raw)``.
        """
        ...


def check_topics(topics: Sequence[str]) -> list[str]:
    """``topics`` as a list; ``TypeError`` for one string or a topic that is not a non-empty
    string."""
    if isinstance(topics, str):
        raise TypeError("topics must be a list of strings, not one string")
    for topic in topics:
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"a topic must be a non-empty string, not {topic!r}")
    return list(topics)


def chunked(topics: Sequence[str], size: int) -> Iterator[list[str]]:
    """``topics`` in consecutive lists of at most ``size`` (at least one per list)."""
    step = max(1, size)
    iterator = iter(topics)
    while chunk := list(itertools.islice(iterator, step)):
        yield chunk


_FIELD_AT = re.compile(r"at `\$\.?([^`]*)`")


def decode_error_field(exc: msgspec.DecodeError) -> str | None:
    """The field a msgspec error points at (``"topic"``, ``"data[0].p"``), or None."""
    match = _FIELD_AT.search(str(exc))
    if match is None or not match.group(1):
        return None
    return match.group(1)


def preview(raw: bytes | str, limit: int = 200) -> str:
    """The start of a frame as text, for error messages (``…`` marks a cut)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= limit else text[:limit] + "…"
