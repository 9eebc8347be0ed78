"""Testing helpers: an in-memory connection, a ByBit v5 simulator, a JSON-RPC notes server
and pytest fixtures.

``from hubkit.testing import BybitSimulator`` imports the simulator on first use only, so
``import hubkit.testing`` stays cheap and needs no test-only packages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubkit.testing.bybit import BybitSimulator, Faults
    from hubkit.testing.jsonrpc_notes import NotesServer
    from hubkit.testing.memory import InMemoryConnection

__all__ = ["BybitSimulator", "Faults", "InMemoryConnection", "NotesServer"]


def __getattr__(name: str) -> Any:
    if name in ("BybitSimulator", "Faults"):
        from hubkit.testing import bybit

        return getattr(bybit, name)
    if name == "InMemoryConnection":
        from hubkit.testing.memory import InMemoryConnection

        return InMemoryConnection
    if name == "NotesServer":
        from hubkit.testing.jsonrpc_notes import NotesServer

        return NotesServer
    raise AttributeError(f"module 'hubkit.testing' has no attribute {name!r}")
