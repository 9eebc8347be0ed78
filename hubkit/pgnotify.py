"""Commit announcements on PostgreSQL: writers NOTIFY, followers LISTEN.

A writer calls ``announce`` inside the transaction that changes a table, just before it
commits. That bumps the table's commit sequence number in ``hubkit_commits`` and queues a
``NOTIFY hubkit_commits, '{"table": ..., "seq": ...}'``, which PostgreSQL delivers when, and
only if, the transaction commits::

    with conn.cursor() as cur:                     # an ADBC connection (pgbulk.connect)
        pgbulk.upsert(cur, trades, rows)
        seq = pgnotify.announce(cur, "trades")     # 1, 2, 3 ... per table
        conn.commit()

A follower listens first, then reads where each table stands, then applies every
announcement above that (an announcement is a prompt to read; it carries no rows)::

    async with pgnotify.Listener(url) as listener:
        seen = await listener.latest()             # {"trades": 41, ...}
        async for commit in listener:              # Commit(table="trades", seq=42)
            ...

Promises: per table, sequence numbers count up by one in commit order with no gaps (the
counter row is locked from ``announce`` to commit, so writers of one table commit their
announcements one after another; call it last in the transaction). A rolled-back
transaction announces nothing and uses no number. A follower that sees a gap, or
reconnects, has missed announcements and should re-read (``latest()``) rather than trust
the stream. Notifications on the channel that are not announcements are ignored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from hubkit import pgbulk
from hubkit.errors import StoreError

if TYPE_CHECKING:
    import psycopg
    from adbc_driver_manager.dbapi import Cursor

__all__ = ["CHANNEL", "COMMITS_TABLE", "Commit", "Listener", "announce", "commits_table"]

CHANNEL: Final = "hubkit_commits"
COMMITS_TABLE: Final = "hubkit_commits"


@dataclass(frozen=True)
class Commit:
    """One announced commit: ``table`` changed, and this is its ``seq``-th announced commit."""

    table: str
    seq: int


def commits_table(metadata: sa.MetaData) -> sa.Table:
    """``hubkit_commits``: one row per announced table, its last commit sequence number."""
    return sa.Table(
        COMMITS_TABLE,
        metadata,
        sa.Column("table_name", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def _announce_stmt(table: str, channel: str) -> sa.Select[Any]:
    commits = commits_table(sa.MetaData())
    bump = (
        postgresql.insert(commits)
        .values(table_name=table, seq=1)
        .on_conflict_do_update(index_elements=["table_name"], set_={"seq": commits.c.seq + 1})
        .returning(commits.c.seq)
        .cte("bumped")
    )
    payload = sa.func.json_build_object(
        "table", sa.cast(sa.literal(table), sa.Text), "seq", bump.c.seq
    )
    return sa.select(bump.c.seq, sa.func.pg_notify(channel, sa.cast(payload, sa.Text)))


def announce(cur: Cursor, table: str, *, channel: str = CHANNEL) -> int:
    """Announce a change of ``table`` in the cursor's open transaction; returns its sequence.

    ``hubkit_commits`` must exist (create it with ``commits_table``). Does not commit.
    """
    rows = pgbulk.fetch_arrow(cur, _announce_stmt(table, channel)).to_pylist()
    seq: int = rows[0]["seq"]
    return seq


def _decode(payload: str) -> Commit | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    table, seq = data.get("table"), data.get("seq")
    if isinstance(table, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return Commit(table, seq)
    return None


class Listener:
    """An async follower of announcements on ``channel``; see the module doc.

    ``async with Listener(url) as listener`` opens its own psycopg connection (autocommit)
    and LISTENs before the block starts; iterating yields ``Commit`` values as they arrive,
    forever, until the block is left. ``url`` is a SQLAlchemy or libpq PostgreSQL URL.
    """

    def __init__(self, url: str | sa.URL, *, channel: str = CHANNEL) -> None:
        self._uri = pgbulk.libpq_uri(url)
        self._channel = channel
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Self:
        import psycopg
        from psycopg import sql

        try:
            conn = await psycopg.AsyncConnection.connect(self._uri, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL to listen: {exc}") from exc
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _open(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise StoreError("the listener is not open: use it in 'async with'")
        return self._conn

    async def latest(self) -> dict[str, int]:
        """Each announced table's last committed sequence number (``{}`` before any).

        Call it before iterating or after leaving the loop: the listener's one connection
        cannot run a query while it waits for notifications.
        """
        conn = self._open()
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (COMMITS_TABLE,))
        row = await cur.fetchone()
        if row is None or not row[0]:
            return {}
        cur = await conn.execute(f"SELECT table_name, seq FROM {COMMITS_TABLE}")
        return {name: seq for name, seq in await cur.fetchall()}

    async def __aiter__(self) -> AsyncIterator[Commit]:
        async for note in self._open().notifies():
            commit = _decode(note.payload)
            if commit is not None:
                yield commit
