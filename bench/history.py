"""History benchmark: what recording costs a run of no-op tasks, per task and per run.

The first row is issue 8's: what a HistoryRecorder attached to a bare
scheduler run (attach + start + finish: the run is not recorded until
finish() returns) adds per task, against the same run without. A run also
pays a cost whatever its size (opening the file, the run row's commit, the
writer thread), which, divided by the number of tasks, would pass for a
per-task cost that shrinks as runs grow. So the per-task cost is the slope
between two run sizes (10,000 and 30,000 tasks): ``(added at 30,000 - added
at 10,000) / 20,000``; the fixed cost, what is left at 10,000, is a row of its
own, and so is their sum over a run of 10,000.

The per-task cost is measured in CPU time (every thread of the process: the
run's, and the recorder's writer with SQLite's work in it), its wall-clock
slope beside it. The run is bound by the GIL, so its CPU time is about what it
takes on an idle machine (SQLite's share, outside the GIL, may even overlap the
run); on a loaded, shared one the wall-clock difference of four timings
measures the neighbours more than the recorder. Another row shows what one
do-nothing queueing subscriber costs the engine by itself (its CPU slope): the
part of the first that is the event stream's, not the store's. The last is
tdrun's ``main()`` in this process (collect, run, summary; output to
/dev/null) with ``--history PATH`` vs ``--no-history``. Variants and sizes run
interleaved, in alternating order; a variant's value in a repeat is its best
of ``BEST_OF`` runs, and each row is the median of the per-repeat values with
their min-max, because the machine is shared and noisy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from thread_order import EventKind, Scheduler
from thread_order.history import HistoryRecorder, HistoryStore

WORKERS = 8
TASKS = 10_000  # tdrun's run, and the smaller of the two sizes
SIZES = (TASKS, 30_000)  # the per-task cost is the slope between these
VARIANTS = ("plain", "listener", "recorded")
#: each repeat's value for a variant is its best of this many runs: other load only adds time,
#: and a slope is the difference of four timings, so one burst would swamp it
BEST_OF = 3
TARGET = 1.15  # tdrun with history vs without, as a ratio
TARGET_US = 2.0  # microseconds recording adds per task to a bare run


def noop():
    return None


def build(n: int) -> Scheduler:
    sched = Scheduler(workers=WORKERS)
    register = sched.register
    for i in range(n):
        register(noop, f"t{i}")
    sched.graph  # validation is not what we measure
    return sched


def clocks() -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def run_plain(n: int) -> tuple[float, float]:
    sched = build(n)
    gc.collect()
    t0 = clocks()
    summary = sched.start()
    elapsed = since(t0)
    if len(summary["passed"]) != n:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return elapsed


def run_listener(n: int) -> tuple[float, float]:
    """The engine's own cost of one TASK_FINISHED subscriber that does nothing but queue."""
    sched = build(n)
    sink: queue.SimpleQueue = queue.SimpleQueue()
    sched.subscribe(sink.put, EventKind.TASK_FINISHED)
    gc.collect()
    t0 = clocks()
    sched.start()
    return since(t0)


def run_recorded(n: int, path: Path) -> tuple[float, float]:
    """attach + start + finish: the run is not recorded until finish() returns."""
    sched = build(n)
    gc.collect()
    t0 = clocks()
    recorder = HistoryRecorder(path)
    recorder.attach(sched, {"module": "bench/history.py", "argv": ["bench"], "workers": WORKERS})
    sched.start()
    run_id = recorder.finish()
    elapsed = since(t0)
    with HistoryStore(path) as store:
        run = store.list_runs(limit=1)[0]
    if run["id"] != run_id or run["passed"] != n or run["status"] != "passed":
        raise SystemExit(f"benchmark run was not recorded whole: {run}")
    return elapsed


def write_module(folder: Path) -> Path:
    lines = ["from thread_order import dmark", ""]
    for i in range(TASKS):
        lines += ["@dmark()", f"def t{i}():", "    pass", ""]
    path = folder / "bench_history_tasks.py"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_tdrun(module: Path, *options: str) -> float:
    from thread_order.cli.main import main as tdrun

    gc.collect()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        t0 = time.perf_counter()
        code = tdrun([str(module), "--plain", "--workers", str(WORKERS), *options])
        elapsed = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"tdrun {' '.join(options)} exited {code}")
    return elapsed


def main(quick: bool = False):
    repeat = 3 if quick else 7
    folder = Path(tempfile.mkdtemp(prefix="tdrun-bench-"))
    try:
        path = folder / "history.db"
        # the timed runs record into a file that exists: creating it is no run's cost
        run_recorded(SIZES[0], path)
        runners = {"plain": run_plain, "listener": run_listener,
                   "recorded": lambda n: run_recorded(n, path)}
        times: dict = {(variant, n): [] for n in SIZES for variant in VARIANTS}
        cpu: dict = {(variant, n): [] for n in SIZES for variant in VARIANTS}
        order = [(variant, n) for n in SIZES for variant in VARIANTS]
        for r in range(repeat):
            # interleaved, in alternating order: the machine's noise hits every variant alike
            best: dict = {}
            for _ in range(BEST_OF):
                for variant, n in (order if r % 2 == 0 else order[::-1]):
                    wall, used = runners[variant](n)
                    was = best.get((variant, n), (wall, used))
                    best[variant, n] = (min(was[0], wall), min(was[1], used))
            for key, (wall, used) in best.items():
                times[key].append(wall)
                cpu[key].append(used)
        size = path.stat().st_size + sum(p.stat().st_size for p in folder.glob("history.db-*"))
        module = write_module(folder)
        cli_path = folder / "tdrun.db"
        run_tdrun(module, "--history", str(cli_path))  # creates the file: no timed run's cost
        sides = [("tdrun off", ("--no-history",)), ("tdrun on", ("--history", str(cli_path)))]
        for r in range(repeat):  # pairs in alternating order
            for label, options in (sides if r % 2 == 0 else sides[::-1]):
                times.setdefault(label, []).append(run_tdrun(module, *options))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return times, {"runs": repeat, "cpu": cpu, "file_mib": size / 2**20,
                   "recorded": repeat * BEST_OF * sum(SIZES) + SIZES[0]}


def added(times: dict, variant: str, n: int) -> list[float]:
    """Per repeat, the seconds ``variant`` added to the bare run of ``n`` tasks measured next to it."""
    return [o - b for b, o in zip(times["plain", n], times[variant, n])]


def slope_us(times: dict, variant: str) -> list[float]:
    """Per repeat, the microseconds ``variant`` adds per task: the slope between the two sizes."""
    small, large = SIZES
    return [(a_large - a_small) / (large - small) * 1e6
            for a_small, a_large in zip(added(times, variant, small), added(times, variant, large))]


def fixed_ms(times: dict, variant: str) -> list[float]:
    """Per repeat, the milliseconds ``variant`` adds to a run whatever its size (the intercept)."""
    small = SIZES[0]
    return [a_small * 1e3 - slope * small / 1e3
            for a_small, slope in zip(added(times, variant, small), slope_us(times, variant))]


def print_table(times, extra):
    med = statistics.median
    small, large = SIZES
    print(f"History: no-op tasks, {WORKERS} workers, median of {extra['runs']} interleaved repeats "
          f"(min-max), each the best of {BEST_OF} runs; per task: the slope between runs of {small:,} "
          f"and {large:,} tasks")
    print(f"{'case':<62} {'median':>9} {'min-max':>15} {'target':>9}  ok")
    cpu = extra["cpu"]
    rows = [
        ("what recording history adds to a bare run, per task (CPU)", slope_us(cpu, "recorded"),
         "us", TARGET_US),
        ("  the same in wall-clock time", slope_us(times, "recorded"), "us", None),
        ("what recording history adds to a run, whatever its size", fixed_ms(times, "recorded"),
         "ms", None),
        (f"  the two over a run of {small:,} tasks, per task",
         [a / small * 1e6 for a in added(times, "recorded", small)], "us", None),
        ("  of the per-task cost, the engine's event stream (CPU)", slope_us(cpu, "listener"), "us", None),
        ("tdrun main(), history on vs off (ratio)",
         [on / off for on, off in zip(times["tdrun on"], times["tdrun off"])], "x", TARGET),
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
    print(f"bare run: {med(times['plain', small]) * 1e3:.0f} ms ({small:,} tasks), "
          f"{med(times['plain', large]) * 1e3:.0f} ms ({large:,}); with history: "
          f"{med(times['recorded', small]) * 1e3:.0f} ms, {med(times['recorded', large]) * 1e3:.0f} ms; "
          f"history file after {extra['recorded']:,} recorded tasks: {extra['file_mib']:.1f} MiB")
    return ok_all


if __name__ == "__main__":
    times, extra = main(quick="--quick" in sys.argv)
    print_table(times, extra)
