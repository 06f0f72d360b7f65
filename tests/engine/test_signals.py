"""Signals: SIGTERM handled like Ctrl-C while start() runs, and Ctrl-C at import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

WAIT = 30.0


def test_ctrl_c_while_importing_the_package_is_a_keyboard_interrupt_not_a_name_error():
    # a real SIGINT, sent at the moment importlib.metadata's own code starts executing
    # inside ``import thread_order``: the one window where its except clause was unbound
    script = textwrap.dedent("""
        import os, signal, sys
        for name in [m for m in sys.modules if m.startswith("importlib.metadata")]:
            del sys.modules[name]
        sent = []

        def tracer(frame, event, arg):
            if (not sent and event == "call"
                    and frame.f_code.co_filename.replace(os.sep, "/").endswith(
                        "importlib/metadata/__init__.py")):
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
            return None

        sys.settrace(tracer)
        try:
            import thread_order
        except KeyboardInterrupt:
            print("KeyboardInterrupt", bool(sent))
        except BaseException as exc:
            print(type(exc).__name__, bool(sent))
        else:
            print("imported", bool(sent))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
    assert done.stdout.split() == ["KeyboardInterrupt", "True"], done.stdout + done.stderr


# ------------------------------------------------------------------ SIGTERM to a real tdrun

import json
import os
import queue
import select
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from thread_order import EventKind, Scheduler, TaskStatus

from conftest import tdrun_env

MODULE = '''
import os
from thread_order import mark

READY, GATE = int(os.environ["READY_FD"]), int(os.environ["GATE_FD"])


@mark()
def create(state):
    print("creating")
    os.write(READY, b"r")
    if os.read(GATE, 1) != b"g":  # the test closed the pipe instead of releasing us
        raise RuntimeError("never released")
    return "created"


@mark()
def idle(state):
    return "idle ran"


@mark(after=["create"])
def use(state):
    return "used"


@mark(after=["use"], always=True)
def teardown(state):
    with open(os.environ["TEARDOWN_FILE"], "a", encoding="utf-8") as f:
        f.write("teardown ran\\n")
'''


class Tdrun:
    """``tdrun tasks.py --workers=1`` as a real process, its first task held on a pipe."""

    def __init__(self, tmp_path: Path) -> None:
        self.module = tmp_path / "tasks.py"
        self.module.write_text(MODULE, encoding="utf-8")
        self.teardown_file = tmp_path / "teardown.txt"
        self.history = tmp_path / "history.db"
        self.report = tmp_path / "report.json"
        ready_r, ready_w = os.pipe()
        gate_r, self.gate_w = os.pipe()
        self.ready_r = ready_r
        env = tdrun_env(TDRUN_HISTORY="on", READY_FD=str(ready_w), GATE_FD=str(gate_r),
                        TEARDOWN_FILE=str(self.teardown_file))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thread_order", str(self.module), "--workers=1", "--no-color",
             "--history", str(self.history), "--json-report", str(self.report)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env=env, pass_fds=(ready_w, gate_r),
        )
        os.close(ready_w)
        os.close(gate_r)
        self.err_lines: queue.Queue = queue.Queue()
        self.err_seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.err_lines.put(line.rstrip("\n"))
        self.err_lines.put(None)

    def wait_running(self) -> None:
        readable, _, _ = select.select([self.ready_r], [], [], WAIT)
        assert readable, "the first task did not start"
        assert os.read(self.ready_r, 1) == b"r"

    def expect_err(self, text: str) -> None:
        while True:
            try:
                line = self.err_lines.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"no stderr line with {text!r} within {WAIT}s; saw {self.err_seen}")
            assert line is not None, f"tdrun ended before {text!r}; stderr: {self.err_seen}"
            self.err_seen.append(line)
            if text in line:
                return

    def release(self) -> None:
        os.write(self.gate_w, b"g")

    def finish(self) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(WAIT)
            os.close(self.gate_w)
            os.close(self.ready_r)
        out = self.proc.stdout.read()
        rest = []
        while True:
            line = self.err_lines.get(timeout=WAIT)
            if line is None:
                break
            rest.append(line)
        return code, out, "\n".join(self.err_seen + rest)

    def statuses(self) -> dict[str, tuple[str, str | None]]:
        data = json.loads(self.report.read_text(encoding="utf-8"))
        return {t["name"]: (t["status"], t["reason"]) for t in data["tasks"]}

    def recorded(self) -> tuple:
        conn = sqlite3.connect(f"file:{self.history}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT status, passed, failed, skipped, cancelled FROM runs").fetchall()
        finally:
            conn.close()


FIRST = "interrupted: running tasks may finish"
AGAIN = "interrupted again: stopped waiting"


def test_sigterm_lets_the_running_task_finish_runs_teardown_and_exits_2(tmp_path):
    run = Tdrun(tmp_path)
    try:
        run.wait_running()
        run.proc.send_signal(signal.SIGTERM)
        run.expect_err(FIRST)
        run.release()
    finally:
        code, out, err = run.finish()
    assert code == 2, err
    assert run.teardown_file.read_text(encoding="utf-8") == "teardown ran\n"
    assert run.statuses() == {
        "create": ("PASSED", None),
        "idle": ("CANCELLED", "cancelled: the run was interrupted"),
        "use": ("CANCELLED", "cancelled: the run was interrupted"),
        "teardown": ("PASSED", None),
    }
    assert "2 passed, 0 failed, 0 skipped, 2 cancelled in " in out
    assert "Traceback" not in err
    assert run.recorded() == [("interrupted", 2, 0, 0, 2)]


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_sigterm_or_sigint_stops_waiting_and_still_exits_2_with_a_summary(tmp_path, second):
    run = Tdrun(tmp_path)
    try:
        run.wait_running()
        run.proc.send_signal(signal.SIGTERM)
        run.expect_err(FIRST)
        run.proc.send_signal(second)
        run.expect_err(AGAIN)
    finally:
        code, out, err = run.finish()  # create is never released: only the second signal ends the run
    assert code == 2, err
    assert not run.teardown_file.exists()
    assert run.statuses() == {
        "create": ("CANCELLED", "abandoned: still running when the run was stopped"),
        "idle": ("CANCELLED", "cancelled: the run was stopped"),  # queued behind create
        "use": ("CANCELLED", "cancelled: the run was stopped"),
        "teardown": ("CANCELLED", "cancelled: the run was stopped"),
    }
    assert "0 passed, 0 failed, 0 skipped, 4 cancelled in " in out
    assert "Traceback" not in err
    assert run.recorded() == [("interrupted", 0, 0, 0, 4)]


# ------------------------------------------------------------------ SIGTERM in process

needs_main = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="needs the main thread")


LIBRARY_RUN = """
import json, signal, threading
from thread_order import EventKind, Scheduler

main_id = threading.main_thread().ident
seen = threading.Event()
s = Scheduler(workers=1)
ran, interrupts = [], []
s.register(lambda: (signal.pthread_kill(main_id, signal.SIGTERM), seen.wait(20)), "create")
s.register(lambda: ran.append("use"), "use", after=["create"])
s.register(lambda: ran.append("teardown"), "teardown", after=["use"], always=True)
s.subscribe(lambda e: (interrupts.append(dict(e.data)), seen.set()), EventKind.RUN_INTERRUPTED)
summary = s.start()
print(json.dumps({
    "statuses": {n: t["status"] for n, t in summary["tasks"].items()},
    "interrupted": summary["interrupted"], "ran": ran, "interrupts": interrupts,
    "restored": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
}))
"""


def test_sigterm_under_the_default_disposition_is_the_first_ctrl_c_for_the_library():
    # in a process of its own: without the engine's handler, SIG_DFL kills whoever receives it
    done = subprocess.run([sys.executable, "-c", LIBRARY_RUN], capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert json.loads(done.stdout) == {
        "statuses": {"create": "PASSED", "use": "CANCELLED", "teardown": "PASSED"},
        "interrupted": True, "ran": ["teardown"], "interrupts": [{"force": False}], "restored": True,
    }


@needs_main
def test_someone_elses_sigterm_handler_is_set_aside_for_the_run_and_restored():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    before = signal.signal(signal.SIGTERM, previous)
    try:
        main_id = threading.main_thread().ident
        seen = threading.Event()
        s = Scheduler(workers=1)
        ran = []
        # create returns only once the run has heard of the signal, so use is decided after it
        s.register(lambda: (signal.pthread_kill(main_id, signal.SIGTERM), seen.wait(WAIT)), "create")
        s.register(lambda: ran.append("use"), "use", after=["create"])
        s.register(lambda: ran.append("teardown"), "teardown", after=["use"], always=True)
        s.subscribe(lambda e: seen.set(), EventKind.RUN_INTERRUPTED)
        summary = s.start()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == []
    assert summary["interrupted"] is True
    assert {n: t["status"] for n, t in summary["tasks"].items()} == {
        "create": TaskStatus.PASSED, "use": TaskStatus.CANCELLED, "teardown": TaskStatus.PASSED,
    }
    assert ran == ["teardown"]


@needs_main
def test_an_ignored_sigterm_stays_ignored_during_a_run():
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        main_id = threading.main_thread().ident
        s = Scheduler(workers=1)
        s.register(lambda: signal.pthread_kill(main_id, signal.SIGTERM), "create")
        s.register(lambda: "used", "use", after=["create"])
        summary = s.start()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
    assert summary["interrupted"] is False
    assert summary["passed"] == ["create", "use"]


def start_interrupted(s: Scheduler) -> dict:
    """``s.start()``, with SIGTERM raising KeyboardInterrupt meanwhile (a regression then fails
    the test rather than killing pytest with SIG_DFL); its summary."""
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return s.start()
    except KeyboardInterrupt:  # pragma: no cover - only when the engine lets Ctrl-C escape
        pytest.fail("KeyboardInterrupt escaped start()")
    finally:
        signal.signal(signal.SIGTERM, before)


@needs_main
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_the_kernel_hands_to_a_worker_thread_still_interrupts_at_once(signum):
    """Python runs handlers on the main thread only; a signal landing on a worker left the
    dispatcher asleep in its inbox until some task ended (never, for a stuck one)."""
    seen = threading.Event()
    s = Scheduler(workers=1)

    def stuck():
        signal.pthread_kill(threading.get_ident(), signum)  # delivered to this worker thread
        return "interrupted" if seen.wait(WAIT) else "never interrupted"

    s.register(stuck, "stuck")
    s.register(lambda: "t", "teardown", after=["stuck"], always=True)
    s.subscribe(lambda e: seen.set(), EventKind.RUN_INTERRUPTED)
    summary = start_interrupted(s)
    assert s.state["results"]["stuck"] == "interrupted"
    assert summary["interrupted"] is True


@needs_main
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_the_kernel_hands_to_the_event_loop_thread_still_interrupts_at_once(signum):
    """A signal landing on the event loop's thread of a run of coroutines still reaches the
    wakeup fd's reader, and the run is interrupted while the coroutine still waits (and
    nothing is left reading the fd afterwards)."""
    import asyncio

    threads_before = set(threading.enumerate())
    box: dict = {}
    s = Scheduler(workers=1)

    async def stuck():
        box["loop"], box["seen"] = asyncio.get_running_loop(), asyncio.Event()
        signal.pthread_kill(threading.get_ident(), signum)  # delivered to the loop's thread
        try:
            await asyncio.wait_for(box["seen"].wait(), WAIT)
        except asyncio.TimeoutError:
            return "never interrupted"
        return "interrupted"

    async def teardown():
        return "t"

    s.register(stuck, "stuck")
    s.register(teardown, "teardown", after=["stuck"], always=True)
    s.subscribe(lambda e: box["loop"].call_soon_threadsafe(box["seen"].set), EventKind.RUN_INTERRUPTED)
    summary = start_interrupted(s)
    assert s.state["results"]["stuck"] == "interrupted"
    assert summary["interrupted"] is True
    assert summary["passed"] == ["stuck", "teardown"]
    assert signal.set_wakeup_fd(-1) == -1  # the run gave the wakeup fd back
    for t in set(threading.enumerate()) - threads_before:
        t.join(WAIT)
        assert not t.is_alive(), f"thread {t.name!r} outlived its run"


@needs_main
@pytest.mark.parametrize("target", ["main", "loop"])
def test_a_signal_is_heard_while_a_coroutine_blocks_the_event_loop(target):
    """A coroutine stuck in a blocking call (what the blocked-loop warning is about) holds the
    run's event loop: a signal must still interrupt the run at once, which it cannot if the
    wakeup fd is read on that loop."""
    main_id = threading.main_thread().ident
    seen = threading.Event()
    s = Scheduler(workers=1, async_block_threshold=None)

    async def blocker():
        to = main_id if target == "main" else threading.get_ident()
        signal.pthread_kill(to, signal.SIGINT)
        # a sync wait on the loop's thread: nothing else runs on the loop until it returns
        return "interrupted" if seen.wait(WAIT) else "never interrupted"

    async def later():
        return "later"

    s.register(blocker, "blocker")
    s.register(later, "later", after=["blocker"])
    s.subscribe(lambda e: seen.set(), EventKind.RUN_INTERRUPTED)
    summary = start_interrupted(s)
    assert s.state["results"]["blocker"] == "interrupted"
    assert summary["interrupted"] is True
    assert summary["cancelled"] == ["later"]
