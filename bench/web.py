"""Web UI benchmark: a 10,000-task run streamed to a connected client vs the same run unwatched.

The server is ``tdrun ui``'s own (uvicorn in this process, the run on its own
thread); the client is a separate process reading the server-sent events the
way a browser's EventSource does. Every task waits behind one gate task, which
is released once the run is set up and (when watched) the client has its
snapshot; the run is timed from the gate's release to its last task, so
setting up and connecting are not counted. History is off
here: bench/history.py measures the recorder.
"""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from thread_order import Scheduler  # noqa: E402
from thread_order.engine.collect import collect  # noqa: E402

WORKERS = 8
TASKS = 10_000

CLIENT = r"""
import json, sys, httpx
url, token = sys.argv[1], sys.argv[2]
batches = changes = 0
with httpx.Client(timeout=60) as http:
    with http.stream("GET", url + "/api/runs/current/events", headers={"X-Tdrun-Token": token}) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if kind == "snapshot":
                    print("connected", flush=True)
                else:
                    batches += 1
                    changes += sum(len(names) for names in data["changes"].values())
print(batches, changes, flush=True)
"""


def write_module(folder: Path, n: int = TASKS, seed: int = 7) -> Path:
    """``n`` no-op tasks in 20 layers behind one ``gate`` task the bench opens."""
    rng = random.Random(seed)
    per = n // 20
    lines = ["import threading, time", "from thread_order import dmark", "",
             "ENTERED, GATE = threading.Event(), threading.Event()", "RELEASED = []", "",
             "@dmark()", "def gate():", "    ENTERED.set()", "    GATE.wait(60)",
             "    RELEASED.append(time.time())", ""]
    for i in range(n):
        layer = i // per
        if layer == 0:
            deps = ["gate"]
        else:
            lo, hi = max(0, (layer - 3) * per), layer * per
            deps = sorted({f"t{rng.randrange(lo, hi)}" for _ in range(3)})
        lines += [f"@dmark(after={deps!r})", f"def t{i}():", "    pass", ""]
    path = folder / "bench_web_tasks.py"
    path.write_text("\n".join(lines))
    return path


def _cpu_clock(thread: threading.Thread):
    """A reader of ``thread``'s CPU time, where the platform has one (Linux, macOS)."""
    if not hasattr(time, "pthread_getcpuclockid"):
        return None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


def run_in_ui(ui, url: str, watched: bool, loop_cpu=None) -> tuple[float, tuple | None]:
    """One run through the UI's own machinery.

    Returns (seconds, None) unwatched, or (seconds, (batches, changes, loop_cpu_seconds)).
    """
    module = ui.workspace.loaded()[1].module
    module.GATE.clear()
    module.ENTERED.clear()
    module.RELEASED.clear()
    gc.collect()
    live = ui.runs.start(ui.workspace, {"workers": WORKERS})
    if not module.ENTERED.wait(60):  # the run is set up and waiting at the gate
        raise SystemExit("the benchmarked run did not start")
    client = None
    if watched:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, url, ui.token],
                                  stdout=subprocess.PIPE, text=True)
        if client.stdout.readline().strip() != "connected":
            raise SystemExit("the benchmark client did not connect")
    cpu0 = loop_cpu() if loop_cpu else 0.0
    module.GATE.set()
    if not ui.runs.join(120):
        raise SystemExit("the benchmarked run did not finish")
    stats = None
    if client is not None:
        batches, changes = client.communicate(timeout=60)[0].split()
        cpu = (loop_cpu() - cpu0) if loop_cpu else float("nan")
        stats = (int(batches), int(changes), cpu)
    snap = live.snapshot()
    if snap["counts"]["PASSED"] != TASKS + 1:
        raise SystemExit(f"benchmark run lost tasks: {snap['counts']}")
    return live.summary["finished_at"] - module.RELEASED[0], stats


def bare_run(ui, path: Path) -> float:
    """The same DAG run by a bare Scheduler, no UI, gate open from the start."""
    coll = collect(str(path), module=ui.workspace.loaded()[1].module)
    coll.module.GATE.set()
    coll.module.RELEASED.clear()
    sched = Scheduler(workers=WORKERS, capture=True)
    coll.register_into(sched)
    sched.graph
    gc.collect()
    summary = sched.start()
    return summary["finished_at"] - coll.module.RELEASED[0]


def main(quick: bool = False):
    from thread_order.web.server import _bind, build_server
    from thread_order.web.api import UiServer
    from thread_order.web.security import new_token

    repeat = 3 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        path = write_module(Path(tmp))
        ui = UiServer(token=new_token(), history_path=None)
        ui.load(str(path))
        sock = _bind("127.0.0.1", 0)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = threading.Event()
        server = build_server(ui, sock, started.set)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        if not started.wait(10):
            raise SystemExit("the UI server did not start")
        loop_cpu = _cpu_clock(thread)
        try:
            unwatched, watched, bare, stats = [], [], [], []
            for i in range(repeat):  # interleaved, in alternating order: drift hits both alike
                for watch in ((False, True) if i % 2 else (True, False)):
                    seconds, seen = run_in_ui(ui, url, watch, loop_cpu)
                    (watched if watch else unwatched).append(seconds)
                    if seen:
                        stats.append(seen)
                bare.append(bare_run(ui, path))
        finally:
            server.should_exit = True
            thread.join(30)
            sock.close()
    # best of N, as bench/engine.py does: other load on the machine only ever adds time
    rows = [
        (f"{TASKS:,} tasks: SSE client streaming vs none", min(unwatched), min(watched),
         min(watched) / min(unwatched), 1.15),
        (f"{TASKS:,} tasks: UI run (no client) vs bare Scheduler", min(bare), min(unwatched),
         min(unwatched) / min(bare), None),
    ]
    cpu = sorted(s[2] for s in stats)[len(stats) // 2]
    return rows, {"batches": stats[-1][0], "changes": stats[-1][1], "loop_cpu": cpu, "repeat": repeat}


def print_table(rows, extra):
    print(f"Web UI: a run watched over server-sent events vs unwatched, {WORKERS} workers "
          f"(best of {extra['repeat']})")
    print(f"{'case':<52} {'base':>9} {'ours':>9} {'ratio':>7} {'target':>7}  ok")
    ok_all = True
    for label, base, ours, ratio, target in rows:
        ok = target is None or ratio <= target
        ok_all &= ok
        shown = f"{target:>6.2f}x" if target is not None else f"{'info':>7}"
        print(f"{label:<52} {base:>8.3f}s {ours:>8.3f}s {ratio:>6.2f}x {shown}  "
              f"{'yes' if ok else 'NO'}")
    print(f"the client received {extra['batches']} batches carrying {extra['changes']:,} "
          "coalesced status changes")
    print(f"the server's event loop spent {extra['loop_cpu'] * 1000:.1f} ms of CPU streaming a "
          "watched run (median)")
    return ok_all


if __name__ == "__main__":
    rows, extra = main(quick="--quick" in sys.argv)
    print_table(rows, extra)
