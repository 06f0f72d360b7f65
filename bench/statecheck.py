"""State checker benchmark: what ``check_state=True`` costs a run of 10,000 no-op tasks that
each read and write one state key of their own.

The run row is the checked run (instrumenting, running, and the analysis after it) against
the same run unchecked, as a ratio, median of interleaved repeats with min-max. The cost per
state access is shown two ways: what the checked run adds, divided by its accesses (two per
task: a get and a set); and one get plus one set through a task's view against a plain
dict, in a loop (the view alone, without the per-task set-up).
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from functools import partial

from thread_order import Scheduler
from thread_order.engine.statecheck import StateView, lock_owned

WORKERS = 8
TASKS = 10_000
ACCESSES = 2  # per task
TARGET = 2.0  # checked run vs unchecked, as a ratio
LOOP = 200_000


def touch(state, key):
    state[key] = state.get(key, 0) + 1


def run(check: bool) -> float:
    sched = Scheduler(workers=WORKERS, check_state=check)
    register = sched.register
    for i in range(TASKS):
        register(partial(touch, key=f"k{i}"), f"t{i}", with_state=True)
    sched.graph  # validation is not what we measure
    gc.collect()
    t0 = time.perf_counter()
    summary = sched.start()
    elapsed = time.perf_counter() - t0
    if len(summary["passed"]) != TASKS or (check and summary["state_findings"] != []):
        raise SystemExit(f"benchmark run went wrong: {summary['text']}")
    return elapsed


def loop(view: bool) -> float:
    """Seconds per (get + set) pair, through a view or on the plain dict."""
    state = {"k": 0, "_state_lock": threading.RLock()}
    d = StateView(state, lock_owned(state["_state_lock"])) if view else state
    t0 = time.perf_counter()
    for _ in range(LOOP):
        d["k"] = d.get("k", 0) + 1
    return (time.perf_counter() - t0) / LOOP


def main(quick: bool = False):
    repeat = 5 if quick else 11
    times: dict[str, list[float]] = {"plain": [], "checked": [], "loop plain": [], "loop view": []}
    run(True)  # warm up imports
    for _ in range(repeat):
        times["plain"].append(run(False))
        times["checked"].append(run(True))
        times["loop plain"].append(loop(False))
        times["loop view"].append(loop(True))
    return times, {"runs": repeat}


def print_table(times, extra):
    med = statistics.median
    print(f"State checker: {TASKS:,} no-op tasks each reading and writing one key, {WORKERS} workers, "
          f"median of {extra['runs']} interleaved runs (min-max)")
    print(f"{'case':<62} {'median':>9} {'min-max':>15} {'target':>9}  ok")
    ratios = [c / p for p, c in zip(times["plain"], times["checked"])]
    per_access = [(c - p) / (TASKS * ACCESSES) * 1e6 for p, c in zip(times["plain"], times["checked"])]
    per_view = [(v - p) / ACCESSES * 1e6 for p, v in zip(times["loop plain"], times["loop view"])]
    rows = [
        ("--check-state run vs unchecked (ratio)", ratios, "x", TARGET),
        ("  what it adds per state access, in that run", per_access, "us", None),
        ("  one state access through a task's view, vs a plain dict", per_view, "us", None),
    ]
    ok_all = True
    for label, values, unit, target in rows:
        middle = med(values)
        ok = target is None or middle <= target
        ok_all &= ok
        span = f"{min(values):.2f}-{max(values):.2f}{unit}"
        shown = f"<= {target:.2f}{unit}" if target is not None else "info"
        print(f"{label:<62} {middle:>7.2f}{unit:<2} {span:>15} {shown:>9}  "
              f"{('yes' if ok else 'NO') if target is not None else ''}")
    print(f"unchecked run: {med(times['plain']) * 1e3:.0f} ms; checked: {med(times['checked']) * 1e3:.0f} ms")
    return ok_all


if __name__ == "__main__":
    times, extra = main()
    print_table(times, extra)
