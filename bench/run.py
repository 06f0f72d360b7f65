"""`make bench`: every benchmark, each printing its table; exits 1 if a target is missed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# each module has main(quick=False) -> (rows, extra) and print_table(rows, extra) -> bool
SUITES = ["engine", "cli", "history", "web", "statecheck", "order", "cluster", "aio", "pools"]


def main() -> int:
    quick = "--quick" in sys.argv
    ok = True
    for name in SUITES:
        module = importlib.import_module(name)
        rows, extra = module.main(quick=quick)
        ok &= module.print_table(rows, extra)
        print()
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
