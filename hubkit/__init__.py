"""hubkit: keep dataclass entities in sync between a remote source, SQLite and a Polars cache.

Everything public is importable from here. Only the exception tree and the small shared
vocabulary are imported eagerly; every other name is imported on first use, so
``import hubkit`` stays cheap and never pulls in httpx, websockets, ipywidgets or Arrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hubkit.errors import (
    BridgeError,
    ClosedError,
    CorruptStoreError,
    DecodeError,
    HubkitError,
    HubkitWarning,
    NotFoundError,
    OfflineError,
    ParameterError,
    ProtocolError,
    RateLimited,
    ReadOnlyStoreError,
    Rejected,
    RemoteError,
    RemoteTimeout,
    SchemaChangeError,
    SchemaError,
    StaleDataWarning,
    StoreError,
    StorePathError,
    SyncError,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from hubkit.types import (
    Change,
    ChangeHandler,
    Connection,
    ErrorHandler,
    FrameLost,
    Gap,
    Message,
    Op,
    OutboxEntry,
    Reconnected,
    ScheduleStatus,
    Source,
    StreamingConnection,
    SyncContext,
    SyncPolicy,
    SyncState,
    SyncStatus,
)

if TYPE_CHECKING:
    from hubkit import bybit as bybit
    from hubkit import notebook as notebook
    from hubkit import testing as testing
    from hubkit._api import (
        aload,
        datasets,
        load,
    )
    from hubkit._progress import (
        Progress,
        progress,
    )
    from hubkit.bybit.datasets import (
        default_catalog,
    )
    from hubkit.cache import (
        FrameCache,
    )
    from hubkit.catalog import (
        Catalog,
        Dataset,
    )
    from hubkit.connections import (
        HttpConnection,
        JsonRpcConnection,
        JsonRpcMethods,
        Route,
        Secret,
        WebSocketConnection,
    )
    from hubkit.entity import (
        EntitySpec,
        reflect,
        wire,
    )
    from hubkit.indexes import (
        index,
    )
    from hubkit.notebook import (
        StatusPanel,
        status_panel,
    )
    from hubkit.policies import (
        Bidirectional,
        Follow,
        PeriodicSync,
        PushAfterWrite,
        QueryOnInit,
        WebSocketSubscription,
        local_wins,
        remote_wins,
    )
    from hubkit.sink import (
        Sink,
        SinkDao,
        Subscription,
        WriteResult,
        aopen_sink,
        open_sink,
    )
    from hubkit.status import (
        SinkStatus,
        status_html,
        status_table,
        status_text,
    )
    from hubkit.store import (
        Store,
    )

__version__ = "0.1.0"

# name -> module that defines it, imported on first attribute access
_LAZY: dict[str, str] = {
    "FrameCache": "hubkit.cache",
    "EntitySpec": "hubkit.entity",
    "reflect": "hubkit.entity",
    "wire": "hubkit.entity",
    "index": "hubkit.indexes",
    "Store": "hubkit.store",
    "Sink": "hubkit.sink",
    "SinkDao": "hubkit.sink",
    "Subscription": "hubkit.sink",
    "WriteResult": "hubkit.sink",
    "aopen_sink": "hubkit.sink",
    "open_sink": "hubkit.sink",
    "Bidirectional": "hubkit.policies",
    "Follow": "hubkit.policies",
    "PeriodicSync": "hubkit.policies",
    "PushAfterWrite": "hubkit.policies",
    "QueryOnInit": "hubkit.policies",
    "WebSocketSubscription": "hubkit.policies",
    "local_wins": "hubkit.policies",
    "remote_wins": "hubkit.policies",
    "Catalog": "hubkit.catalog",
    "Dataset": "hubkit.catalog",
    "aload": "hubkit._api",
    "datasets": "hubkit._api",
    "default_catalog": "hubkit.bybit.datasets",
    "load": "hubkit._api",
    "StatusPanel": "hubkit.notebook",
    "status_panel": "hubkit.notebook",
    "SinkStatus": "hubkit.status",
    "status_html": "hubkit.status",
    "status_table": "hubkit.status",
    "status_text": "hubkit.status",
    "Progress": "hubkit._progress",
    "progress": "hubkit._progress",
    "HttpConnection": "hubkit.connections",
    "JsonRpcConnection": "hubkit.connections",
    "JsonRpcMethods": "hubkit.connections",
    "Route": "hubkit.connections",
    "Secret": "hubkit.connections",
    "WebSocketConnection": "hubkit.connections",
}

__all__ = [
    "Bidirectional",
    "BridgeError",
    "Catalog",
    "Change",
    "ChangeHandler",
    "ClosedError",
    "Connection",
    "CorruptStoreError",
    "Dataset",
    "DecodeError",
    "EntitySpec",
    "ErrorHandler",
    "Follow",
    "FrameCache",
    "FrameLost",
    "Gap",
    "HttpConnection",
    "HubkitError",
    "HubkitWarning",
    "JsonRpcConnection",
    "JsonRpcMethods",
    "Message",
    "NotFoundError",
    "OfflineError",
    "Op",
    "OutboxEntry",
    "ParameterError",
    "PeriodicSync",
    "Progress",
    "ProtocolError",
    "PushAfterWrite",
    "QueryOnInit",
    "RateLimited",
    "ReadOnlyStoreError",
    "Reconnected",
    "Rejected",
    "RemoteError",
    "RemoteTimeout",
    "Route",
    "ScheduleStatus",
    "SchemaChangeError",
    "SchemaError",
    "Secret",
    "Sink",
    "SinkDao",
    "SinkStatus",
    "Source",
    "StaleDataWarning",
    "StatusPanel",
    "Store",
    "StoreError",
    "StorePathError",
    "StreamingConnection",
    "Subscription",
    "SyncContext",
    "SyncError",
    "SyncPolicy",
    "SyncState",
    "SyncStatus",
    "TransportError",
    "ValidationError",
    "WaitTimeout",
    "WebSocketConnection",
    "WebSocketSubscription",
    "WriteResult",
    "__version__",
    "aload",
    "aopen_sink",
    "datasets",
    "default_catalog",
    "index",
    "load",
    "local_wins",
    "open_sink",
    "progress",
    "reflect",
    "remote_wins",
    "status_html",
    "status_panel",
    "status_table",
    "status_text",
    "wire",
]


def __getattr__(name: str) -> Any:
    # The provider, the testing kit and the notebook surface are subpackages: after a plain
    # ``import hubkit`` they are reachable as attributes, imported on first use. Importing a
    # subpackage binds it on this module, so this runs once per name.
    if name == "bybit":
        import hubkit.bybit

        return hubkit.bybit
    if name == "notebook":
        import hubkit.notebook

        return hubkit.notebook
    if name == "testing":
        import hubkit.testing

        return hubkit.testing
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hubkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"bybit", "notebook", "testing"})
