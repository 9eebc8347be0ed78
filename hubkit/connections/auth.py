"""Credentials that never print themselves, and the shape of a request signer.

``Secret("...")`` wraps an API key or secret: its ``repr``/``str``/format show ``'********'``;
only ``reveal()`` gives the value, and only the code that puts it on the wire calls it.

A ``Signer`` is the auth hook of ``HttpConnection``/``JsonRpcConnection``: called with each
outgoing ``httpx.Request`` (every attempt, so retries carry a fresh timestamp), it adds the
credentials in place; ``secrets()`` names the values to scrub from any text hubkit shows.
Provider packages bring the signer of their API.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Protocol

import httpx

__all__ = ["Secret", "Signer", "redact"]

_MASK = "********"


class Secret:
    """A string that does not show itself in reprs, logs or error messages.

    ``Secret(value)``; ``reveal()`` returns the value. Equality is constant-time. Not picklable,
    so a secret cannot leak into a pickled object or a store by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(raw, str):
            raise TypeError("Secret wraps a str")
        self._value = raw

    def reveal(self) -> str:
        """The wrapped value; call it only where the value goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, hashlib.sha256(self._value.encode()).digest()))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


class Signer(Protocol):
    """An auth hook: adds credentials to an outgoing request in place.

    ``secrets()`` lists the values the hook knows, so connections can scrub them out of any text
    that comes back from the remote before it reaches an error message or a log line.
    """

    def __call__(self, request: httpx.Request) -> None: ...

    def secrets(self) -> Iterable[Secret]: ...


def redact(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every (non-empty) secret value replaced by ``'********'``."""
    for secret in secrets:
        value = secret.reveal()
        if value and value in text:
            text = text.replace(value, _MASK)
    return text
