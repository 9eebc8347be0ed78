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
from hubkit.policies import (
    Bidirectional,
    PeriodicSync,
    PushAfterWrite,
    QueryOnInit,
    WebSocketSubscription,
    remote_wins,
)
from hubkit.sink import Sink, Subscription, aopen_sink, open_sink
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
    "Bidirectional",
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
    "PeriodicSync",
    "ProtocolError",
    "PushAfterWrite",
    "QueryOnInit",
    "RateLimited",
    "Reconnected",
    "Rejected",
    "RemoteError",
    "RemoteTimeout",
    "ScheduleStatus",
    "SchemaError",
    "Sink",
    "Source",
    "Store",
    "StoreError",
    "StreamingConnection",
    "Subscription",
    "SyncError",
    "SyncPolicy",
    "SyncStatus",
    "TransportError",
    "ValidationError",
    "WebSocketSubscription",
    "__version__",
    "aopen_sink",
    "open_sink",
    "reflect",
    "remote_wins",
    "wire",
]
