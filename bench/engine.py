"""Engine benchmarks: our Scheduler against a bare standard-library loop on the same DAGs."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from graphlib import TopologicalSorter
from queue import SimpleQueue

from thread_order import Scheduler

WORKERS = 8


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
    """A random layered DAG: each task depends on tasks of earlier layers."""
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


def sleep_layers(layers=3, width=16, seconds=0.05):
    out = []
    for layer in range(layers):
        for j in range(width):
            after = tuple(f"l{layer - 1}_{k}" for k in range(width)) if layer else ()
            out.append((f"l{layer}_{j}", after))
    return out, seconds


def run_stdlib(dag, fn_for):
    """graphlib.TopologicalSorter + ThreadPoolExecutor + a queue of finished names."""
    fns = {name: fn_for(name) for name, _ in dag}
    sorter = TopologicalSorter({name: deps for name, deps in dag})
    sorter.prepare()
    finished: SimpleQueue = SimpleQueue()
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0


def build_ours(dag, fn_for):
    sched = Scheduler(workers=WORKERS)
    register = sched.register
    for name, deps in dag:
        register(fn_for(name), name, deps)
    return sched


def run_ours(dag, fn_for):
    sched = build_ours(dag, fn_for)
    sched.graph  # validation is timed separately
    t0 = time.perf_counter()
    summary = sched.start()
    elapsed = time.perf_counter() - t0
    if len(summary["passed"]) != len(dag):
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return elapsed


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(fn())
    return min(times)


def main(quick: bool = False):
    rows = []
    repeat = 1 if quick else 5
    cases = [
        ("10,000 independent no-ops", independent(10_000), lambda n: noop, 1.5),
        ("chain of 2,000 no-ops", chain(2_000), lambda n: noop, 1.5),
        ("layered DAG 20,000 tasks / ~60,000 edges", layered(20_000, 60_000), lambda n: noop, 1.5),
    ]
    dag, secs = sleep_layers()
    cases.append(("3 layers x 16 tasks sleeping 50 ms", dag, lambda n: sleeper(secs), 1.05))
    for label, dag, fn_for, target in cases:
        base = best_of(lambda: run_stdlib(dag, fn_for), repeat)
        ours = best_of(lambda: run_ours(dag, fn_for), repeat)
        rows.append((label, base, ours, ours / base, target))

    # scale: register + validate 100,000 tasks / 300,000 edges, then run end to end
    big = layered(100_000, 300_000, layers=50)
    gc.collect()
    t0 = time.perf_counter()
    sched = build_ours(big, lambda n: noop)
    graph = sched.graph
    build = time.perf_counter() - t0
    base = best_of(lambda: run_stdlib(big, lambda n: noop), 1 if quick else 2)
    ours = best_of(lambda: run_ours(big, lambda n: noop), 1 if quick else 2)
    rows.append(("100,000 tasks / 300,000 edges, run", base, ours, ours / base, 1.5))
    # peak memory in a separate, untimed run: tracemalloc slows everything it watches
    del sched
    gc.collect()
    tracemalloc.start()
    sched = build_ours(big, lambda n: noop)
    summary = sched.start()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if len(summary["passed"]) != len(big):
        raise SystemExit("benchmark run lost tasks")
    return rows, {"build": build, "edges": graph.edge_count, "peak_mib": peak / 2**20}


def print_table(rows, extra):
    print(f"Engine: Scheduler vs stdlib loop (graphlib + ThreadPoolExecutor), {WORKERS} workers")
    print(f"{'case':<44} {'stdlib':>9} {'ours':>9} {'ratio':>7} {'target':>7}  ok")
    ok_all = True
    for label, base, ours, ratio, target in rows:
        ok = ratio <= target
        ok_all &= ok
        print(f"{label:<44} {base:>8.3f}s {ours:>8.3f}s {ratio:>6.2f}x {target:>6.2f}x  {'yes' if ok else 'NO'}")
    build_ok = extra["build"] < 2.0
    ok_all &= build_ok
    print(f"{'register+validate 100,000 tasks / ' + format(extra['edges'], ',') + ' edges':<44} "
          f"{'':>9} {extra['build']:>8.3f}s {'':>7} {'< 2s':>7}  {'yes' if build_ok else 'NO'}")
    print(f"peak traced memory, registering and running 100,000 tasks: {extra['peak_mib']:.1f} MiB")
    return ok_all


if __name__ == "__main__":
    rows, extra = main()
    print_table(rows, extra)
