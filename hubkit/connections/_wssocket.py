"""Opening and killing one ``websockets`` client socket, with errors translated at the edge."""

from __future__ import annotations

import contextlib

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from hubkit.connections.auth import without_userinfo
from hubkit.errors import RemoteTimeout, TransportError

__all__ = ["abort", "open_socket"]


async def open_socket(
    url: str, *, open_timeout: float, max_size: int | None, compression: str | None
) -> ClientConnection:
    """Open ``url``; ``RemoteTimeout`` without a handshake in time, ``TransportError`` when it
    cannot connect. Library keepalive pings are off: the protocol's own pings are sent by the
    connection's keepalive task."""
    try:
        return await connect(
            url,
            open_timeout=open_timeout,
            ping_interval=None,
            max_size=max_size,
            compression=compression,
            close_timeout=2.0,
        )
    except TimeoutError as exc:
        raise RemoteTimeout(f"WebSocket {without_userinfo(url)}: no handshake in time") from exc
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        shown = without_userinfo(url)
        raise TransportError(f"WebSocket {shown}: could not connect ({exc})") from exc


async def abort(ws: ClientConnection) -> None:
    """Close the socket now, without a closing handshake, and wait until it is gone."""
    transport = ws.transport
    if transport is not None:
        transport.abort()
    with contextlib.suppress(Exception):
        await ws.wait_closed()
