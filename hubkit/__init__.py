"""hubkit: keep dataclass entities in sync between a remote source, SQLite and a Polars cache."""

from __future__ import annotations

from hubkit.cache import FrameCache
from hubkit.entity import EntitySpec, reflect, wire
from hubkit.errors import (
    BridgeError,
    ClosedError,
    DecodeError,
    HubkitError,
    OfflineError,
    ProtocolError,
    RateLimited,
    Rejected,
    RemoteError,
    RemoteTimeout,
    SchemaError,
    StoreError,
    SyncError,
    TransportError,
    ValidationError,
)
from hubkit.store import Store
from hubkit.types import (
    Change,
    Connection,
    Gap,
    Message,
    Op,
    Reconnected,
    ScheduleStatus,
    Source,
    StreamingConnection,
    SyncPolicy,
    SyncStatus,
)

__version__ = "0.1.0"

__all__ = [
    "BridgeError",
    "Change",
    "ClosedError",
    "Connection",
    "DecodeError",
    "EntitySpec",
    "FrameCache",
    "Gap",
    "HubkitError",
    "Message",
    "OfflineError",
    "Op",
    "ProtocolError",
    "RateLimited",
    "Reconnected",
    "Rejected",
    "RemoteError",
    "RemoteTimeout",
    "ScheduleStatus",
    "SchemaError",
    "Source",
    "Store",
    "StoreError",
    "StreamingConnection",
    "SyncError",
    "SyncPolicy",
    "SyncStatus",
    "TransportError",
    "ValidationError",
    "__version__",
    "reflect",
    "wire",
]
