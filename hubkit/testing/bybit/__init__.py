"""A ByBit v5 public API simulator (REST + WebSocket on one loopback port).

``BybitSimulator`` is the entry point; ``Faults`` holds its fault switches. Module map:
``instruments`` (instrument lists from ``datasets/``, listed and delisted at run time),
``pricing`` (clock, hashing, price paths), ``trades`` / ``book`` / ``market`` (deterministic
generators), ``rest`` and ``ws`` (protocol logic), ``server`` (TCP and HTTP/1.1 through h11),
``wsconn`` (one WebSocket client), ``hub`` (subscriptions and publishing), ``groundtruth``,
``faults``, ``simulator``.
"""

from __future__ import annotations

from hubkit.testing.bybit.faults import Faults
from hubkit.testing.bybit.simulator import DEFAULT_SYMBOLS, BybitSimulator

__all__ = ["DEFAULT_SYMBOLS", "BybitSimulator", "Faults"]
