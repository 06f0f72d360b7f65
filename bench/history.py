"""History benchmark: what recording costs a run of 10,000 no-op tasks.

The first row is issue 8's: a bare scheduler run with a HistoryRecorder
attached (attach + start + finish: the run is not recorded until finish()
returns) against the same run without, as microseconds added per task. The
second shows what one do-nothing queueing subscriber costs the engine by
itself -- the part of the first row that is the event stream's, not the
store's. The last is tdrun's ``main()`` in this process (collect, run,
summary; output to /dev/null) with ``--history PATH`` vs ``--no-history``.
Variants run interleaved and each row is the median, with min-max, because
the machine is shared and noisy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from thread_order import EventKind, Scheduler
from thread_order.history import HistoryRecorder, HistoryStore

WORKERS = 8
TASKS = 10_000
TARGET = 1.15  # tdrun with history vs without, as a ratio
TARGET_US = 2.0  # microseconds recording adds per task to a bare run


def noop():
    return None


def build(n: int = TASKS) -> Scheduler:
    sched = Scheduler(workers=WORKERS)
    register = sched.register
    for i in range(n):
        register(noop, f"t{i}")
    sched.graph  # validation is not what we measure
    return sched


def run_plain() -> float:
    sched = build()
    gc.collect()
    t0 = time.perf_counter()
    summary = sched.start()
    elapsed = time.perf_counter() - t0
    if len(summary["passed"]) != TASKS:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return elapsed


def run_listener() -> float:
    """The engine's own cost of one TASK_FINISHED subscriber that does nothing but queue."""
    sched = build()
    sink: queue.SimpleQueue = queue.SimpleQueue()
    sched.subscribe(sink.put, EventKind.TASK_FINISHED)
    gc.collect()
    t0 = time.perf_counter()
    sched.start()
    return time.perf_counter() - t0


def run_recorded(path: Path) -> float:
    """attach + start + finish: the run is not recorded until finish() returns."""
    sched = build()
    gc.collect()
    t0 = time.perf_counter()
    recorder = HistoryRecorder(path)
    recorder.attach(sched, {"module": "bench/history.py", "argv": ["bench"], "workers": WORKERS})
    sched.start()
    run_id = recorder.finish()
    elapsed = time.perf_counter() - t0
    with HistoryStore(path) as store:
        run = store.list_runs(limit=1)[0]
    if run["id"] != run_id or run["passed"] != TASKS or run["status"] != "passed":
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
    repeat = 5 if quick else 11
    folder = Path(tempfile.mkdtemp(prefix="tdrun-bench-"))
    try:
        path = folder / "history.db"
        times: dict[str, list[float]] = {"plain": [], "listener": [], "recorded": []}
        run_recorded(folder / "warm.db")  # the first run creates a file; that is not per task
        # interleaved: the machine's noise hits every variant alike
        for _ in range(repeat):
            times["plain"].append(run_plain())
            times["listener"].append(run_listener())
            times["recorded"].append(run_recorded(path))
        size = path.stat().st_size + sum(p.stat().st_size for p in folder.glob("history.db-*"))
        module = write_module(folder)
        cli_path = folder / "tdrun.db"
        for _ in range(max(repeat // 2, 3)):
            times.setdefault("tdrun off", []).append(run_tdrun(module, "--no-history"))
            times.setdefault("tdrun on", []).append(run_tdrun(module, "--history", str(cli_path)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return times, {"runs": repeat, "file_mib": size / 2**20}


def _added_us(base: list[float], ours: list[float]) -> list[float]:
    """Per-task microseconds added, pairing each repeat with the bare run measured next to it."""
    return [(o - b) / TASKS * 1e6 for b, o in zip(base, ours)]


def print_table(times, extra):
    med = statistics.median
    print(f"History: {TASKS:,} no-op tasks, {WORKERS} workers, median of {extra['runs']} interleaved "
          "runs (min-max)")
    print(f"{'case':<62} {'median':>9} {'min-max':>15} {'target':>9}  ok")
    rows = [
        ("what recording history adds to a bare run, per task", _added_us(times["plain"], times["recorded"]),
         "us", TARGET_US),
        ("  of it, the engine's event stream (one queueing listener)",
         _added_us(times["plain"], times["listener"]), "us", None),
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
    print(f"bare run: {med(times['plain']) * 1e3:.0f} ms; with history: {med(times['recorded']) * 1e3:.0f} ms; "
          f"history file after {extra['runs'] + 0} recorded runs: {extra['file_mib']:.1f} MiB")
    return ok_all


if __name__ == "__main__":
    times, extra = main()
    print_table(times, extra)
