"""`make bench`: every benchmark, each printing its table; exits 1 if a target is missed.

Each suite runs in a process of its own: what one leaves behind (imported
libraries, their threads, a larger heap for the garbage collector to walk)
must not weigh on the next one's measurements.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# each module has main(quick=False) -> (rows, extra) and print_table(rows, extra) -> bool
SUITES = ["engine", "cli", "history", "web", "statecheck", "order", "cluster", "aio", "pools"]


def one(name: str, quick: bool) -> int:
    """Run suite ``name`` in this process; 0 when every target is met."""
    module = importlib.import_module(name)
    rows, extra = module.main(quick=quick)
    return 0 if module.print_table(rows, extra) else 1


def main() -> int:
    quick = "--quick" in sys.argv
    if "--suite" in sys.argv:
        return one(sys.argv[sys.argv.index("--suite") + 1], quick)
    ok = True
    for name in SUITES:
        command = [sys.executable, str(Path(__file__).resolve()), "--suite", name] + (["--quick"] if quick else [])
        ok &= subprocess.run(command).returncode == 0
        print(flush=True)
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
