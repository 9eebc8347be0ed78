"""The event-loop bridge: hubkit's one asyncio loop, in one daemon thread per process.

Why a thread of its own (DESIGN.md §3): a loop owned by hubkit keeps WebSocket pings and
periodic syncs alive while a notebook cell computes, works whether or not the user applied
``nest_asyncio``, and never needs ``asyncio.run`` inside a kernel that already runs a loop.

How to call it::

    from hubkit import bridge

    rows = bridge.run(fetch_rows())             # blocking: from plain code, cells, scripts
    rows = await bridge.arun(fetch_rows())      # from async code on any loop (kernel, pytest,
                                                # uvloop); that loop stays free meanwhile
    fut = bridge.get_bridge().submit(coro)      # fire and keep a concurrent.futures.Future
    rows = await bridge.run_sync_in_worker(store.read_all)   # blocking I/O from loop code

Rules it keeps:

- One loop per process: ``get_bridge()`` creates it (thread "hubkit-loop") on first use. A
  forked child starts without one and makes its own on first use; the parent's is untouched.
- At interpreter exit the bridge cancels the tasks still running, finishes async generators,
  shuts the worker threads down, stops the loop, joins its thread and closes the loop, so a
  clean exit prints nothing (no "Task was destroyed but it is pending", no ResourceWarning).
- A blocking call from the loop thread would wait for itself forever: ``run`` raises
  ``BridgeError`` there instead (use ``await`` in loop code).
- ``KeyboardInterrupt`` (Ctrl+C, a kernel interrupt) while ``run`` waits cancels the submitted
  work, waits up to ``CANCEL_GRACE`` seconds for its cleanup to run, and re-raises.
- ``run(coro, timeout=s)`` raises ``hubkit.WaitTimeout`` after ``s`` seconds, having
  cancelled the work the same way. It is a ``HubkitError`` and also a ``TimeoutError``, the
  exception Python's own deadlines raise (``asyncio.timeout``,
  ``concurrent.futures.Future.result``), so one ``except TimeoutError`` catches them all.
- Store I/O never runs on the loop thread: loop code hands blocking calls to worker threads with
  ``run_sync_in_worker``.
- The thread starts under ``contextvars.copy_context()`` of the code that first needed it;
  ipywidgets' comm machinery looks up kernel context variables (ipykernel 7 raised
  ``LookupError: shell_parent`` without this).

Module state: the per-process reference to the current bridge (``_PROCESS``) is the single
exception to "no module-level state"; it is created lazily and reset after ``fork``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import os
import selectors
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, TypeVarTuple

from hubkit.errors import BridgeError, ClosedError, WaitTimeout

__all__ = [
    "CANCEL_GRACE",
    "Bridge",
    "arun",
    "get_bridge",
    "run",
    "run_sync_in_worker",
    "wait_event",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

THREAD_NAME: Final = "hubkit-loop"
#: Seconds a cancelled ``run`` waits for the cancelled work's cleanup (``finally`` blocks).
CANCEL_GRACE: Final = 2.0
# A blocking wait wakes this often so that an interrupt is seen even where a lock wait is not
# interruptible (Windows; kernels that interrupt via ``_thread.interrupt_main``).
_POLL_SECONDS: Final = 0.25
_START_TIMEOUT: Final = 10.0
# Upper bound for each step of closing: cancelled tasks finishing, worker threads finishing,
# the loop thread ending. A loop frozen by a C call cannot be closed; we give up, not hang.
_CLOSE_STEP_TIMEOUT: Final = 5.0


class Bridge:
    """An asyncio loop running in a daemon thread, and the ways to hand it work.

    Prefer ``get_bridge()`` (one per process) to constructing this directly; tests may build
    their own and ``close()`` them. Every method may be called from any thread.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        # A named executor of its own, so thread dumps show whose workers these are.
        self.loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix="hubkit-io")
        )
        self._pid = os.getpid()
        self._closed = False
        self._close_lock = threading.Lock()
        started = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve, started), name=THREAD_NAME, daemon=True
        )
        self._thread.start()
        if not started.wait(_START_TIMEOUT):
            raise BridgeError("hubkit's event-loop thread did not start")
        atexit.register(self._close_at_exit)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<Bridge {state} thread={self._thread.name!r} pid={self._pid}>"

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or this process is a fork of the one that made it)."""
        return self._closed

    def in_loop_thread(self) -> bool:
        """True when called from the bridge's own loop thread."""
        return threading.get_ident() == self._thread.ident

    # -- handing work to the loop --------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop and return at once with its future.

        Cancelling the future cancels the task. Raises ``ClosedError`` (after closing
        ``coro``) once the bridge is closed.
        """
        if self._closed:
            coro.close()
            raise ClosedError("hubkit's event-loop bridge is closed")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:  # the loop closed between the check and the call
            coro.close()
            raise ClosedError("hubkit's event-loop bridge is closed") from exc

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it returns; return its result.

        The coroutine's exception is raised here. ``timeout`` (seconds) cancels the work and
        raises ``WaitTimeout`` (a ``TimeoutError``); ``KeyboardInterrupt`` while waiting cancels the
        work and is re-raised. In both cases the work's cleanup gets up to ``CANCEL_GRACE``
        seconds before this returns. Raises ``BridgeError`` from the loop thread itself, where
        waiting would deadlock: ``await`` the coroutine there.
        """
        if self.in_loop_thread():
            coro.close()  # it will never run; closing it avoids a "never awaited" warning
            raise BridgeError(
                "a blocking hubkit call was made on hubkit's own event-loop thread, where it "
                "would wait for itself forever; await the async variant there instead"
            )
        future = self.submit(coro)
        try:
            return self._wait(future, coro, timeout)
        except KeyboardInterrupt:
            self._cancel_and_wait(future, coro)
            raise

    def _wait(
        self,
        future: concurrent.futures.Future[T],
        coro: Coroutine[Any, Any, T],
        timeout: float | None,
    ) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = _POLL_SECONDS
            if deadline is not None:
                slice_ = max(0.0, min(slice_, deadline - time.monotonic()))
            concurrent.futures.wait([future], timeout=slice_)
            if future.done():
                try:
                    return future.result()
                except concurrent.futures.CancelledError:
                    if self._closed:
                        raise ClosedError("hubkit's event-loop bridge closed meanwhile") from None
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                self._cancel_and_wait(future, coro)
                raise WaitTimeout(
                    f"the hubkit call did not finish within {timeout} s and was cancelled"
                )
            if not self._thread.is_alive():
                raise BridgeError("hubkit's event-loop thread has stopped")

    def _cancel_and_wait(
        self, future: concurrent.futures.Future[Any], coro: Coroutine[Any, Any, Any]
    ) -> None:
        """Cancel submitted work and wait (bounded) until its task has really finished.

        ``future.cancel()`` marks the concurrent future done at once, but the task is only
        told to cancel on the loop and may still be running its cleanup; the task is found
        on the loop by its coroutine to learn when that cleanup ends.
        """
        if future.done():
            return
        finished = threading.Event()
        future.cancel()
        if self._notify_when_finished(coro, finished.set):
            finished.wait(CANCEL_GRACE)

    def _notify_when_finished(
        self, coro: Coroutine[Any, Any, Any], notify: Callable[[], object]
    ) -> bool:
        """Call ``notify`` (on the loop thread) once the task running ``coro`` is done."""

        def watch() -> None:
            for task in asyncio.all_tasks(self.loop):
                if task.get_coro() is coro:
                    task.add_done_callback(lambda _: notify())
                    return
            notify()  # already finished

        # Queued after the task.cancel() that future.cancel() scheduled, and after the
        # callback that creates the task, so the task is either found or already done.
        try:
            self.loop.call_soon_threadsafe(watch)
        except RuntimeError:  # loop closed: nothing is running any more
            return False
        return True

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` running on the bridge loop, from async code on any loop.

        The caller's loop stays free while it waits (``asyncio.wrap_future``). On the bridge
        loop itself the coroutine is simply awaited. If the caller's await is cancelled, the
        bridge-side work is cancelled too, and the caller's cancellation completes once that
        work has finished its cleanup (or after ``CANCEL_GRACE`` seconds).
        """
        try:
            caller = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            raise BridgeError(
                "arun() must be awaited inside a running event loop; use run() instead"
            ) from None
        if caller is self.loop:
            return await coro
        future = self.submit(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # wrap_future does this too; explicit so the rule is visible
            finished = caller.create_future()

            def notify() -> None:
                caller.call_soon_threadsafe(_resolve, finished)

            if self._notify_when_finished(coro, notify):
                await asyncio.wait([finished], timeout=CANCEL_GRACE)
            raise

    def call_soon(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Call ``fn(*args)`` on the loop thread soon; safe from any thread.

        Raises ``ClosedError`` once the bridge is closed.
        """
        if self._closed:
            raise ClosedError("hubkit's event-loop bridge is closed")
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as exc:
            raise ClosedError("hubkit's event-loop bridge is closed") from exc

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel remaining tasks, finish async generators and workers, stop and close the loop.

        Idempotent. Called automatically at interpreter exit. Work still running is
        cancelled; each step waits at most a few seconds, so a loop frozen in a C call is
        left running rather than hanging the caller. Raises ``BridgeError`` on the loop thread.
        """
        if self.in_loop_thread():
            raise BridgeError("the bridge cannot close itself from its own loop thread")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        # A frozen or already stopped loop skips the orderly part; it is stopped below if it can be.
        with contextlib.suppress(TimeoutError, RuntimeError, concurrent.futures.CancelledError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(
                3 * _CLOSE_STEP_TIMEOUT
            )
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return
        self._thread.join(_CLOSE_STEP_TIMEOUT)
        if not self._thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        # Cleanup code may start new tasks while it is cancelled; give it a few rounds.
        for _ in range(3):
            tasks = [task for task in asyncio.all_tasks() if task is not me]
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            done, _ = await asyncio.wait(tasks, timeout=_CLOSE_STEP_TIMEOUT)
            for task in done:
                # Retrieve the outcome so that a failure during cancellation at exit is not
                # reported a second time by the garbage collector.
                if not task.cancelled():
                    task.exception()
        await self.loop.shutdown_asyncgens()
        try:
            await asyncio.wait_for(self.loop.shutdown_default_executor(), _CLOSE_STEP_TIMEOUT)
        except RuntimeError:
            # Python 3.12+ refuses to start the helper thread this needs at interpreter exit;
            # its own exit hook has already stopped the executor's workers by then.
            pass
        except TimeoutError:
            pass  # a worker is stuck in blocking I/O; it finishes or dies with the process

    def _close_at_exit(self) -> None:
        if os.getpid() == self._pid:
            self.close()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop this bridge without touching the parent's loop thread.

        The loop thread did not survive the fork, so the loop can never stop by itself and
        still reports itself running (asyncio records the thread that ran it). We clear that
        mark and close the loop so this process's copies of its selector and wake-up pipe are
        released without an "unclosed event loop" warning. The executor is swapped for a fresh
        one first, because closing the loop shuts its executor down, and a lock inside the old
        one may have been held by a parent thread at the moment of the fork.
        """
        self._closed = True
        atexit.unregister(self._close_at_exit)
        loop = self.loop
        if hasattr(loop, "_thread_id"):
            loop._thread_id = None
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    if hasattr(os, "fork") and hasattr(selectors, "PollSelector"):
        # poll keeps its interest list in this process. An epoll instance is shared with forked
        # children, so a child releasing its copy of this loop would unregister the parent's
        # wake-up pipe, and the parent's loop would never again see work handed to it from
        # other threads. hubkit's loop watches a handful of sockets; poll costs nothing here.
        return asyncio.SelectorEventLoop(selectors.PollSelector())
    return asyncio.new_event_loop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ProcessBridge:
    """The one per-process reference to the current ``Bridge``, created on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bridge: Bridge | None = None

    def get(self) -> Bridge:
        bridge = self.bridge
        if bridge is not None and not bridge.closed:
            return bridge
        with self.lock:
            if self.bridge is None or self.bridge.closed:
                self.bridge = Bridge()
            return self.bridge

    def after_fork_in_child(self) -> None:
        # The lock may have been held by a parent thread at the moment of the fork.
        self.lock = threading.Lock()
        stale, self.bridge = self.bridge, None
        if stale is not None:
            stale._forget_after_fork()


_PROCESS: Final = _ProcessBridge()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_PROCESS.after_fork_in_child)


def get_bridge() -> Bridge:
    """This process's bridge: started on first use, restarted if it was closed or forked."""
    return _PROCESS.get()


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """``get_bridge().run(coro, timeout)``: run ``coro`` on hubkit's loop and block for it."""
    return get_bridge().run(coro, timeout)


async def arun(coro: Coroutine[Any, Any, T]) -> T:
    """``await get_bridge().arun(coro)``: await ``coro`` on hubkit's loop from any loop."""
    return await get_bridge().arun(coro)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False; None: no limit).

    Use this, not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 ``wait_for``
    loses a cancellation that arrives while the event is being set, and a policy loop that
    goes on after a lost cancellation keeps a closing sink waiting for ever.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def run_sync_in_worker(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run blocking ``fn(*args)`` on a worker thread and await its result.

    This is how loop code reaches the store: SQLite and file I/O never run on the loop
    thread, where they would stall every stream. Context variables are carried into the
    worker (like ``asyncio.to_thread``). Cancelling the await abandons the wait, not the call:
    a started ``fn`` runs to completion in the background.

    At interpreter exit ``concurrent.futures`` refuses new work before hubkit's exit hook
    runs; then ``fn`` gets a one-off thread, so that closing sinks can still flush to the store.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    try:
        # Submission happens here, synchronously; fn's own errors surface at the await below.
        working = loop.run_in_executor(None, call)
    except RuntimeError:
        # "cannot schedule new futures after interpreter shutdown" / "Executor shutdown has
        # been called": the only errors submission raises.
        return await _in_own_thread(loop, call)
    return await working


async def _in_own_thread(loop: asyncio.AbstractEventLoop, call: Callable[[], T]) -> T:
    result: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not result.done():
            outcome()

    def work() -> None:
        try:
            value = call()
        except BaseException as exc:
            deliver: Callable[[], None] = functools.partial(result.set_exception, exc)
        else:
            deliver = functools.partial(result.set_result, value)
        # RuntimeError: the loop closed while we worked, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, deliver)

    threading.Thread(target=work, name="hubkit-io-exit", daemon=True).start()
    return await result
