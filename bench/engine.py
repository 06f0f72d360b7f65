"""Engine benchmarks: our Scheduler against a bare standard-library loop on the same DAGs.

Every row is a ratio against the stdlib loop (graphlib.TopologicalSorter +
ThreadPoolExecutor, 8 workers) measured in the same run: the two are run
alternately, repeat after repeat, and the row shows the median of the
per-pair ratios with their min-max, so that a burst of load on a shared
machine hits both sides alike. Peak memory is resident set size
(ru_maxrss), each measurement in a fresh subprocess. register()'s cost per
task is the CPU time of the registering thread (registration is
single-threaded), with its wall-clock time beside it for information.
"""

from __future__ import annotations

import gc
import random
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from graphlib import TopologicalSorter
from pathlib import Path
from queue import SimpleQueue

from thread_order import Scheduler

WORKERS = 8
BIG = (100_000, 300_000, 50)  # tasks, edges, layers
TARGET_REGISTER_US = 2.0
TARGET_RSS = 1.5


def noop():
    return None


def sleeper(seconds):
    def task():
        time.sleep(seconds)
    return task


def independent(n):
    return [(f"t{i}", ()) for i in range(n)]


def chain(n):
    return [(f"t{i}", (f"t{i - 1}",) if i else ()) for i in range(n)]


def layered(n, edges, layers=20, seed=7):
    """A random layered DAG: each task depends on tasks of the three layers before its own."""
    rng = random.Random(seed)
    per = n // layers
    names = [f"t{i}" for i in range(n)]
    deps = [[] for _ in range(n)]
    per_node = edges / (n - per)
    for i in range(per, n):
        layer = i // per
        k = int(per_node) + (rng.random() < per_node - int(per_node))
        lo = max(0, (layer - 3) * per)
        hi = layer * per
        deps[i] = list({names[rng.randrange(lo, hi)] for _ in range(k)})
    return [(names[i], tuple(deps[i])) for i in range(n)]


def sleep_layers(layers=3, width=16):
    out = []
    for layer in range(layers):
        for j in range(width):
            after = tuple(f"l{layer - 1}_{k}" for k in range(width)) if layer else ()
            out.append((f"l{layer}_{j}", after))
    return out


# ---------------------------------------------------------------------- the two contenders

def stdlib_prepare(dag, fn_for):
    fns = {name: fn_for(name) for name, _ in dag}
    sorter = TopologicalSorter({name: deps for name, deps in dag})
    sorter.prepare()
    return fns, sorter


def stdlib_run(fns, sorter):
    """graphlib.TopologicalSorter + ThreadPoolExecutor + a queue of finished names."""
    finished: SimpleQueue = SimpleQueue()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:

        def run(name):
            try:
                fns[name]()
            finally:
                finished.put(name)

        while sorter.is_active():
            for name in sorter.get_ready():
                pool.submit(run, name)
            sorter.done(finished.get())


def ours_prepare(dag, fn_for):
    sched = Scheduler(workers=WORKERS)
    register = sched.register
    for name, deps in dag:
        register(fn_for(name), name, deps)
    return sched


def ours_run(sched, total):
    summary = sched.start()
    if len(summary["passed"]) != total:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")


def time_run(side, dag, fn_for):
    """Seconds of the run alone (the graph built and validated beforehand)."""
    gc.collect()
    if side == "stdlib":
        fns, sorter = stdlib_prepare(dag, fn_for)
        t0 = time.perf_counter()
        stdlib_run(fns, sorter)
    else:
        sched = ours_prepare(dag, fn_for)
        sched.graph
        t0 = time.perf_counter()
        ours_run(sched, len(dag))
    return time.perf_counter() - t0


def time_end_to_end(side, dag):
    """(seconds from nothing to a finished run, (wall, CPU) seconds of registration alone)."""
    gc.collect()
    t0 = time.perf_counter()
    c0 = time.thread_time()
    if side == "stdlib":
        stdlib_run(*stdlib_prepare(dag, lambda n: noop))
        return time.perf_counter() - t0, (0.0, 0.0)
    sched = ours_prepare(dag, lambda n: noop)
    registered = (time.perf_counter() - t0, time.thread_time() - c0)
    ours_run(sched, len(dag))
    return time.perf_counter() - t0, registered


# Linux carries a process's peak RSS across fork and exec: a child started from this
# (by then large) process would report at least our own peak. So a small launcher process
# starts the measured one, which inherits only the launcher's few MB.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def peak_rss_mib(side):
    """Peak RSS of building the big DAG and running it end to end, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, str(Path(__file__).resolve()), "--rss", side],
        check=True, capture_output=True, text=True, timeout=600,
    ).stdout
    return float(out.split()[-1])


def _rss_child(side):
    dag = layered(*BIG[:2], layers=BIG[2])
    if side == "stdlib":
        stdlib_run(*stdlib_prepare(dag, lambda n: noop))
    else:
        ours_run(ours_prepare(dag, lambda n: noop), len(dag))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


# ---------------------------------------------------------------------- the table

def paired(measure, repeat):
    """Interleaved repeats: (median stdlib, median ours, median ratio, min ratio, max ratio)."""
    base, ours, ratios = [], [], []
    for i in range(repeat):
        order = ("stdlib", "ours") if i % 2 == 0 else ("ours", "stdlib")
        got = {side: measure(side) for side in order}
        base.append(got["stdlib"])
        ours.append(got["ours"])
        ratios.append(got["ours"] / got["stdlib"])
    return statistics.median(base), statistics.median(ours), statistics.median(ratios), min(ratios), max(ratios)


def main(quick: bool = False):
    rows = []
    repeat = 3 if quick else 15  # short runs on a noisy machine: more pairs steady the median
    cases = [
        ("10,000 independent no-ops", independent(10_000), lambda n: noop, 1.0),
        ("chain of 2,000 no-ops", chain(2_000), lambda n: noop, 1.0),
        ("layered DAG 20,000 tasks / ~60,000 edges", layered(20_000, 60_000), lambda n: noop, 1.0),
        ("3 layers x 16 tasks sleeping 50 ms", sleep_layers(), lambda n: sleeper(0.05), 1.01),
    ]
    for label, dag, fn_for, target in cases:
        rows.append((label, "s", *paired(lambda side: time_run(side, dag, fn_for), repeat), target))

    big = layered(*BIG[:2], layers=BIG[2])
    registered: list[tuple[float, float]] = []

    def end_to_end(side):
        total, reg = time_end_to_end(side, big)
        if side == "ours":
            registered.append(reg)
        return total

    label = f"register+validate+run {BIG[0]:,} tasks / {BIG[1]:,} edges"
    rows.append((label, "s", *paired(end_to_end, 3 if quick else 5), 1.0))
    del big
    gc.collect()
    rows.append(("peak RSS of that run (fresh process each)", "MiB",
                 *paired(peak_rss_mib, 1 if quick else 3), TARGET_RSS))
    # registration is single-threaded: the CPU time of the thread registering is its cost,
    # whatever else the machine runs; its wall-clock time is shown beside it
    register_us = [cpu / BIG[0] * 1e6 for _, cpu in registered]
    wall_us = [wall / BIG[0] * 1e6 for wall, _ in registered]
    extra = {"repeat": repeat, "register_us": (statistics.median(register_us), min(register_us),
                                               max(register_us)),
             "register_wall_us": (statistics.median(wall_us), min(wall_us), max(wall_us))}
    return rows, extra


def print_table(rows, extra) -> bool:
    print(f"Engine: Scheduler vs stdlib loop (graphlib + ThreadPoolExecutor), {WORKERS} workers; "
          f"median of interleaved repeats ({extra['repeat']} for the small cases), ratio min-max")
    print(f"{'case':<50} {'stdlib':>10} {'ours':>10} {'ratio':>7} {'min-max':>11} {'target':>7}  ok")
    ok_all = True
    for label, unit, base, ours, ratio, lo, hi, target in rows:
        ok = ratio <= target
        ok_all &= ok
        fmt = (lambda v: f"{v:>9.3f}s") if unit == "s" else (lambda v: f"{v:>7.1f}MiB")
        print(f"{label:<50} {fmt(base)} {fmt(ours)} {ratio:>6.2f}x {lo:>5.2f}-{hi:<5.2f} "
              f"{target:>6.2f}x  {'yes' if ok else 'NO'}")
    med, lo, hi = extra["register_us"]
    ok = med <= TARGET_REGISTER_US
    ok_all &= ok
    print(f"{'register() per task, 100,000 tasks (CPU time)':<50} {'':>10} {med:>8.2f}us {'':>7} "
          f"{lo:>5.2f}-{hi:<5.2f} {TARGET_REGISTER_US:>4.1f}us  {'yes' if ok else 'NO'}")
    med, lo, hi = extra["register_wall_us"]
    print(f"{'  the same in wall-clock time':<50} {'':>10} {med:>8.2f}us {'':>7} "
          f"{lo:>5.2f}-{hi:<5.2f} {'info':>6}")
    return ok_all


if __name__ == "__main__":
    if "--rss" in sys.argv:
        _rss_child(sys.argv[sys.argv.index("--rss") + 1])
    else:
        rows, extra = main(quick="--quick" in sys.argv)
        print_table(rows, extra)
