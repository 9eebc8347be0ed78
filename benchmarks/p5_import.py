"""P5: the cost of ``import hubkit`` against ``import polars, sqlalchemy``.

Run: ``python benchmarks/p5_import.py [--runs 7]``. Each import is timed inside a fresh
interpreter (interpreter start-up excluded), the two commands alternate to share the machine's
drift, and the median of each is printed; the last line is the ratio (goal <= 1.2: hubkit
should cost little beyond its two unavoidable dependencies).

It also lists heavy optional modules that ``import hubkit`` loads eagerly (httpx, websockets,
ipywidgets, pyarrow, ADBC, pandas, ...) and, from ``-X importtime``, the hubkit module that
first pulled each one in; those are the imports to make lazy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Optional or heavy modules with their BASELINES.md import cost in ms, where measured.
HEAVY = {
    "httpx": 142,
    "websockets": 84,
    "ipywidgets": None,
    "IPython": None,
    "pyarrow": 219,
    "adbc_driver_manager": None,
    "adbc_driver_sqlite": 1061,
    "pandas": 757,
    "numpy": None,
    "msgspec": 57,
    "orjson": 45,
    "connectorx": None,
}
TIMER = (
    "import json, sys, time\n"
    "t = time.perf_counter()\n"
    "import {modules}\n"
    "elapsed = time.perf_counter() - t\n"
    "print(json.dumps({{'s': elapsed, 'mods': sorted(sys.modules)}}))\n"
)


def timed_import(modules: str) -> tuple[float, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", TIMER.format(modules=modules)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["s"]), list(result["mods"])


def importers(module: str) -> dict[str, str]:
    """For each heavy module loaded by ``import module``: the closest hubkit module above it."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    entries: list[tuple[int, str]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name_part = line.split("|")[-1]
        name = name_part.strip()
        if name == "imported package":
            continue
        depth = (len(name_part) - len(name_part.lstrip(" ")) - 1) // 2
        entries.append((depth, name))
    found: dict[str, str] = {}
    for i, (depth, name) in enumerate(entries):
        top = name.split(".")[0]
        if top not in HEAVY or top in found:
            continue
        # importtime prints children before their parent: ancestors follow, one level up each.
        chain, want = [], depth - 1
        for later_depth, later_name in entries[i + 1 :]:
            if later_depth == want:
                chain.append(later_name)
                want -= 1
        found[top] = next((n for n in chain if n.startswith("hubkit")), chain[0] if chain else "?")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    timed_import("hubkit")  # warm the file cache and bytecode for both sides
    timed_import("polars, sqlalchemy")
    ours: list[float] = []
    base: list[float] = []
    mods: list[str] = []
    for _ in range(args.runs):
        seconds, mods = timed_import("hubkit")
        ours.append(seconds)
        base.append(timed_import("polars, sqlalchemy")[0])

    heavy = sorted({m.split(".")[0] for m in mods} & HEAVY.keys())
    print(f"P5 import cost, median of {args.runs} fresh interpreters (start-up excluded)")
    print(f"python: {sys.version.split()[0]}")
    print(f"sqlalchemy imported by hubkit: {'sqlalchemy' in mods}")
    if heavy:
        who = importers("hubkit")
        print("heavy optional modules imported eagerly by `import hubkit`:")
        for name in heavy:
            cost = HEAVY[name]
            note = f" (~{cost} ms in BASELINES.md)" if cost else ""
            print(f"  {name}{note} <- first imported by {who.get(name, '?')}")
    else:
        print("heavy optional modules imported eagerly by `import hubkit`: none")
    ours_ms, base_ms = statistics.median(ours) * 1e3, statistics.median(base) * 1e3
    print(f"import polars, sqlalchemy: {base_ms:.0f} ms")
    print(f"import hubkit: {ours_ms:.0f} ms")
    print(f"ratio hubkit / (polars + sqlalchemy): {ours_ms / base_ms:.2f}")


if __name__ == "__main__":
    main()
