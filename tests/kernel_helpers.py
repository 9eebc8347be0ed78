"""Drive a real ipykernel from tests: start it with an environment, run cells, read IOPub.

::

    with RealKernel(env=sim_env(sim)) as kernel:
        result = kernel.run("import hubkit; df = hubkit.load('instruments'); df.height")
        assert int(result.value) > 0

Every wait is bounded: a cell that does not go idle within its timeout raises
``TimeoutError`` (the kernel is then shut down by the ``with`` block).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager

__all__ = ["CellResult", "RealKernel", "kernel_env", "python_kernel_name", "sim_env"]

KERNEL_NAME = "python3"
REPO = Path(__file__).resolve().parent.parent


def python_kernel_name() -> str:
    """The name of a Python kernelspec that runs this interpreter, installing one if needed.

    ``python3`` is what ipykernel provides (jupyter_client also finds it from the installed
    ``ipykernel`` package when no kernelspec file exists, and runs it with ``sys.executable``).
    On a machine where even that fails, ``python -m ipykernel install --user`` installs it.
    """
    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL_NAME],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return KERNEL_NAME


def kernel_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a kernel, plus ``extra``; quiet and importable."""
    env = dict(os.environ)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # no debugger banner on stderr
    env.setdefault("HUBKIT_PROGRESS", "quiet")
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pythonpath if pythonpath else "")
    env.update(extra or {})
    return env


def sim_env(sim: Any, home: Path | str | None = None) -> dict[str, str]:
    """Environment lines pointing hubkit at a running ``BybitSimulator`` (and a store home)."""
    env = {"HUBKIT_BYBIT_REST_URL": sim.rest_url, "HUBKIT_BYBIT_WS_URL": sim.ws_url}
    if home is not None:
        env["HUBKIT_HOME"] = str(home)
    return env


@dataclass
class CellResult:
    """What one executed cell produced, read from IOPub until the kernel went idle."""

    msg_id: str = ""  # the execute request's id
    status: str = "ok"  # the execute_reply status: "ok" | "error" | "aborted"
    stdout: str = ""
    stderr: str = ""
    value: str | None = None  # text/plain of the execute_result, if any
    data: dict[str, Any] = field(default_factory=dict)  # the execute_result's mime bundle
    displays: list[dict[str, Any]] = field(default_factory=list)  # display_data bundles
    error: dict[str, Any] | None = None  # ename, evalue, traceback
    iopub: list[dict[str, Any]] = field(default_factory=list)  # every IOPub message seen
    elapsed: float = 0.0  # seconds from sending the request to the kernel going idle

    def count(self, msg_type: str) -> int:
        """How many IOPub messages of ``msg_type`` arrived while the cell ran."""
        return sum(1 for m in self.iopub if m["header"]["msg_type"] == msg_type)

    def check(self) -> CellResult:
        """Raise ``AssertionError`` with the traceback if the cell failed."""
        if self.status != "ok":
            tb = "\n".join((self.error or {}).get("traceback", []))
            raise AssertionError(f"cell failed ({self.status}):\n{tb}\nstderr:\n{self.stderr}")
        return self


class RealKernel:
    """A python3 ipykernel in a subprocess, driven with a ``BlockingKernelClient``."""

    def __init__(self, env: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> None:
        self.km = KernelManager(kernel_name=python_kernel_name())
        self.km.start_kernel(env=kernel_env(env), cwd=str(cwd) if cwd is not None else None)
        self.kc: BlockingKernelClient = self.km.client()
        self._sent_at: dict[str, float] = {}  # msg_id -> time.monotonic() before sending
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.shutdown()
            raise

    def __enter__(self) -> RealKernel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the channels and the kernel (bounded; kills it if it does not exit)."""
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False, restart=False)

    def send(self, code: str) -> str:
        """Start executing ``code`` without waiting; returns the request's msg_id."""
        sent_at = time.monotonic()  # before: the kernel may run the cell before execute returns
        msg_id: str = self.kc.execute(code, store_history=False, allow_stdin=False)
        self._sent_at[msg_id] = sent_at
        return msg_id

    def collect(
        self,
        msg_id: str,
        timeout: float = 60.0,
        *,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> CellResult:
        """Read IOPub until the kernel is idle after ``msg_id``, then its execute_reply.

        Every IOPub message that arrives meanwhile is kept (``CellResult.iopub``), whatever
        its parent, so messages sent from background threads are counted too.
        ``on_message`` sees each one as it arrives.
        """
        result = CellResult(msg_id=msg_id)
        deadline = time.monotonic() + timeout
        sent_at = self._sent_at.pop(msg_id, time.monotonic())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell {msg_id} did not finish within {timeout} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            result.iopub.append(msg)
            if on_message is not None:
                on_message(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            content = msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind == "execute_result":
                result.data = content["data"]
                result.value = content["data"].get("text/plain")
            elif kind == "display_data":
                result.displays.append(content["data"])
            elif kind == "error":
                result.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                break
        result.elapsed = time.monotonic() - sent_at
        reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        result.status = reply["content"]["status"]
        if result.status == "error" and result.error is None:
            result.error = reply["content"]
        return result

    def run(self, code: str, timeout: float = 60.0) -> CellResult:
        """Execute ``code`` and wait for it (bounded); the result is not checked."""
        return self.collect(self.send(code), timeout)

    def ok(self, code: str, timeout: float = 60.0) -> CellResult:
        """Execute ``code`` and raise ``AssertionError`` with the traceback if it failed."""
        return self.run(code, timeout).check()
