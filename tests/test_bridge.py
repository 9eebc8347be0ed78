"""The event-loop bridge: blocking and async entry points, deadlock guard, interrupts, fork, exit.

No assertion here depends on timing: where the caller's loop must stay free, the bridge-side
coroutine waits for a signal that only the caller's loop can produce.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from hubkit import bridge
from hubkit.bridge import Bridge, get_bridge
from hubkit.errors import BridgeError, ClosedError

REPO = Path(__file__).resolve().parents[1]
TICKS = 50
# Bounded waits for readiness only; a healthy run never gets near them.
READY = 30.0


def python(code: str, *options: str) -> list[str]:
    return [sys.executable, *options, "-c", textwrap.dedent(code)]


def run_script(code: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python(code, *options), cwd=REPO, capture_output=True, text=True, timeout=READY * 2
    )


DEV = ("-X", "dev", "-W", "error::ResourceWarning")
# Dev mode turns on asyncio debug, which logs callbacks slower than 0.1 s; on a loaded test
# machine that is noise, not what these scripts check.
QUIET_SLOW_CALLBACKS = "bridge.get_bridge().loop.slow_callback_duration = 60.0"


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def thread_name() -> str:
    return threading.current_thread().name


# -- basics ----------------------------------------------------------------------------------


def test_run_returns_the_result_on_the_named_loop_thread() -> None:
    assert bridge.run(add(1, 2)) == 3
    assert bridge.run(thread_name()) == "hubkit-loop"
    assert get_bridge() is get_bridge()
    assert not get_bridge().in_loop_thread()


def test_run_raises_the_coroutines_exception() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bridge.run(fail())


def test_submit_and_call_soon() -> None:
    b = get_bridge()
    assert b.submit(add(2, 2)).result(READY) == 4
    ran_on: list[str] = []
    done = threading.Event()

    def note(tag: str) -> None:
        ran_on.append(f"{tag}:{threading.current_thread().name}")
        done.set()

    b.call_soon(note, "x")
    assert done.wait(READY)
    assert ran_on == ["x:hubkit-loop"]


def test_timeout_cancels_the_work_and_raises_timeout_error() -> None:
    cleaned = threading.Event()

    async def never() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # async cleanup runs before run() returns
            cleaned.set()

    with pytest.raises(TimeoutError, match="cancelled"):
        bridge.run(never(), timeout=0.05)
    assert cleaned.is_set()

    async def own_timeout() -> None:
        raise TimeoutError("from the coroutine")

    with pytest.raises(TimeoutError, match="from the coroutine"):
        bridge.run(own_timeout(), timeout=READY)


# -- the caller's loop stays free ------------------------------------------------------------


async def make_event() -> asyncio.Event:
    return asyncio.Event()


async def tick_until_signalled(b: Bridge, signal_event: asyncio.Event, wait_for_bridge: Any) -> int:
    """Tick a caller-loop task; after TICKS ticks it releases the bridge-side coroutine.

    ``wait_for_bridge`` can only return if the caller's loop keeps running meanwhile.
    """
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks == TICKS:
                b.call_soon(signal_event.set)
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await wait_for_bridge
    finally:
        task.cancel()
    return ticks


def test_arun_keeps_the_caller_loop_free() -> None:
    b = get_bridge()

    async def main() -> int:
        event = await b.arun(make_event())
        bridge_side = asyncio.wait_for(event.wait(), READY)
        return await tick_until_signalled(b, event, bridge.arun(bridge_side))

    assert asyncio.run(main()) >= TICKS


def test_run_from_a_worker_thread_keeps_the_caller_loop_free() -> None:
    b = get_bridge()

    async def main() -> int:
        event = await asyncio.to_thread(b.run, make_event())
        bridge_side = asyncio.wait_for(event.wait(), READY)
        return await tick_until_signalled(b, event, asyncio.to_thread(bridge.run, bridge_side))

    assert asyncio.run(main()) >= TICKS


def test_cancelling_arun_cancels_the_bridge_side_work() -> None:
    b = get_bridge()
    cleaned = threading.Event()

    async def main() -> None:
        caller = asyncio.get_running_loop()
        started = asyncio.Event()

        async def forever() -> None:
            caller.call_soon_threadsafe(started.set)
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)
                cleaned.set()

        task = asyncio.create_task(b.arun(forever()))
        await asyncio.wait_for(started.wait(), READY)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The caller's cancellation completes only after the bridge-side cleanup ran.
        assert cleaned.is_set()

    asyncio.run(main())


def test_arun_on_the_bridge_loop_awaits_directly() -> None:
    async def nested() -> tuple[int, str]:
        return await bridge.arun(add(5, 6)), threading.current_thread().name

    assert bridge.run(nested()) == (11, "hubkit-loop")


# -- misuse ----------------------------------------------------------------------------------


def test_blocking_run_on_the_loop_thread_raises_instead_of_deadlocking() -> None:
    inner = add(1, 1)

    async def misuse() -> int:
        assert get_bridge().in_loop_thread()
        return bridge.run(inner)

    with pytest.raises(BridgeError, match="own event-loop thread"):
        bridge.run(misuse(), timeout=READY)
    assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED  # no "never awaited"


def test_arun_without_a_running_loop_raises() -> None:
    coro = add(1, 1)
    with pytest.raises(BridgeError, match="running event loop"):
        coro_awaiter = get_bridge().arun(coro)
        coro_awaiter.send(None)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_closed_bridge_refuses_work_and_cancels_what_was_running() -> None:
    own = Bridge()
    pending = own.submit(asyncio.Event().wait())
    assert own.run(thread_name()) == "hubkit-loop"
    own.close()
    own.close()  # idempotent
    assert own.closed
    assert pending.cancelled()
    assert own.loop.is_closed()
    coro = add(1, 1)
    with pytest.raises(ClosedError):
        own.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    with pytest.raises(ClosedError):
        own.call_soon(print)

    async def close_from_inside() -> None:
        get_bridge().close()

    with pytest.raises(BridgeError, match="own loop thread"):
        bridge.run(close_from_inside())


# -- blocking work off the loop thread -------------------------------------------------------


def test_run_sync_in_worker_runs_off_the_loop_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def blocking(tag: str) -> str:
        return f"{tag}:{var.get()}:{threading.current_thread().name}"

    async def loop_code() -> str:
        var.set("carried")
        return await bridge.run_sync_in_worker(blocking, "io")

    result = bridge.run(loop_code())
    assert result.startswith("io:carried:hubkit-io")

    def fail() -> None:
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        bridge.run(bridge.run_sync_in_worker(fail))


def test_run_sync_in_worker_still_works_when_executors_refuse_work() -> None:
    # What interpreter exit looks like to code that closes sinks: executors are shut.
    own = Bridge()
    try:
        own.run(own.loop.shutdown_default_executor())
        name = own.run(bridge.run_sync_in_worker(lambda: threading.current_thread().name))
        assert name == "hubkit-io-exit"
    finally:
        own.close()


# -- processes: exit, interrupt, fork, nest_asyncio ------------------------------------------


@pytest.mark.timeout(60)
def test_script_exits_cleanly_with_work_still_pending() -> None:
    result = run_script(
        f"""
        import asyncio, atexit
        from hubkit import bridge

        {QUIET_SLOW_CALLBACKS}
        b = bridge.get_bridge()

        def report():  # registered before the bridge's own hook, so it runs after it
            print("closed", b.loop.is_closed(), b._thread.is_alive(), flush=True)

        atexit.unregister(b._close_at_exit)
        atexit.register(report)
        atexit.register(b._close_at_exit)

        async def add(a, b):
            await asyncio.sleep(0)
            return a + b

        async def background():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("background cancelled", flush=True)
                raise

        async def numbers():
            try:
                yield 1
                yield 2
            finally:
                print("generator closed", flush=True)

        holder = {{}}

        async def leave_work_pending():
            holder["task"] = asyncio.get_running_loop().create_task(background())
            holder["gen"] = numbers()
            await holder["gen"].__anext__()

        print(bridge.run(add(1, 2)), bridge.run(bridge.run_sync_in_worker(sum, [1, 2])))
        bridge.run(leave_work_pending())

        async def main():
            return await bridge.arun(add(2, 3))

        print(asyncio.run(main()), flush=True)
        """,
        *DEV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split("\n") == [
        "3 3",
        "5",
        "background cancelled",
        "generator closed",
        "closed True False",
        "",
    ]


@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_keyboard_interrupt_cancels_the_work_and_leaves_the_bridge_usable() -> None:
    script = """
        import asyncio, sys, threading
        from hubkit import bridge

        cleaned = threading.Event()

        async def slow():
            print("waiting", flush=True)
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0)  # async cleanup must finish before run() re-raises
                cleaned.set()

        async def hello():
            return "still works"

        try:
            bridge.run(slow())
        except KeyboardInterrupt:
            print("interrupted", cleaned.is_set(), bridge.run(hello()), flush=True)
            sys.exit(0)
        print("not interrupted", flush=True)
        sys.exit(1)
    """
    with subprocess.Popen(
        python(script), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "waiting\n"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=READY)
    assert child.returncode == 0, err
    assert out == "interrupted True still works\n"


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_forked_child_gets_its_own_bridge_and_parent_keeps_its_own() -> None:
    result = run_script(
        f"""
        import asyncio, os, sys, threading, warnings
        from hubkit import bridge

        {QUIET_SLOW_CALLBACKS}

        async def where():
            await asyncio.sleep(0)
            return os.getpid(), threading.current_thread().name

        parent = bridge.get_bridge()
        assert bridge.run(where()) == (os.getpid(), "hubkit-loop")
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads; that is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            child = bridge.get_bridge()
            ok = (
                child is not parent
                and parent.closed
                and bridge.run(where()) == (os.getpid(), "hubkit-loop")
                and bridge.run(bridge.run_sync_in_worker(os.getpid)) == os.getpid()
            )
            print("child", ok, flush=True)
            sys.exit(0 if ok else 1)  # a normal exit: the child's exit must be quiet too
        _, status = os.waitpid(pid, 0)
        # The child's cleanup must not have touched the parent's loop (a timeout, not a hang).
        here = bridge.run(where(), timeout=10)
        ok = bridge.get_bridge() is parent and here == (os.getpid(), "hubkit-loop")
        print("parent", ok, os.waitstatus_to_exitcode(status), flush=True)
        """,
        *DEV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == "child True\nparent True 0\n"


@pytest.mark.timeout(60)
def test_works_with_nest_asyncio_applied() -> None:
    result = run_script(
        """
        import asyncio
        import nest_asyncio

        nest_asyncio.apply()
        from hubkit import bridge

        async def add(a, b):
            await asyncio.sleep(0)
            return a + b

        async def main():
            blocking = bridge.run(add(1, 2))
            awaited = await bridge.arun(add(2, 3))
            # Re-entering the running loop is what nest_asyncio allows (and kernels do).
            nested = asyncio.get_event_loop().run_until_complete(bridge.arun(add(3, 4)))
            return blocking, awaited, nested

        print(bridge.run(add(0, 1)), asyncio.run(main()), bridge.run(add(5, 6)), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 (3, 5, 7) 11\n"


# -- waiting for an event ------------------------------------------------------------------


def test_wait_event_keeps_a_cancellation_that_arrives_as_the_event_is_set() -> None:
    # asyncio.wait_for(event.wait(), t) on Python 3.11 returns as if nothing happened here;
    # a policy loop built on it went on after a close cancelled it and hung the close.
    async def main() -> None:
        event = asyncio.Event()
        waiter = asyncio.create_task(bridge.wait_event(event, 60))
        await asyncio.sleep(0)  # waiting now
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())


def test_wait_event_says_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await bridge.wait_event(event, 0.01)
        asyncio.get_running_loop().call_soon(event.set)
        was_set = await bridge.wait_event(event, None)
        already = await bridge.wait_event(event, 0)
        return timed_out, was_set, already

    assert asyncio.run(main()) == (False, True, True)
