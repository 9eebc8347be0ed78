"""Credentials that never print themselves, and the shape of a request signer.

``Secret("...")`` wraps an API key or secret: its ``repr``/``str``/format show ``'********'``;
only ``reveal()`` gives the value, and only the code that puts it on the wire calls it. A value
read from a file or an environment variable often ends with a newline: surrounding whitespace
is stripped; a line break or control character inside (or nothing at all) is refused with a
``ValidationError`` that does not show the value.

``redact(text, secrets)`` masks every secret in ``text`` in each form it may take there: as
is, escaped as by ``repr`` or JSON, and percent-encoded (as in a URL or a form).

Keeping logs clean: hubkit never hands httpx a URL with user info (``http://user:pw@host``
becomes a Basic ``Authorization`` header held as a ``Secret``), so httpx's INFO line
``HTTP Request: GET <url> ...`` shows no password; httpcore's DEBUG trace names events and
methods, not headers or bodies. Query parameters are logged by httpx as they are: send keys in
headers (``Secret``) or through a ``Signer``, never as parameters. To keep both libraries
quiet whatever the root level: ``logging.getLogger("httpx").setLevel(logging.WARNING)`` and
``logging.getLogger("httpcore").setLevel(logging.WARNING)``. ``websockets`` logs a handshake's
headers (an ``Authorization`` header among them) at DEBUG on the ``websockets`` logger: keep
that one at INFO or above too.

A ``Signer`` is the auth hook of ``HttpConnection``/``JsonRpcConnection``: called with each
outgoing ``httpx.Request`` (every attempt, so retries carry a fresh timestamp), it adds the
credentials in place; ``secrets()`` names the values to scrub from any text hubkit shows.
Provider packages bring the signer of their API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Protocol

import httpx

from hubkit.errors import ValidationError

__all__ = ["Secret", "Signer", "redact", "without_userinfo"]

_MASK = "********"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
        cleaned = raw.strip()  # a key read from a file ends with a newline
        if not cleaned:
            raise ValidationError("a credential is empty (or only whitespace)")
        found = _CONTROL.search(cleaned)
        if found is not None:
            raise ValidationError(
                f"a credential holds a line break or control character at position "
                f"{found.start()} (not shown); a credential is one line"
            )
        self._value = cleaned

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


def _forms(value: str) -> set[str]:
    """The ways ``value`` may be written in a message, a log line or a URL."""
    forms = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        repr(value.encode())[2:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    }
    return {form for form in forms if form}


def redact(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every secret replaced by ``'********'``, in each form it may take there:
    as is, escaped (``repr``, JSON, bytes) or percent-encoded (hex digits in either case)."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= _forms(secret.reveal())
    if not forms:
        return text
    # Longest first, so that a form containing another is masked whole.
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, _MASK, text, flags=re.IGNORECASE)


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (for messages and logs); otherwise unchanged."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
