"""Fault switches of the ByBit simulator, and the counters that prove each one fired.

Set them when the simulator is made (``BybitSimulator(faults=Faults(...))``) or while it runs
(``sim.faults.http_5xx_next = 3``); the server reads them on every request and message, so a
change takes effect at once. "next K" switches count down as they fire; everything else stays
on until set back. Every fault that fires adds one to ``sim.fault_counts[<name>]``:

========================  =========================================================================
counter                   fired when
========================  =========================================================================
``ws_drop_messages``      a connection is dropped after ``drop_ws_every_n_messages`` data messages
``ws_drop_timer``         a connection is dropped ``drop_ws_every_seconds`` after it opened
``ws_drop_manual``        ``sim.disconnect_all()`` dropped a connection
``ws_slow_consumer``      a client fell more than ``ws_max_buffer`` bytes behind (close 1008)
``ping_ignored``          a ping (JSON ``op: ping`` or a protocol ping) went unanswered
``malformed_invalid_json``  a data message was replaced by text that is not JSON
``malformed_wrong_types``   ... by the message with numbers and strings swapped
``malformed_missing_fields`` ... by the message without ``ts`` and item fields
``http_5xx``              a request got ``http_5xx_status``
``http_429``              a request got 429 with ``Retry-After``
``http_10006``            a request got retCode 10006 with the ``X-Bapi-Limit*`` headers
``http_slow``             a response was delayed by ``slow_response_seconds``
``http_timeout``          a request was never answered
``http_truncated``        a response body was cut short and the connection closed
``ip_limited``            the IP limit answered HTTP 403 (not a switch: ByBit's rule, see
                          ``BybitSimulator(ip_limit=...)``)
========================  =========================================================================

Dropping a connection closes the TCP stream without a close frame (the client sees 1006); a
slow consumer is the exception: it gets close code 1008 after the data it was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

__all__ = ["MALFORMED_KINDS", "FaultCounter", "Faults"]

MALFORMED_KINDS = ("invalid_json", "wrong_types", "missing_fields")


@dataclass
class Faults:
    """Fault switches; all off by default. Attributes may be changed at any time."""

    # -- WebSocket ----------------------------------------------------------------------
    drop_ws_every_n_messages: int | None = None
    """Drop each connection once it has been sent this many data messages."""
    drop_ws_every_seconds: float | None = None
    """Drop each connection this many wall-clock seconds after it opened."""
    ignore_pings: bool = False
    """Answer neither JSON ``op: ping`` nor WebSocket protocol pings."""
    malformed_every_n_messages: int | None = None
    """Replace every n-th data message of a connection by a malformed one."""
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    """Kinds used in turn: ``invalid_json``, ``wrong_types``, ``missing_fields``."""

    # -- HTTP ---------------------------------------------------------------------------
    http_path: str | None = None
    """When set, HTTP faults apply only to requests whose path contains this text."""
    http_5xx_next: int = 0
    """Answer the next K requests with ``http_5xx_status`` (a short text body)."""
    http_5xx_status: int = 503
    http_429_next: int = 0
    """Answer the next K requests with HTTP 429 and ``Retry-After: retry_after_seconds``."""
    retry_after_seconds: float = 1.0
    rate_limit_next: int = 0
    """Answer the next K requests with HTTP 200 / retCode 10006 and ``X-Bapi-Limit*`` headers
    whose reset timestamp is ``rate_limit_reset_ms`` after now."""
    rate_limit_reset_ms: int = 1000
    slow_response_seconds: float = 0.0
    """Delay every response by this many seconds."""
    timeout_next: int = 0
    """Never answer the next K requests (the connection stays open until the client leaves)."""
    truncate_next: int = 0
    """Send only half of the body of the next K responses, then close the connection."""

    def reset(self) -> None:
        """Switch every fault off."""
        for f in fields(self):
            setattr(self, f.name, f.default)

    def http_applies(self, path: str) -> bool:
        """Whether HTTP faults apply to a request for ``path``."""
        return self.http_path is None or self.http_path in path

    def take(self, name: str) -> bool:
        """Consume one shot of the "next K" switch ``name``; True when it fired."""
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False


@dataclass
class FaultCounter:
    """Thread-safe counts of fired faults, by counter name (see the module docstring)."""

    _counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> Mapping[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self._counts)
