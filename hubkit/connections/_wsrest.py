"""The CRUD verbs of a streaming connection, served by the REST connection it was given.

A WebSocket carries no request/response verbs of its own; ``fetch`` (gap backfill after
``Reconnected``) and the writes go to ``rest``. Without one they raise ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from hubkit.errors import ProtocolError
from hubkit.types import Connection
from hubkit.writes import takes_idempotency_key

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = ["RestVerbs"]


class RestVerbs:
    """``fetch``/``create``/``update``/``remove`` delegated to ``self.rest``."""

    rest: Connection | None

    def _rest(self, verb: str) -> Connection:
        if self.rest is None:
            raise ProtocolError(
                f"{verb}: this WebSocket connection has no REST connection", temporary=False
            )
        return self.rest

    async def fetch(
        self, spec: EntitySpec, params: Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """``rest.fetch`` (e.g. to backfill a gap after ``Reconnected``)."""
        return await self._rest("fetch").fetch(spec, params)

    async def create(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """``rest.create``; ``idempotency_key`` is passed on when ``rest`` takes it."""
        rest = self._rest("create")
        return await rest.create(spec, row, **_keyed(rest.create, idempotency_key))

    async def update(
        self, spec: EntitySpec, row: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Mapping[str, Any] | None:
        """``rest.update``; ``idempotency_key`` is passed on when ``rest`` takes it."""
        rest = self._rest("update")
        return await rest.update(spec, row, **_keyed(rest.update, idempotency_key))

    async def remove(
        self, spec: EntitySpec, key: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> None:
        """``rest.remove``; ``idempotency_key`` is passed on when ``rest`` takes it."""
        rest = self._rest("remove")
        await rest.remove(spec, key, **_keyed(rest.remove, idempotency_key))


def _keyed(verb: Callable[..., object], key: str | None) -> dict[str, Any]:
    if key is None or not takes_idempotency_key(verb):
        return {}
    return {"idempotency_key": key}
