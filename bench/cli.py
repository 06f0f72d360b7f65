"""tdrun benchmark: plain lines vs the live view vs --progress on 10,000 no-op tasks, and collection time.

Each mode runs as a real ``tdrun`` process on a pseudo-terminal (100x30)
whose output a reader thread drains, as a terminal would; the modes take
turns, so they share the machine's conditions. The time compared is the run
itself (``duration`` from ``--json-report``: from the first task to the last),
not Python's start-up or the collection.
"""

from __future__ import annotations

import fcntl
import gc
import importlib.util
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from thread_order.engine.collect import collect

TASKS = 10_000
WORKERS = 8
MODES = [("plain", "--plain"), ("live view", "--viewer"), ("--progress", "--progress")]
TARGET_RATIO = 1.10
TARGET_COLLECT = 2.0  # collecting a module vs importing it with plain functions: collection adds at most the import
CASES = 1_000
TARGET_CASES = 1.10


def write_module(folder: Path, n: int = TASKS) -> Path:
    """A module of ``n`` marked no-op functions (every tenth depends on the one before)."""
    lines = ["from thread_order import dmark", ""]
    for i in range(n):
        after = f'after=["t{i - 1}"]' if i % 10 == 9 else ""
        lines += [f"@dmark({after})", f"def t{i}():", "    pass", ""]
    path = folder / "bench_tasks.py"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_on_pty(argv: list[str], rows: int = 30, cols: int = 100) -> tuple[int, int, float]:
    """Run ``argv`` with a pty as its terminal; returns (exit code, bytes written, wall seconds)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", TDRUN_HISTORY="off")
    written = 0
    done = threading.Event()

    def drain() -> None:
        nonlocal written
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if done.is_set():
                    return
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            written += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    code = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    reader.join(10)
    os.close(master)
    return code, written, wall


def in_process(path: Path, repeat: int) -> dict[str, float]:
    """The same run in this process, output to /dev/null: what each display costs the engine."""
    from thread_order import Scheduler
    from thread_order.cli.live import LiveView
    from thread_order.cli.plain import PlainReporter, make_console

    col = collect(str(path))
    times: dict[str, list[float]] = {"engine alone": [], "plain": [], "live view": [], "--progress": []}
    with open(os.devnull, "w") as null:
        for r in range(repeat):
            for label in (list(times) if r % 2 == 0 else list(times)[::-1]):
                sched = Scheduler(workers=WORKERS)
                col.register_into(sched)
                sched.graph
                console = make_console(null, force_terminal=label != "plain", width=100)
                if label == "plain":
                    display = PlainReporter(console, TASKS, WORKERS)
                elif label == "engine alone":
                    display = None
                else:
                    display = LiveView(console, mode="live" if label == "live view" else "progress",
                                       total=TASKS, lanes=WORKERS)
                gc.collect()
                if display is not None:
                    display.attach(sched, {})
                t0 = time.perf_counter()
                sched.start()
                times[label].append(time.perf_counter() - t0)
                if display is not None:
                    display.finish()
    return {label: statistics.median(v) for label, v in times.items()}


def write_plain_module(folder: Path, n: int = TASKS) -> Path:
    """The module of ``write_module`` with ``dmark`` a do-nothing decorator: the import alone."""
    source = write_module(folder, n).read_text(encoding="utf-8")
    path = folder / "bench_plain.py"
    path.write_text(source.replace("from thread_order import dmark",
                                   "def dmark(**options):\n    return lambda fn: fn"), encoding="utf-8")
    return path


def _import(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


CLOCK = time.process_time  # collection is single-threaded: its CPU time is its cost, whatever else runs


def time_collect(path: Path, plain: Path, repeat: int) -> tuple[float, float, float, float, float]:
    """Collecting the module of 10,000 marked functions against importing the same module with
    plain ones (importlib, as collection imports it), interleaved pairs in alternating order;
    both compiled from source each time, as a module's first run is. Returns (median ratio,
    min, max, median seconds collecting, median seconds importing)."""
    times: dict[str, list[float]] = {"collect": [], "import": []}
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no .pyc is written, so none is read: each side compiles
    try:
        for r in range(repeat):
            for side in (("collect", "import") if r % 2 == 0 else ("import", "collect")):
                gc.collect()
                t0 = CLOCK()
                if side == "collect":
                    col = collect(str(path))
                else:
                    _import(plain)
                times[side].append(CLOCK() - t0)
                if side == "collect" and len(col.specs) != TASKS:
                    raise SystemExit(f"collected {len(col.specs)} tasks, expected {TASKS}")
    finally:
        sys.dont_write_bytecode = dont_write
    ratios = [c / i for c, i in zip(times["collect"], times["import"])]
    return (statistics.median(ratios), min(ratios), max(ratios), statistics.median(times["collect"]),
            statistics.median(times["import"]))


def _noop(i=None):
    pass


def _cases_param() -> None:
    from thread_order import Scheduler

    sched = Scheduler(workers=WORKERS)
    sched.register(_noop, "t", params={"i": list(range(CASES))})
    if len(sched.start()["passed"]) != CASES:
        raise SystemExit("the parametrized run lost cases")


def _cases_by_hand() -> None:
    """What params= replaces: the same cases, each bound to its value and registered by hand."""
    from functools import partial

    from thread_order import Scheduler

    sched = Scheduler(workers=WORKERS)
    for i in range(CASES):
        sched.register(partial(_noop, i=i), f"t[{i}]")
    if len(sched.start()["passed"]) != CASES:
        raise SystemExit("the hand-registered run lost tasks")


def _no_values() -> None:
    """1,000 no-ops that take no value at all: the floor, for information."""
    from thread_order import Scheduler

    sched = Scheduler(workers=WORKERS)
    for i in range(CASES):
        sched.register(_noop, f"t[{i}]")
    if len(sched.start()["passed"]) != CASES:
        raise SystemExit("the no-value run lost tasks")


def write_cases_modules(folder: Path) -> tuple[Path, Path]:
    """A module of one parametrized no-op of CASES values, and one of CASES marked no-ops."""
    param = folder / "bench_cases.py"
    param.write_text("from thread_order import dmark\n\n"
                     f"@dmark(params={{'i': list(range({CASES}))}})\ndef t(i):\n    pass\n")
    lines = ["from thread_order import dmark", ""]
    for i in range(CASES):
        lines += ["@dmark()", f"def t{i}():", "    pass", ""]
    hand = folder / "bench_hand.py"
    hand.write_text("\n".join(lines), encoding="utf-8")
    return param, hand


def time_cases(folder: Path, repeat: int) -> dict[str, tuple[float, float, float]]:
    """Median ratio (min, max) of 1,000 parametrized cases against 1,000 tasks registered one by
    one, each timed from nothing to the end of the run, the two taking turns: through the
    library (``register(params=)``), and through tdrun's collection of a module."""
    from thread_order import Scheduler

    param_mod, hand_mod = write_cases_modules(folder)

    def collected(path: Path) -> None:
        sched = Scheduler(workers=WORKERS)
        collect(str(path)).register_into(sched)
        if len(sched.start()["passed"]) != CASES:
            raise SystemExit(f"{path.name} lost tasks")

    out = {}
    for label, param, hand in (("library", _cases_param, _cases_by_hand),
                               ("floor", _cases_param, _no_values),
                               ("module", lambda: collected(param_mod), lambda: collected(hand_mod))):
        times: dict[str, list[float]] = {"param": [], "hand": []}
        for r in range(repeat):
            for name, fn in (("param", param), ("hand", hand))[:: 1 if r % 2 == 0 else -1]:
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        ratios = [p / h for p, h in zip(times["param"], times["hand"])]
        out[label] = (statistics.median(times["param"]) / statistics.median(times["hand"]),
                      min(ratios), max(ratios), statistics.median(times["param"]),
                      statistics.median(times["hand"]))
    return out


def main(quick: bool = False):
    repeat = 2 if quick else 7
    rows = []
    with tempfile.TemporaryDirectory(prefix="tdrun-bench-") as tmp:
        folder = Path(tmp)
        module = write_module(folder)
        collect_s = time_collect(module, write_plain_module(folder), 3 if quick else 9)
        cases = time_cases(folder, 5 if quick else 41)
        inproc = in_process(module, repeat)
        runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label, _ in MODES}
        for r in range(repeat):
            order = MODES if r % 2 == 0 else MODES[::-1]  # alternate, so no mode always goes first
            for label, flag in order:
                report = folder / "r.json"
                argv = [sys.executable, "-m", "thread_order", str(module), flag,
                        "--workers", str(WORKERS), "--json-report", str(report)]
                code, written, wall = run_on_pty(argv)
                if code != 0:
                    raise SystemExit(f"tdrun {flag} exited {code}")
                data = json.loads(report.read_text())
                if data["counts"]["passed"] != TASKS:
                    raise SystemExit(f"tdrun {flag} lost tasks: {data['summary']}")
                runs[label].append((data["duration"], wall, written))
        base = statistics.median(d for d, _, _ in runs["plain"])
        for label, _ in MODES:
            durations = [d for d, _, _ in runs[label]]
            run_s = statistics.median(durations)
            wall = statistics.median(w for _, w, _ in runs[label])
            out = statistics.median(b for _, _, b in runs[label])
            rows.append((label, run_s, min(durations), wall, out, run_s / base))
    return rows, {"collect": collect_s, "repeat": repeat, "in_process": inproc, "cases": cases}


def print_table(rows, extra) -> bool:
    print(f"tdrun: {TASKS:,} no-op tasks, {WORKERS} workers, on a 100x30 pseudo-terminal "
          f"(median of {extra['repeat']} runs per mode, modes interleaved)")
    print(f"{'mode':<12} {'run':>9} {'best':>9} {'process':>9} {'output':>10} {'vs plain':>9} {'target':>7}  ok")
    ok_all = True
    for label, run_s, best, wall, out, ratio in rows:
        target = "" if label == "plain" else f"{TARGET_RATIO:.2f}x"
        ok = label == "plain" or ratio <= TARGET_RATIO
        ok_all &= ok
        print(f"{label:<12} {run_s:>8.3f}s {best:>8.3f}s {wall:>8.3f}s {out / 1024:>8.0f}KB "
              f"{ratio:>8.2f}x {target:>7}  {'yes' if ok else 'NO'}")
    inproc = extra["in_process"]
    base, plain = inproc["engine alone"], inproc["plain"]
    print("the same run in this process, output to /dev/null (what the displays' subscribers cost the engine):")
    for label, t in inproc.items():
        vs_plain = f"  ({t / plain:.2f}x plain)" if label not in ("engine alone", "plain") else ""
        print(f"  {label:<12} {t:>8.3f}s {t / base:>6.2f}x engine alone{vs_plain}")
    ratio, low, high, collect_s, import_s = extra["collect"]
    collect_ok = ratio <= TARGET_COLLECT
    ok_all &= collect_ok
    print(f"collecting a module of {TASKS:,} @dmark functions vs importing it with plain ones "
          "(median of interleaved pairs, min-max):")
    print(f"  {'collect vs import':<60} {collect_s * 1000:>7.1f}ms {import_s * 1000:>7.1f}ms {ratio:>6.2f}x "
          f"({low:.2f}-{high:.2f}) {f'<= {TARGET_COLLECT:.2f}x':>8}  {'yes' if collect_ok else 'NO'}")
    print(f"  {'what collection adds per task':<60} {(collect_s - import_s) / TASKS * 1e6:>7.1f}us "
          f"{'':>9} {'':>6} {'':>11} {'info':>8}")
    print(f"{CASES:,} cases of one parametrized no-op vs {CASES:,} hand-registered tasks, from nothing to "
          "the end of the run (median of interleaved repeats, min-max of the per-pair ratios):")
    whats = {"library": "register(params=) vs register(partial(fn, i=i)) x1,000",
             "floor": "register(params=) vs register(no-op taking no value) x1,000",
             "module": "tdrun's collection: one @dmark(params=) vs 1,000 @dmark"}
    for label, (ratio, low, high, p, h) in extra["cases"].items():
        what = whats[label]
        ok = ratio <= TARGET_CASES if label == "library" else True
        ok_all &= ok
        target = f"<= {TARGET_CASES:.2f}x" if label == "library" else "info"
        print(f"  {what:<60} {p * 1000:>7.1f}ms {h * 1000:>7.1f}ms {ratio:>6.2f}x "
              f"({low:.2f}-{high:.2f}) {target:>8}  {'yes' if ok else 'NO'}")
    return ok_all


if __name__ == "__main__":
    rows, extra = main(quick="--quick" in sys.argv)
    print_table(rows, extra)
