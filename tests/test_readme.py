"""Every Python example in README.md runs as written, in order, against the ByBit simulator.

The blocks run one after another in one namespace (as cells of one notebook would), in a
fresh interpreter whose working folder and ``HUBKIT_HOME`` are temporary and whose
``HUBKIT_BYBIT_*`` variables point at a simulator started here (what the README tells a
reader to do for offline use). Top-level ``await`` is allowed, as in Jupyter.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_helpers import kernel_env, sim_env

from hubkit.testing import BybitSimulator

pytestmark = pytest.mark.timeout(240)

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)

RUNNER = """
import ast, asyncio, inspect, re, sys, traceback

blocks = re.findall(sys.argv[2], open(sys.argv[1]).read(), re.S | re.M)
namespace = {"__name__": "__readme__"}
for number, source in enumerate(blocks, 1):
    code = compile(source, f"README block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except BaseException:
        print(f"README block {number} failed:\\n{source}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"block {number} ok", flush=True)
"""


def readme_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_readme_has_the_examples_it_promises() -> None:
    blocks = readme_blocks()
    joined = "\n".join(blocks)
    assert len(blocks) >= 5
    for needle in ("hubkit.load(", "NotesServer()", "trades.subscribe(", "hubkit.progress("):
        assert needle in joined, needle


def test_every_readme_python_block_runs_in_order(tmp_path: Path) -> None:
    with BybitSimulator(seed=11, trades_per_second=50) as sim:
        env = kernel_env(sim_env(sim, tmp_path / "home"))
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(README), BLOCK.pattern],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    count = len(readme_blocks())
    ran = [line for line in done.stdout.splitlines() if line.startswith("block ")]
    assert ran == [f"block {n} ok" for n in range(1, count + 1)]  # examples may print too
