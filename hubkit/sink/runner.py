"""A sink's life on hubkit's loop: start, the policy task, forced and scheduled syncs,
reconnect, and shutdown (stop the policy, flush the outbox, disconnect)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

from hubkit.errors import ClosedError, HubkitError, SyncError, as_hubkit
from hubkit.sink._core import CLOSE_TIMEOUT, Core
from hubkit.sink.context import SinkContext
from hubkit.types import SyncPolicy, SyncStatus

if TYPE_CHECKING:
    from hubkit.types import Connection

__all__ = ["Runner"]

_log = logging.getLogger("hubkit.sink")
# How often a close that cancelled the policy looks whether it went on regardless (seconds).
_STOP_CHECK: Final = 0.2


class Runner:
    """Runs one sink's policy with its ``SinkContext``; every method runs on hubkit's loop
    except ``schedule`` (any thread)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.ctx = SinkContext(core)

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> None:
        core = self.core
        core.request = asyncio.Event()
        core.sync_lock = asyncio.Lock()
        core.conn_lock = asyncio.Lock()
        core.reconnect_lock = asyncio.Lock()
        if core.traits.waits_for_first_sync:
            core.first_sync = asyncio.get_running_loop().create_future()
        if core.connection is not None:
            self._route_connection_errors(core.connection)
            await core.connection.connect()
        if core.traits.start is not None:
            await core.traits.start(self.ctx)
        self._start_policy()

    async def first_sync(self, timeout: float | None) -> HubkitError | None:
        """Wait for the first sync of a policy that has one at start (bounded by ``timeout``
        seconds); its error, a ``SyncError`` when it took too long, or None."""
        future = self.core.first_sync
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return SyncError(f"the first sync did not finish within {timeout} s")

    def _route_connection_errors(self, connection: Connection) -> None:
        """A connection that reports errors it handles itself (a malformed frame, a failed
        automatic reconnect) through an ``on_error`` attribute left unset gets the sink's
        ``report_error``, so they reach the sink's error handler."""
        if getattr(connection, "on_error", _ABSENT) is None:
            with contextlib.suppress(AttributeError):
                connection.on_error = self.core.report_error  # type: ignore[attr-defined]

    async def abort_start(self) -> None:
        """Undo a partly done ``start``."""
        core = self.core
        core.closing = True
        await self.stop_policy(0.0)
        connection = core.connection
        if connection is not None and connection.is_connected:
            with contextlib.suppress(Exception):
                await connection.disconnect()
        core.closed = True

    # -- the policy task --------------------------------------------------------------------

    def _start_policy(self) -> None:
        core = self.core
        if core.policy is None:
            return
        core.task = core.loop.create_task(self._run_policy(core.policy), name=f"hubkit:{core.name}")

    async def _run_policy(self, policy: SyncPolicy) -> None:
        try:
            await policy.run(self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.core.sync_status = SyncStatus.OUT_OF_SYNC
            self.core.report_error(exc)

    async def stop_policy(self, timeout: float) -> None:
        """Cancel the policy task once no sync step is running (waiting at most ``timeout``),
        so a push is never cut between sending and recording it."""
        core = self.core
        task = core.task
        core.task = None
        if task is None or task.done():
            return
        assert core.sync_lock is not None
        acquired = False
        inside = asyncio.current_task() is task  # stopped by the policy itself
        if not inside:
            try:
                async with asyncio.timeout(timeout):
                    await core.sync_lock.acquire()
                acquired = True
            except TimeoutError:
                _log.warning(
                    "sink %s: a sync step did not finish in %s s; cancelling it", core.name, timeout
                )
        try:
            task.cancel()
            if not inside:
                await self._until_cancelled(task)
        finally:
            if acquired:
                core.sync_lock.release()

    async def _until_cancelled(self, task: asyncio.Task[None]) -> None:
        """Wait for the cancelled policy ``task`` to end, its cleanup included (a stream
        stores what it holds). A policy that went on after the cancellation (one lost by
        ``asyncio.wait_for`` on Python 3.11, or swallowed) and now waits for the sync lock
        this close holds would wait for ever: it is cancelled again, with a warning."""
        core = self.core
        while not (await asyncio.wait({task}, timeout=_STOP_CHECK))[0]:
            if task in core.lock_waiters:
                _log.warning(
                    "sink %s: the sync policy went on after being cancelled; cancelling it again",
                    core.name,
                )
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()  # its outcome, retrieved as gather(return_exceptions=True) did

    # -- forced and scheduled syncs -----------------------------------------------------------

    def _effective_policy(self) -> SyncPolicy | None:
        core = self.core
        if core.policy is not None:
            return core.policy
        if core.connection is None:
            return None
        from hubkit.policies import QueryOnInit

        return QueryOnInit()

    async def force_sync(self) -> None:
        policy = self._effective_policy()
        if policy is None:
            return
        core = self.core
        assert core.sync_lock is not None
        try:
            async with core.sync_lock:
                core.check_not_closed()
                await policy.sync_once(self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise as_hubkit(exc) from (None if isinstance(exc, HubkitError) else exc)

    def schedule(self) -> None:
        """Ask for a sync without waiting (any thread)."""
        core = self.core
        with core.lock:
            core.scheduled += 1
        try:
            core.loop.call_soon_threadsafe(self._start_scheduled)
        except RuntimeError:
            with core.lock:
                core.scheduled -= 1
            raise ClosedError("hubkit's event loop is gone") from None

    def _start_scheduled(self) -> None:
        background = self.core.events.background
        task = self.core.loop.create_task(self._run_scheduled())
        background.add(task)
        task.add_done_callback(background.discard)

    async def _run_scheduled(self) -> None:
        core = self.core
        try:
            if not core.closing:
                await self.force_sync()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            core.report_error(exc)
        finally:
            with core.lock:
                core.scheduled -= 1

    # -- reconnect --------------------------------------------------------------------------

    async def reconnect(self) -> None:
        core = self.core
        connection = core.connection
        if connection is None:
            return
        assert core.reconnect_lock is not None and core.conn_lock is not None
        async with core.reconnect_lock:
            core.check_open()
            await self.stop_policy(CLOSE_TIMEOUT)
            try:
                async with core.conn_lock:
                    try:
                        await connection.disconnect()
                    except Exception as exc:
                        _log.debug(
                            "sink %s: disconnect before reconnect failed: %s", core.name, exc
                        )
                    core.sync_status = SyncStatus.OUT_OF_SYNC
                    try:
                        await connection.connect()
                    except Exception as exc:
                        core.report_error(exc)
                        raise as_hubkit(exc) from None
                    core.reconnects += 1
            finally:
                if not core.closing:
                    self._start_policy()
                    core.wake()

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """Close on the loop; a second caller waits for the first one's close to finish."""
        core = self.core
        if core.shutdown is None:
            core.shutdown = asyncio.ensure_future(self._shutdown_steps(timeout))
        await asyncio.shield(core.shutdown)

    async def _shutdown_steps(self, timeout: float) -> None:
        core = self.core
        core.closing = True
        try:
            await self.stop_policy(timeout)
            core.events.abandon_async()  # logs what async handlers will not get
            background = core.events.background
            for task in list(background):
                task.cancel()
            if background:
                await asyncio.gather(*background, return_exceptions=True)
            await self._flush(timeout)
        finally:
            connection = core.connection
            if connection is not None:
                try:
                    await connection.disconnect()
                except Exception as exc:
                    _log.warning("sink %s: disconnect on close failed: %s", core.name, exc)
            core.tickets.abandon_all(
                ClosedError(
                    f"sink {core.name!r} closed before the write was pushed; it stays in the "
                    "outbox and is pushed when the sink is opened again"
                )
            )
            core.closed = True
            await asyncio.sleep(0)  # deliver the changes already queued to the handlers

    async def _flush(self, timeout: float) -> None:
        core = self.core
        flush = core.traits.flush
        if not (core.pushes and flush is not None and core.pending):
            return
        connection = core.connection
        if connection is None or not connection.is_connected:
            return
        try:
            await asyncio.wait_for(flush(self.ctx), timeout)
        except TimeoutError:
            _log.warning(
                "sink %s: outbox not fully pushed within %s s; the rest stays for next time",
                core.name,
                timeout,
            )
        except Exception as exc:
            _log.warning("sink %s: pushing the outbox on close failed: %s", core.name, exc)


class _Absent:
    """Marks an attribute a connection does not have."""


_ABSENT = _Absent()
