"""Cluster benchmarks: the Dask executor against local threads on the same run.

200 tasks each sleeping 50 ms, on a LocalCluster of 2 worker processes x 8
threads against `local` with 16 threads. The cluster is started once, before
the measurements (a run on `--executor dask` pays for starting it too; that
is printed for information). The two sides run alternately, repeat after
repeat; the row shows the median makespan of each and the median of the
per-pair ratios with their min-max. The per-task overhead on Dask is the
difference of the two makespans spread over the tasks each lane ran.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import time

from thread_order import Scheduler

TASKS = 200
SLEEP = 0.05
PROCESSES, THREADS = 2, 8
LANES = PROCESSES * THREADS
TARGET = 1.3


def nap():
    time.sleep(SLEEP)


def noop():
    return None


def makespan(executor, fn=nap) -> float:
    sched = Scheduler(workers=LANES, executor=executor)
    for i in range(TASKS):
        sched.register(fn, f"t{i}")
    sched.graph
    t0 = time.perf_counter()
    summary = sched.start()
    took = time.perf_counter() - t0
    if len(summary["passed"]) != TASKS:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return took


def main(quick: bool = False):
    try:
        from distributed import Client, LocalCluster

        from thread_order.executors.dask import DaskExecutor
    except ImportError:
        return [], {"skipped": "the dask extra is not installed (pip install -e '.[dask]')"}
    repeat = 3 if quick else 7
    import dask

    t0 = time.perf_counter()
    # configured as `--executor dask --dask-processes 2 --workers 16` starts it
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(n_workers=PROCESSES, threads_per_worker=THREADS, processes=True,
                               host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0",
                                                 "allowed_failures": 0})
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(PROCESSES)
    startup = time.perf_counter() - t0
    try:
        executor = DaskExecutor(client=client)
        makespan(executor)  # warm: modules imported on the workers, code cached
        local, dask, ratios = [], [], []
        for i in range(repeat):
            order = ("local", "dask") if i % 2 == 0 else ("dask", "local")
            got = {side: makespan("local" if side == "local" else executor) for side in order}
            local.append(got["local"])
            dask.append(got["dask"])
            ratios.append(got["dask"] / got["local"])
        noops = statistics.median(makespan(executor, noop) for _ in range(repeat))
    finally:
        client.close()
        cluster.close()
    rows = [(f"{TASKS} tasks x {SLEEP * 1000:.0f} ms: dask {PROCESSES}x{THREADS} vs local {LANES} threads",
             statistics.median(local), statistics.median(dask), statistics.median(ratios),
             min(ratios), max(ratios), TARGET)]
    per_lane = math.ceil(TASKS / LANES)
    extra = {
        "repeat": repeat,
        "overhead_ms": (statistics.median(dask) - statistics.median(local)) / per_lane * 1000,
        "noop_us": noops / TASKS * 1e6,
        "startup": startup,
    }
    return rows, extra


def print_table(rows, extra) -> bool:
    if not rows:
        print(f"Cluster: {extra['skipped']}")
        return True
    print(f"Cluster: the Dask executor vs local threads; median of {extra['repeat']} interleaved pairs, "
          f"ratio min-max")
    print(f"{'case':<50} {'local':>10} {'dask':>10} {'ratio':>7} {'min-max':>11} {'target':>7}  ok")
    ok_all = True
    for label, base, ours, ratio, lo, hi, target in rows:
        ok = ratio <= target
        ok_all &= ok
        print(f"{label:<50} {base:>9.3f}s {ours:>9.3f}s {ratio:>6.2f}x {lo:>5.2f}-{hi:<5.2f} "
              f"{target:>6.2f}x  {'yes' if ok else 'NO'}")
    print(f"per-task overhead on dask (makespan difference / tasks per lane): {extra['overhead_ms']:.2f} ms")
    print(f"{TASKS} no-op tasks on dask: {extra['noop_us']:.0f} us per task (wall time / tasks)")
    print(f"starting the {PROCESSES}-process LocalCluster (not in the makespans): {extra['startup']:.2f}s")
    return ok_all


if __name__ == "__main__":
    rows, extra = main(quick="--quick" in sys.argv)
    raise SystemExit(0 if print_table(rows, extra) else 1)
