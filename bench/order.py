"""Start-order benchmarks: critical-path order against its lower bound, and what a replay costs.

Critical path: a DAG whose registration order is adversarial -- many short
independent tasks registered first, a long chain registered last -- on 4
workers, every task sleeping 10-100 ms. The declared order starts the shorts
first and the chain late; critical-path order (weighted by the durations of
the previous declared run, as the history would give them) starts the chain at
once. The row is the critical-path run's makespan over its lower bound,
max(critical path, total work / workers) of the durations it had; the declared
run's makespan is printed beside it. Declared and critical-path runs alternate,
repeat after repeat; the row shows medians and the ratio's min-max.

Replay: the 10,000 no-op task run of bench/engine.py (8 workers), replayed
from the records of a run of it, against the same run in the declared order,
interleaved. As the engine table leaves out registering the tasks (the same
for both sides), but everything a replay adds is inside the replay's time:
analysing the recording (building the ``ReplayOrder``, timed on its own and
added, as it is made before the tasks are registered), mapping it onto the
graph and the run itself.
"""

from __future__ import annotations

import gc
import random
import statistics
import time

from thread_order import Scheduler
from thread_order.engine.order import ReplayOrder

WORKERS = 4
TARGET_BOUND = 1.05
TARGET_REPLAY = 1.2
REPLAY_TASKS = 10_000
REPLAY_WORKERS = 8


def adversarial(seed: int = 3) -> list[tuple[str, tuple[str, ...], float]]:
    """(name, after, seconds): 36 short tasks of 10-40 ms, then a chain of 6 tasks of 80-100 ms."""
    rng = random.Random(seed)
    dag = [(f"short{i}", (), rng.uniform(0.010, 0.040)) for i in range(36)]
    for i in range(6):
        dag.append((f"chain{i}", (f"chain{i - 1}",) if i else (), rng.uniform(0.080, 0.100)))
    return dag


def sleeper(seconds: float):
    def task():
        time.sleep(seconds)
    return task


def run_dag(dag, **order) -> dict:
    sched = Scheduler(workers=WORKERS, **order)
    for name, after, seconds in dag:
        sched.register(sleeper(seconds), name, after)
    return sched.start()


def critical_path_rows(repeat: int) -> list[tuple]:
    dag = adversarial()
    durations = None
    declared, ours, bounds, ratios = [], [], [], []
    for _ in range(repeat):
        summary = run_dag(dag)
        declared.append(summary["duration"])
        # what the history gives: this dag's durations, measured by the previous run
        durations = {name: task["duration"] for name, task in summary["tasks"].items()}
        summary = run_dag(dag, order="critical-path", durations=durations)
        ours.append(summary["duration"])
        bounds.append(summary["lower_bound"]["lower_bound"])
        ratios.append(summary["duration"] / summary["lower_bound"]["lower_bound"])
    return [("critical-path makespan vs its lower bound", statistics.median(bounds), statistics.median(ours),
             statistics.median(ratios), min(ratios), max(ratios), TARGET_BOUND),
            ("  declared order's makespan (for comparison)", statistics.median(bounds),
             statistics.median(declared), statistics.median(d / b for d, b in zip(declared, bounds)),
             min(d / b for d, b in zip(declared, bounds)), max(d / b for d, b in zip(declared, bounds)), None)]


def noop():
    return None


def replay_rows(repeat: int) -> list[tuple]:
    names = [f"t{i}" for i in range(REPLAY_TASKS)]

    def scheduler(order="declared"):
        sched = Scheduler(workers=REPLAY_WORKERS, order=order)
        for name in names:
            sched.register(noop, name)
        sched.graph
        return sched

    summary = scheduler().start()
    starts = {name: (t["started_at"], t["finished_at"]) for name, t in summary["tasks"].items()}
    base, ours, ratios = [], [], []
    cpu = {"declared": [], "replay": []}  # processor time of the same runs: what load cannot inflate
    for i in range(repeat):
        got = {}
        for side in (("declared", "replay") if i % 2 == 0 else ("replay", "declared")):
            analysis = analysis_cpu = 0.0
            if side == "declared":
                sched = scheduler()
            else:
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                replay = ReplayOrder(1, starts)  # reading the recording: part of what a replay costs
                analysis, analysis_cpu = time.perf_counter() - t0, time.process_time() - c0
                sched = scheduler(replay)
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            result = sched.start()  # the replay's plan is made here, inside the timing
            got[side] = time.perf_counter() - t0 + analysis
            cpu[side].append(time.process_time() - c0 + analysis_cpu)
            if len(result["passed"]) != REPLAY_TASKS:
                raise SystemExit(f"benchmark run lost tasks: {result['text']}")
        base.append(got["declared"])
        ours.append(got["replay"])
        ratios.append(got["replay"] / got["declared"])
    cpu_ratios = [r / d for r, d in zip(cpu["replay"], cpu["declared"])]
    return [(f"replay incl. analysis, {REPLAY_TASKS:,} no-ops vs declared", statistics.median(base),
             statistics.median(ours), statistics.median(ratios), min(ratios), max(ratios), TARGET_REPLAY),
            ("  the same runs' processor time", statistics.median(cpu["declared"]),
             statistics.median(cpu["replay"]), statistics.median(cpu_ratios), min(cpu_ratios),
             max(cpu_ratios), None)]


def main(quick: bool = False):
    repeat = 3 if quick else 7
    replays = 9 if quick else 21  # a short run: more pairs to see through a loaded machine
    rows = critical_path_rows(repeat) + replay_rows(replays)
    return rows, {"repeat": repeat, "replays": replays}


def print_table(rows, extra) -> bool:
    replays = extra.get("replays", extra["repeat"])
    print(f"Start order: {WORKERS} workers, 36 short tasks (10-40 ms) registered before a chain of 6 "
          f"(80-100 ms); median of {extra['repeat']} interleaved repeats ({replays} for the replay), "
          "ratio min-max")
    print(f"{'case':<50} {'baseline':>10} {'ours':>10} {'ratio':>7} {'min-max':>11} {'target':>7}  ok")
    ok_all = True
    for label, base, ours, ratio, lo, hi, target in rows:
        ok = target is None or ratio <= target
        ok_all &= ok
        print(f"{label:<50} {base:>9.3f}s {ours:>9.3f}s {ratio:>6.2f}x {lo:>5.2f}-{hi:<5.2f} "
              f"{(f'{target:.2f}x' if target else 'info'):>7}  {'yes' if ok else 'NO'}")
    print("baseline: the lower bound max(critical path, work / workers) for the first two rows, "
          "the declared-order run for the replay (whose time includes analysing the recording)")
    return ok_all


if __name__ == "__main__":
    import sys

    rows, extra = main(quick="--quick" in sys.argv)
    raise SystemExit(0 if print_table(rows, extra) else 1)
