"""Pools and rate limits: what the gate costs, and whether a rate keeps time.

- 10,000 no-op tasks in one pool of size 8 on 8 workers, against the same run
  without a pool, in the same process, alternately, repeat after repeat: the
  median of the per-pair ratios with their min-max (target <= 1.1x).
- A rate of 200/s over 400 no-op tasks: the run's wall time (target 2.0 s +- 5%)
  and the most starts any one-second window holds, from the records' start
  times (target <= 200).
"""

from __future__ import annotations

import bisect
import gc
import statistics
import sys
import time

from thread_order import Scheduler

WORKERS = 8
TASKS = 10_000
TARGET_RATIO = 1.1
RATE, RATE_TASKS = 200, 400
TARGET_SECONDS, TOLERANCE = 2.0, 0.05


def noop():
    return None


def time_pool(pooled: bool) -> float:
    """Seconds of a run of TASKS no-ops, all in pool "p" of size 8 or in none."""
    gc.collect()
    sched = Scheduler(workers=WORKERS, pools={"p": WORKERS} if pooled else None)
    register = sched.register
    if pooled:
        for i in range(TASKS):
            register(noop, f"t{i}", pool="p")
    else:
        for i in range(TASKS):
            register(noop, f"t{i}")
    sched.graph
    t0 = time.perf_counter()
    summary = sched.start()
    elapsed = time.perf_counter() - t0
    if len(summary["passed"]) != TASKS:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return elapsed


def busiest_window(starts: list[float], period: float = 1.0) -> int:
    """The most starts any half-open window ``[t, t + period)`` holds."""
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, s + period) - i for i, s in enumerate(starts))


def rated_run() -> tuple[float, int]:
    """(seconds, the busiest one-second window) of RATE_TASKS no-ops at RATE per second."""
    sched = Scheduler(workers=WORKERS, pools={"api": {"rate": f"{RATE}/s"}})
    for i in range(RATE_TASKS):
        sched.register(noop, f"t{i}", pool="api")
    sched.graph
    t0 = time.perf_counter()
    sched.start()
    elapsed = time.perf_counter() - t0
    return elapsed, busiest_window([r.started_at for r in sched.last_records])


def main(quick: bool = False):
    repeat = 5 if quick else 15
    base, ours, ratios = [], [], []
    for i in range(repeat):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {pooled: time_pool(pooled) for pooled in order}
        base.append(got[False])
        ours.append(got[True])
        ratios.append(got[True] / got[False])
    rows = [(f"{TASKS:,} no-ops: one pool of {WORKERS} vs no pool", statistics.median(base),
             statistics.median(ours), statistics.median(ratios), min(ratios), max(ratios))]
    runs = [rated_run() for _ in range(1 if quick else 3)]
    return rows, {"repeat": repeat, "rated": runs}


def print_table(rows, extra) -> bool:
    print(f"Pools: {WORKERS} workers; median of {extra['repeat']} interleaved repeats, ratio min-max")
    print(f"{'case':<50} {'no pool':>10} {'pool':>10} {'ratio':>7} {'min-max':>11} {'target':>7}  ok")
    ok_all = True
    for label, base, ours, ratio, lo, hi in rows:
        ok = ratio <= TARGET_RATIO
        ok_all &= ok
        print(f"{label:<50} {base:>9.3f}s {ours:>9.3f}s {ratio:>6.2f}x {lo:>5.2f}-{hi:<5.2f} "
              f"{TARGET_RATIO:>6.2f}x  {'yes' if ok else 'NO'}")
    runs = len(extra["rated"])
    for n, (seconds, window) in enumerate(extra["rated"], 1):
        ok = abs(seconds - TARGET_SECONDS) <= TARGET_SECONDS * TOLERANCE and window <= RATE
        ok_all &= ok
        label = f"rate {RATE}/s over {RATE_TASKS} tasks: wall time (run {n} of {runs})"
        print(f"{label:<50} {'':>10} {seconds:>9.3f}s {'':>7} {'':>11} "
              f"{TARGET_SECONDS:>4.1f}s+-{TOLERANCE:.0%}  {'yes' if ok else 'NO'}")
        label = "  busiest one-second window (starts)"
        print(f"{label:<50} {'':>10} {window:>10} {'':>7} {'':>11} {'<= ' + str(RATE):>7}  "
              f"{'yes' if window <= RATE else 'NO'}")
    return ok_all


if __name__ == "__main__":
    rows, extra = main(quick="--quick" in sys.argv)
    sys.exit(0 if print_table(rows, extra) else 1)
