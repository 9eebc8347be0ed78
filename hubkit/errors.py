"""The one exception tree of hubkit.

Every error hubkit raises or hands to an error handler is a ``HubkitError``; third-party
errors are translated at the boundary (``raise hubkit.TransportError(...) from exc``)::

    HubkitError
    ├── SchemaError            a dataclass or key hubkit cannot map (raised at sink creation)
    ├── ValidationError        a value that does not fit its column (the whole batch is rejected)
    ├── ParameterError         an argument hubkit cannot use (also a ValueError)
    ├── NotFoundError          no dataset or table of that name (also a KeyError)
    ├── WaitTimeout            a blocking wait ran out of time (also a TimeoutError)
    ├── StoreError             the SQL store failed (locked, unreachable, incompatible schema)
    │   ├── StorePathError     the path cannot hold a store (missing folder, a folder, ...)
    │   ├── CorruptStoreError  the file is not a SQLite database, or is damaged
    │   ├── ReadOnlyStoreError a write to a store opened read-only
    │   └── SchemaChangeError  a stored table needs migrating to a changed dataclass
    ├── ClosedError            a sink, store or connection used after close
    ├── BridgeError            misuse of the event-loop bridge (e.g. a blocking call on its thread)
    ├── OfflineError           no remote reachable and no stored data to fall back on
    ├── RemoteError            the remote side did something unexpected
    │   ├── TransportError     connect/read/write failed (the request may be retried)
    │   │   └── RemoteTimeout  no answer in time
    │   ├── ProtocolError      an error answer (HTTP status, retCode, JSON-RPC error)
    │   │   ├── RateLimited    the remote asked us to wait (429, ByBit 10006, HTTP 403 IP limit)
    │   │   └── Rejected       a permanent refusal of a write (not retried)
    │   └── DecodeError        a frame or body that does not parse into the entity
    └── SyncError              a sync step failed for another reason (wraps the cause)

The three that also derive from a builtin exception keep ``except ValueError``,
``except KeyError`` and ``except TimeoutError`` clauses working. ``StorePathError``,
``CorruptStoreError`` and ``ReadOnlyStoreError`` carry the file in ``path``.

``RemoteError.temporary`` tells retry logic whether trying again can help.

Warnings have their own small tree: ``HubkitWarning`` (a ``UserWarning``) and
``StaleDataWarning`` (stored data returned because the remote could not be reached).
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "ClosedError",
    "CorruptStoreError",
    "DecodeError",
    "HubkitError",
    "HubkitWarning",
    "NotFoundError",
    "OfflineError",
    "ParameterError",
    "ProtocolError",
    "RateLimited",
    "ReadOnlyStoreError",
    "Rejected",
    "RemoteError",
    "RemoteTimeout",
    "SchemaChangeError",
    "SchemaError",
    "StaleDataWarning",
    "StoreError",
    "StorePathError",
    "SyncError",
    "TransportError",
    "ValidationError",
    "WaitTimeout",
]


class HubkitError(Exception):
    """Root of every error hubkit raises."""


class SchemaError(HubkitError):
    """An entity definition or key that hubkit cannot map; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ValidationError(HubkitError):
    """A value that does not fit its column; the message names the column. Nothing was stored."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class ParameterError(HubkitError, ValueError):
    """An argument hubkit cannot use (a dataset parameter, a setting); the message names it.

    Also a ``ValueError``."""


class NotFoundError(HubkitError, KeyError):
    """No dataset, table, ... of that name; the message lists the known ones.

    Also a ``KeyError`` (whose text would otherwise be shown quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WaitTimeout(HubkitError, TimeoutError):
    """A blocking wait ran out of time (``WriteResult.wait``, a bridge call with ``timeout``).

    Also a ``TimeoutError``."""


class StoreError(HubkitError):
    """The SQL store failed."""


class _StoreFileError(StoreError):
    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StorePathError(_StoreFileError):
    """The path cannot hold a store: its folder is missing or not writable, or it is a folder.

    ``path`` is the file hubkit was asked to use. Raised by ``Store(...)``; nothing is created.
    """


class CorruptStoreError(_StoreFileError):
    """The file ``path`` is not a SQLite database, or is damaged (e.g. truncated)."""


class ReadOnlyStoreError(_StoreFileError):
    """A write to a store that is open read-only (its file or folder is not writable).

    ``path`` is the file. Make it writable and open a new ``Store`` to write."""


class SchemaChangeError(StoreError):
    """A stored table was written for a definition that cannot be evolved in place; the
    message names each difference and the call (and command) that migrates the table."""


class ClosedError(HubkitError):
    """An object was used after it was closed; closed objects are never reopened."""


class BridgeError(HubkitError):
    """The event-loop bridge was misused, e.g. a blocking call from hubkit's own loop thread."""


class OfflineError(HubkitError):
    """The remote is unreachable and there is no stored data to return instead."""


class RemoteError(HubkitError):
    """The remote side failed. ``temporary`` says whether a retry can help."""

    temporary: bool = True


class TransportError(RemoteError):
    """Connecting, sending or receiving failed."""


class RemoteTimeout(TransportError):
    """The remote did not answer in time."""


class ProtocolError(RemoteError):
    """The remote answered with an error: an HTTP status, a ByBit retCode, a JSON-RPC error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        temporary: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        if temporary is not None:
            self.temporary = temporary
        else:
            self.temporary = status is not None and (status >= 500 or status == 429)


class RateLimited(ProtocolError):
    """The remote asked us to slow down; ``retry_after`` is the wait in seconds it asked for."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, temporary=True)
        self.retry_after = retry_after


class Rejected(ProtocolError):
    """The remote permanently refused a write; it is not retried."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message, status=status, code=code, temporary=False)


class DecodeError(RemoteError):
    """A message or body that does not decode into the entity; the message names the field."""

    temporary = False

    def __init__(self, message: str, *, field: str | None = None, raw: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.raw = raw


class SyncError(HubkitError):
    """A sync step failed for a reason not covered above; ``__cause__`` holds the original."""


class HubkitWarning(UserWarning):
    """Root of every warning hubkit issues."""


class StaleDataWarning(HubkitWarning):
    """Stored data was returned because it could not be refreshed; the message gives its age."""


def as_hubkit(exc: BaseException) -> HubkitError:
    """``exc`` itself when it is a ``HubkitError``, else a ``SyncError`` caused by it (for
    errors of background work handed to an error handler)."""
    if isinstance(exc, HubkitError):
        return exc
    error = SyncError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
