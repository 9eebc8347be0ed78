"""hubkit's own tables beside the entity tables: per-sink sync state and the outbox.

``bookkeeping_tables()`` defines them; ``Bookkeeping`` holds the statements of one sink's
state and outbox (``TableStore`` inherits it), including ``bookkeeping_statements``, the
state and outbox part of a ``ChangeSet`` run inside the change's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from hubkit.changeset import UNSET, ChangeSet, OutboxWrite, Unset
from hubkit.entity import EntitySpec
from hubkit.errors import ValidationError
from hubkit.store.codec import EPOCH, from_us, json_text, python_value, storage_value, to_us
from hubkit.store.engine import KEY_CHUNK, OUTBOX_TABLE, STATE_TABLE, Backend, Tx, chunks
from hubkit.types import OutboxEntry, SyncState


def bookkeeping_tables() -> tuple[sa.Table, sa.Table, sa.Index]:
    """The sync-state table, the outbox table and the outbox's (sink, id) index."""
    meta = sa.MetaData()
    state = sa.Table(
        STATE_TABLE,
        meta,
        sa.Column("sink", sa.String(255), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("last_sync", sa.BigInteger),  # microseconds since the epoch, UTC
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("columns", sa.Text, nullable=False),  # JSON: what the fingerprint covers
        sa.Column("extra", sa.Text, nullable=False),  # JSON object
    )
    outbox = sa.Table(
        OUTBOX_TABLE,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sink", sa.String(255), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("before", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,  # never reuse an id a pusher may still hold
    )
    index = sa.Index("ix_hubkit_outbox_sink_id", outbox.c.sink, outbox.c.id)
    return state, outbox, index


def state_values(
    cursor: str | Unset | None = UNSET,
    last_sync: datetime | Unset | None = UNSET,
    extra: Mapping[str, Any] | Unset = UNSET,
) -> dict[str, Any]:
    """The column values of a sync-state edit (validated; empty when nothing changes)."""
    values: dict[str, Any] = {}
    if not isinstance(cursor, Unset):
        values["cursor"] = cursor
    if not isinstance(last_sync, Unset):
        values["last_sync"] = to_us(last_sync)
    if not isinstance(extra, Unset):
        try:
            values["extra"] = json_text(dict(extra))
        except (TypeError, msgspec.EncodeError) as exc:
            raise ValidationError(f"state extra is not JSON-encodable: {exc}") from exc
    return values


class Bookkeeping:
    """The sync state and outbox of one sink (``name``) in ``store``."""

    store: Backend
    spec: EntitySpec
    name: str

    # -- inside a change's transaction ----------------------------------------------------

    def _state_update(self, values: Mapping[str, Any]) -> sa.Update:
        st = self.store.state_table
        return sa.update(st).where(st.c.sink == self.name).values(**values)

    def _outbox_edits(self, tx: Tx, ids: Sequence[int], values: Mapping[str, Any] | None) -> None:
        ob = self.store.outbox_table
        for chunk in chunks(list(ids), KEY_CHUNK):
            cond = sa.and_(ob.c.sink == self.name, ob.c.id.in_(list(chunk)))
            if values is None:
                tx.run(sa.delete(ob).where(cond))
            else:
                tx.run(sa.update(ob).where(cond).values(**values))

    def _bookkeeping(
        self, tx: Tx, change: ChangeSet, state: Mapping[str, Any], added: list[dict[str, Any]]
    ) -> None:
        """The state and outbox part of ``change`` (``state``/``added`` prepared beforehand)."""
        if state:
            tx.run(self._state_update(state))
        if change.outbox_done:
            self._outbox_edits(tx, change.outbox_done, None)
        if change.outbox_bump:
            attempts = self.store.outbox_table.c.attempts
            self._outbox_edits(tx, change.outbox_bump, {"attempts": attempts + 1})
        tx.insert_many(self.store.outbox_table, added)

    def _outbox_row(self, w: OutboxWrite, now: int) -> dict[str, Any]:
        if w.op not in ("create", "update", "remove"):
            raise ValidationError(f"outbox op must be create/update/remove, not {w.op!r}")
        key = self.spec.key_of(w.key)
        key_cols = [self.spec.column(k) for k in self.spec.key]
        return {
            "sink": self.name,
            "op": w.op,
            "key": json_text([storage_value(c, v) for c, v in zip(key_cols, key, strict=True)]),
            "payload": None if w.payload is None else json_text(self._encode_row(w.payload)),
            "before": None if w.before is None else json_text(self._encode_row(w.before)),
            "created_at": now,
            "attempts": 0,
        }

    def _encode_row(self, row: Any) -> dict[str, Any]:
        if isinstance(row, self.spec.cls):
            row = self.spec.to_row(row)
        return {c.name: storage_value(c, row[c.name]) for c in self.spec.columns if c.name in row}

    def _decode_row(self, text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        raw = msgspec.json.decode(text)
        cols = {c.name: c for c in self.spec.columns}
        return {k: python_value(cols[k], v) for k, v in raw.items() if k in cols}

    # -- sync state -------------------------------------------------------------------------

    def state(self) -> SyncState:
        """The sink's stored sync state (cursor, last sync, fingerprint, extra)."""
        st = self.store.state_table.c
        stmt = sa.select(st.cursor, st.last_sync, st.fingerprint, st.extra).where(
            st.sink == self.name
        )
        with self.store._translate(f"read state of {self.name!r}"), self.store._read() as tx:
            found = tx.rows(stmt)
        if not found:
            return SyncState()
        cursor, last_sync, fingerprint, extra = found[0]
        return SyncState(
            cursor=cursor,
            last_sync=from_us(last_sync),
            fingerprint=fingerprint,
            extra=msgspec.json.decode(extra) if extra else {},
        )

    # -- outbox -------------------------------------------------------------------------

    def outbox_pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Outbox entries of this sink, oldest first (at most ``limit``)."""
        ob = self.store.outbox_table.c
        stmt = (
            sa.select(ob.id, ob.op, ob.key, ob.payload, ob.before, ob.created_at, ob.attempts)
            .where(ob.sink == self.name)
            .order_by(ob.id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.store._translate(f"read outbox of {self.name!r}"), self.store._read() as tx:
            found = tx.rows(stmt)
        key_cols = [self.spec.column(k) for k in self.spec.key]
        out = []
        for id_, op, key, payload, before, created_at, attempts in found:
            raw_key = msgspec.json.decode(key)
            out.append(
                OutboxEntry(
                    id=int(id_),
                    op=op,
                    key=tuple(python_value(c, v) for c, v in zip(key_cols, raw_key, strict=True)),
                    payload=self._decode_row(payload),
                    before=self._decode_row(before),
                    created_at=EPOCH + timedelta(microseconds=created_at),
                    attempts=int(attempts),
                )
            )
        return out

    def outbox_count(self) -> int:
        """The number of entries waiting in this sink's outbox."""
        ob = self.store.outbox_table.c
        stmt = sa.select(sa.func.count()).where(ob.sink == self.name)
        with self.store._translate(f"count outbox of {self.name!r}"), self.store._read() as tx:
            return int(tx.rows(stmt)[0][0])
